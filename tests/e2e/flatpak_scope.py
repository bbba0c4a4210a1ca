"""flatpak's flatpak_run_in_transient_unit(), call for call, through GDBus (python3-gi):
stat /run/user/UID/systemd/private, a peer-to-peer connection to it (SASL EXTERNAL, no
Hello), a Manager proxy that loads no properties, StartTransientUnit("app-flatpak-APPID-
PID.scope", "fail", [("PIDs", [getpid()])], []), then, connected to JobRemoved only after
the call returned (flatpak never calls Subscribe: systemd sends signals to direct
connections unconditionally), a main loop until that job is removed.

Usage (Debian's /usr/bin/python3): flatpak_scope.py APPID [SOCKET]; SOCKET defaults to
flatpak's /run/user/UID/systemd/private. Prints one JSON line: the unit, the job, its result
and this process's cgroup afterwards; exit 1 on an error (printed in the same line).
"""

import json
import os
import sys

from gi.repository import Gio, GLib


def main() -> int:
    app_id = sys.argv[1]
    path = sys.argv[2] if len(sys.argv) > 2 else f"/run/user/{os.getuid()}/systemd/private"
    if not os.path.exists(path):
        print(json.dumps({"error": "No systemd user session available, cgroups not available"}))
        return 1
    loop = GLib.MainLoop()
    try:
        conn = Gio.DBusConnection.new_for_address_sync(
            "unix:path=" + path, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT, None, None
        )
        manager = Gio.DBusProxy.new_sync(
            conn,
            Gio.DBusProxyFlags.DO_NOT_LOAD_PROPERTIES,
            None,
            None,
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            None,
        )
        name = f"app-flatpak-{app_id}-{os.getpid()}.scope"
        props = GLib.Variant(
            "(ssa(sv)a(sa(sv)))", (name, "fail", [("PIDs", GLib.Variant("au", [os.getpid()]))], [])
        )
        (job,) = manager.call_sync(
            "StartTransientUnit", props, Gio.DBusCallFlags.NONE, -1, None
        ).unpack()
    except GLib.Error as e:
        print(json.dumps({"error": e.message}))
        return 1
    seen = {}

    def on_signal(_proxy, _sender, signal, params):
        if signal == "JobRemoved":
            _id, removed, unit, result = params.unpack()
            if removed == job:
                seen.update(unit=unit, result=result)
                loop.quit()

    manager.connect("g-signal", on_signal)
    GLib.timeout_add_seconds(30, loop.quit)
    loop.run()
    with open("/proc/self/cgroup") as f:
        cgroup = next((x.strip()[3:] for x in f if x.startswith("0::")), "")
    print(json.dumps({"unit": name, "job": job, "removed": seen, "cgroup": cgroup}))
    return 0 if seen.get("result") == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
