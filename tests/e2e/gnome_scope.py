"""gnome-desktop's gnome_start_systemd_scope() through Debian's library (python3-gi,
gir1.2-gnomedesktop-3.0), from a process inside the user manager's tree (run it under
`systemd-run --user --scope`): a child `sleep` is moved into app-gnome-NAME-PID.scope; then
libsystemd's sd_pid_get_user_unit() for the child and for this process.

Usage (Debian's /usr/bin/python3): gnome_scope.py NAME; prints one JSON line.
"""

import ctypes
import json
import os
import subprocess
import sys
import time

import gi

gi.require_version("GnomeDesktop", "3.0")
from gi.repository import GLib, GnomeDesktop  # noqa: E402


def user_unit(pid: int) -> str | None:
    lib = ctypes.CDLL("libsystemd.so.0")
    out = ctypes.c_char_p()
    if lib.sd_pid_get_user_unit(pid, ctypes.byref(out)) < 0 or out.value is None:
        return None
    return out.value.decode()


def cgroup(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return next((x.strip()[3:] for x in f if x.startswith("0::")), "")


def main() -> int:
    child = subprocess.Popen(["sleep", "300"])
    loop = GLib.MainLoop()
    outcome = {}

    def done(_source, result, _data):
        try:
            outcome["ok"] = GnomeDesktop.start_systemd_scope_finish(result)
        except GLib.Error as e:
            outcome["error"] = e.message
        loop.quit()

    GnomeDesktop.start_systemd_scope(sys.argv[1], child.pid, "A test app", None, None, done, None)
    GLib.timeout_add_seconds(30, loop.quit)
    loop.run()
    # the reply carries the job; the scope starts right after it (the job runs later)
    for _ in range(100):
        if "/app-gnome-" in cgroup(child.pid):
            break
        time.sleep(0.05)
    report = {
        **outcome,
        "child": child.pid,
        "child_cgroup": cgroup(child.pid),
        "child_user_unit": user_unit(child.pid),
        "self_user_unit": user_unit(os.getpid()),
    }
    child.kill()
    child.wait()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
