"""Inside tests/e2e/sandbox.sh: the installed, unmodified systemd-logind 252 against
`scopeshim serve --cassette` of a trace recorded from the real systemd 252 (no engine, no
cgroup is made): a session opened like pam_systemd does (the lab kit's pam-client.py, the
client of the recording), released and closed, then the user stopped after
UserStopDelaySec. Prints one JSON line per step; the cassette's exit report is in the last.

Usage: scenario_cassette_logind.py TRACE
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOGIND = "/lib/systemd/systemd-logind"
LOGIN_CLIENT = ROOT / "tests" / "e2e" / "login_client.py"
RUN = Path(os.environ.get("SCOPESHIM_E2E_RUN", "/tmp"))
# the lab's logind drop-in (shared/lab/README.md): what the recording ran with
LOGIND_CONF = """[Login]
NAutoVTs=0
ReserveVT=0
HandlePowerKey=ignore
HandleSuspendKey=ignore
HandleHibernateKey=ignore
HandleLidSwitch=ignore
HandleLidSwitchExternalPower=ignore
HandleLidSwitchDocked=ignore
IdleAction=ignore
UserStopDelaySec=2
"""


def report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def busctl(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["busctl", "--system", *args], capture_output=True, text=True, timeout=timeout
    )


def login1(*args: str) -> subprocess.CompletedProcess[str]:
    return busctl(
        "call", "org.freedesktop.login1", "/org/freedesktop/login1",
        "org.freedesktop.login1.Manager", *args,
    )  # fmt: skip


def wait_until(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def has_owner(name: str) -> bool:
    return busctl("status", name).returncode == 0


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def main() -> int:
    trace = sys.argv[1]
    cassette_log = open(RUN / "cassette.log", "wb")  # noqa: SIM115
    cassette = subprocess.Popen(
        [sys.executable, "-m", "shim", "serve", "--system", "--cassette", trace],
        cwd=ROOT, stdout=cassette_log, stderr=cassette_log,
    )  # fmt: skip
    if not wait_until(lambda: has_owner("org.freedesktop.systemd1"), 20):
        report(step="cassette", ok=False, exit=cassette.poll())
        return 1
    report(step="cassette", ok=True)
    conf = Path("/run/systemd/logind.conf.d")
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "scopeshim-cassette.conf").write_text(LOGIND_CONF)
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "debug", "SYSTEMD_LOG_TARGET": "console"}
    logind_log = open(RUN / "logind.log", "wb")  # noqa: SIM115
    logind = subprocess.Popen([LOGIND], stdout=logind_log, stderr=logind_log, env=env)
    ok = wait_until(lambda: has_owner("org.freedesktop.login1"), 20)
    report(step="logind", ok=ok)
    client = None
    try:
        if not ok:
            return 1
        # the project's own pam_systemd-like client (tests/e2e/login_client.py)
        client = subprocess.Popen(
            [sys.executable, str(LOGIN_CLIENT), "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert client.stdout is not None and client.stdin is not None
        first = client.stdout.readline().decode()
        info = json.loads(first) if first.startswith("{") else {}
        report(step="created", ok=bool(info.get("ok")), session=info.get("session"),
               error=info.get("error"), message=info.get("message") or first.strip())  # fmt: skip
        if not info.get("ok"):
            return 1
        sid = info["session"]
        listed = login1("ListSessions").stdout
        report(step="listed", ok=f'"{sid}"' in listed, sessions=listed.strip())
        time.sleep(0.5)
        client_out, _ = client.communicate(b"release\nexit\n", timeout=20)
        closed = [json.loads(x) for x in client_out.decode().splitlines() if x.startswith("{")]
        report(step="released", ok=client.returncode == 0, client=closed[-1] if closed else None)
        gone = wait_until(lambda: f'"{sid}"' not in login1("ListSessions").stdout, 15)
        report(step="session-gone", ok=gone)
        user_gone = wait_until(lambda: login1("ListUsers").stdout.startswith("a(uso) 0"), 20)
        report(step="user-gone", ok=user_gone, users=login1("ListUsers").stdout.strip())
        return 0 if gone and user_gone else 1
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait(5)
        report(step="logind-exit", exit=stop(logind))
        code = stop(cassette)
        cassette_log.close()
        logind_log.close()
        text = (RUN / "cassette.log").read_text(errors="replace")
        report(step="cassette-exit", exit=code, log=text[-6000:])


if __name__ == "__main__":
    raise SystemExit(main())
