"""A pre-imported parent that forks user managers: everything `serve --user` needs is
imported once, gc.freeze() keeps the collector off those pages, and each user manager is a
fork that drops to its user before it reads anything of that user (docs/user-manager.md).

Protocol (`scopeshim zygote`): READY=1 on standard output once imported; then, per user
manager, a JSON request line on standard input, {"argv": [...], "env": {...}, "uid": N,
"gid": N, "groups": [...], "cwd": DIR}, answered by {"pid": N, "stage": "forked"}: the fork
waits, still root and running nothing, until the next input line, "go" (the caller has moved
it into its cgroup; it drops to the user and runs `scopeshim ARGV`) or anything else (it is
killed); then {"pid": N, "ready": bool, "output": "..."} once it said READY=1 or exited.
End of input ends the zygote; its children live on.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import sys
from typing import Any

READY_TIMEOUT = 90.0


def preload() -> None:
    """Import what a user manager imports, so that forks share it."""
    import asyncio  # noqa: F401

    import backends.cgroup2
    import backends.detect
    import backends.fake  # noqa: F401
    import shim.bus.daemon
    import shim.bus.escalate
    import shim.bus.session
    import shim.core.instance  # noqa: F401


def _child(request: dict[str, Any], out_w: int, gate_r: int) -> None:
    """In the fork: wait for the go-ahead, become the user, then run `scopeshim ARGV` with
    the given environment."""
    from shim import cli

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    if os.read(gate_r, 1) != b"g":
        os._exit(1)
    os.close(gate_r)
    os.dup2(out_w, 1)
    os.close(out_w)
    uid, gid = request.get("uid"), request.get("gid")
    if uid is not None and os.getuid() == 0 and uid != 0:
        # drop privileges completely before anything of the user is read: supplementary
        # groups, then the group, then the user (setuid last, as credentials(7) requires)
        os.setgroups(list(request.get("groups", [])))
        os.setgid(int(gid if gid is not None else uid))
        os.setuid(int(uid))
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in request.get("env", {}).items()})
    os.chdir(str(request.get("cwd", "/")))
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (fd 1 stays)
    code = 1
    try:
        code = cli.main([str(a) for a in request["argv"]])
    finally:
        sys.stdout.flush()
        os._exit(code)


def _wait_ready(pid: int, out_r: int) -> dict[str, Any]:
    output = b""
    ready = False
    while not ready:
        readable, _, _ = select.select([out_r], [], [], READY_TIMEOUT)
        if not readable:
            break
        chunk = os.read(out_r, 4096)
        if not chunk:
            break
        output += chunk
        ready = b"READY=1\n" in output
    os.close(out_r)
    text = output.decode(errors="replace").replace("READY=1\n", "")
    return {"pid": pid, "ready": ready, "output": text}


def serve_forever() -> int:
    preload()
    gc.collect()
    gc.freeze()  # what is imported now stays where it is: no collector writes to its pages
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    print("READY=1", flush=True)
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            print(json.dumps({"error": "bad request"}), flush=True)
            continue
        out_r, out_w = os.pipe()
        gate_r, gate_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(out_r)
            os.close(gate_w)
            sys.stdin.close()
            _child(request, out_w, gate_r)
        os.close(out_w)
        os.close(gate_r)
        print(json.dumps({"pid": pid, "stage": "forked"}), flush=True)
        go = sys.stdin.readline().strip() == "go"
        with contextlib.suppress(OSError):  # a fork that died already
            os.write(gate_w, b"g" if go else b"x")
        os.close(gate_w)
        if not go:
            os.close(out_r)
            print(json.dumps({"pid": pid, "ready": False, "output": "aborted"}), flush=True)
            continue
        print(json.dumps(_wait_ready(pid, out_r)), flush=True)
    return 0
