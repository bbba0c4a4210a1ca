"""Replaying captured D-Bus traces (`scopeshim replay`, `scopeshim serve --cassette`).

Pure: parsers of what `dbus-monitor` writes (text in the dbus 1.14 and the 2013 format,
`--pcap`, `--binary`), type recovery from the compat tables, normalisation, selection of the
conversation with org.freedesktop.systemd1, comparison and reports. The bus side (sending
calls, serving a cassette) lives in shim/bus/replay.py and shim/bus/cassette.py.

Nothing here is imported by the daemon's start-up.
"""
