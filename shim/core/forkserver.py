"""The system instance's end of `scopeshim zygote` (shim/zygote.py): one pre-imported parent,
started on first use, that forks user managers; each fork is moved into its cgroup before
it drops to its user and runs (docs/user-manager.md, "Memory")."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shim.core.spawn import SpawnError

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0
READY_TIMEOUT = 95.0  # the zygote gives up on a fork after 90 s (shim/zygote.py)


@dataclass(frozen=True, slots=True)
class Forked:
    """A user manager the zygote forked: ready, or its last words."""

    pid: int
    ready: bool
    output: str


class ForkServer:
    """Talks to one `scopeshim zygote`, one fork at a time."""

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self.command = tuple(command or (sys.executable, "-m", "shim", "zygote"))
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> asyncio.subprocess.Process:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            return proc
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
        except OSError as e:
            raise SpawnError(f"cannot start the zygote {self.command[0]}: {e.strerror}") from None
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            line = b""
        if line.strip() != b"READY=1":
            proc.kill()
            await proc.wait()
            raise SpawnError("the zygote did not start")
        log.info("zygote started (PID %d)", proc.pid)
        self._proc = proc
        return proc

    async def _answer(self, proc: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise SpawnError("the zygote exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def fork(self, request: dict[str, Any], place: Callable[[int], None]) -> Forked:
        """Fork a user manager for REQUEST; PLACE(pid) moves the waiting fork into its cgroup
        (raising SpawnError or BackendError refuses it: the fork is killed)."""
        async with self._lock:
            proc = await self._started()
            assert proc.stdin is not None
            try:
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                await proc.stdin.drain()
                forked = await self._answer(proc, START_TIMEOUT)
                pid = int(forked["pid"])
                go = True
                try:
                    place(pid)
                except Exception:
                    go = False
                    raise
                finally:
                    proc.stdin.write(b"go\n" if go else b"abort\n")
                    await proc.stdin.drain()
                    if not go:
                        await self._answer(proc, START_TIMEOUT)
                answer = await self._answer(proc, READY_TIMEOUT)
            except (OSError, TimeoutError, ValueError, KeyError) as e:
                self.close()
                raise SpawnError(f"the zygote failed: {e!r}") from None
        return Forked(pid, bool(answer.get("ready")), str(answer.get("output", "")))

    async def aclose(self) -> None:
        """End the zygote and wait for it (its children, the user managers, live on)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.communicate(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def close(self) -> None:
        """End the zygote (its children, the user managers, live on)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None and proc.stdin is not None:
            proc.stdin.close()
