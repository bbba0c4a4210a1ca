"""scopeshim: systemd's org.freedesktop.systemd1 D-Bus API on machines whose init is not systemd."""

__version__ = "0.1.0"
