"""Cheap processes to put into scopes: forks idle children on request.

Protocol (stdin/stdout, one line each): "N" -> N new children are forked, their PIDs are
printed space-separated on one line. EOF -> every child still alive is killed (they all
share this process's own process group, which cannot be reused while one of them lives),
then exit. A child only waits for a signal (default dispositions), so SIGTERM ends it as it
would end any session process. SIGCHLD is ignored here, so the kernel reaps the children
itself (no handler that 10,000 exits at once could re-enter). Forking from this small
process keeps each child to a few private pages, so 10,000 live scopes fit easily.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def child() -> None:
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(OSError):
        os.closerange(0, 3)
    while True:
        signal.pause()


def main() -> None:
    os.setpgid(0, 0)  # our own group: the children's, for the final kill
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    for line in sys.stdin:
        n = int(line.strip() or "0")
        pids = []
        for _ in range(n):
            pid = os.fork()
            if pid == 0:
                try:
                    child()
                finally:
                    os._exit(0)
            pids.append(pid)
        sys.stdout.write(" ".join(map(str, pids)) + "\n")
        sys.stdout.flush()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.killpg(0, signal.SIGKILL)  # the children left, then this process


if __name__ == "__main__":
    main()
