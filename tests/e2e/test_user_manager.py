"""The per-user manager in the sandbox with the unmodified logind: a login starts
user@UID.service, which runs scopeshim's user manager as the user in its init.scope with
the user's session bus; the unmodified systemctl --user, dbus-update-activation-environment
--systemd and systemd-run --user --scope work; the logout leaves nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import oci_bundle
from tests.e2e.test_logind import VERSIONS, explain, fetch_logind, run_scenario


def _last_json(text: str) -> dict[str, Any]:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


# each logind with user managers started as commands; the default launch (forked from the
# zygote) with logind 252
CASES = [(v, "exec") for v in VERSIONS] + [("252", "zygote")]
# with these logind builds, the systemctl --user and systemd-run --user of the same build too
NEWER_CLIENTS = ("257", "262")


@pytest.mark.timeout(400)
@pytest.mark.parametrize(("version", "launch"), CASES, ids=["-".join(c) for c in CASES])
def test_user_manager_lifecycle(request: pytest.FixtureRequest, version: str, launch: str) -> None:
    request.node.user_properties.append(
        ("case", f"logind {version}  unprivileged  user-manager ({launch})")
    )
    for tool in ("systemctl", "systemd-run", "dbus-daemon", "dbus-update-activation-environment"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make deps installs it)")
    probe = subprocess.run(["/usr/bin/python3", "-c", "import gi"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("python3-gi is not installed (make deps installs it)")
    extra = ["--zygote"] if launch == "zygote" else []
    busybox = oci_bundle.have_busybox()
    runtimes = [r for r in ("runc", "crun") if busybox and shutil.which(r)]
    for runtime in runtimes:
        extra += ["--rootless", runtime]
    rootless = "runc" in runtimes
    podman = all(shutil.which(t) for t in ("podman", "newuidmap", "newgidmap"))
    if rootless and podman:
        extra.append("--podman")
    else:
        request.node.user_properties.append(("podman", "not run: podman or uidmap missing"))
    if version in NEWER_CLIENTS:
        # the systemctl and systemd-run of the same build as this logind, as the user
        logind, _ = fetch_logind(version)
        if logind is not None:
            extra += ["--clients", str(Path(logind).parent / "bin")]
    outcome = run_scenario("scenario_user_manager.py", version, *extra, timeout=200)
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    events = outcome.steps
    why = explain(events) + "\n" + outcome.stderr
    assert outcome.returncode == 0, why
    uid = events["setup"]["uid"]
    tree = f"/user.slice/user-{uid}.slice/user@{uid}.service"

    # login: user@UID.service is running; the manager and the session bus run as the user
    login = events["login"]
    assert login["created"]["ok"] is True, why
    assert login["user_unit"]["SubState"] == "running", why
    cgroups = {p["cgroup"]: p["cmdline"] for p in login["processes"].values()}
    # exec: the command line says what it is; zygote: a fork of `scopeshim zygote`
    expected = "serve --user" if launch == "exec" else "shim zygote"
    assert expected in cgroups[tree + "/init.scope"], why
    assert "dbus-daemon --session" in cgroups[tree + "/session.slice/dbus.service"], why
    assert login["bus_socket"] and login["private_dir"], why

    # systemctl --user: the user's own tree only
    ctl = events["systemctl"]
    for name in ("status", "list_units", "show", "show_environment", "set_environment",
                 "activation", "after", "dbus_status"):  # fmt: skip
        assert ctl[name]["status"] == 0, why
    assert f"CGroup: {tree}" in ctl["status"]["stdout"], why
    listed = {line.split()[0] for line in ctl["list_units"]["stdout"].splitlines()}
    assert listed == {"-.slice", "init.scope", "session.slice", "dbus.service"}, why
    assert f"ControlGroup={tree}" in ctl["show"]["stdout"].splitlines(), why
    assert "Version=252" in ctl["show"]["stdout"].splitlines(), why
    env = ctl["show_environment"]["stdout"].splitlines()
    assert f"XDG_RUNTIME_DIR=/run/user/{uid}" in env, why
    assert f"DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus" in env, why
    assert "ignoring --systemd" not in ctl["activation"]["stderr"], why
    assert {"E2E=yes", "ACTIVATED=1"} <= set(ctl["after"]["stdout"].splitlines()), why

    # systemd-run --user --scope: the process lands in user@UID.service/app.slice/run-*.scope
    run = events["systemd-run"]["scope"]
    assert run["status"] == 0, why
    assert re.search(rf"^0::{re.escape(tree)}/app\.slice/run-e2e\.scope$", run["stdout"], re.M), why
    assert run["stdout"].split()[-1] == "10", why  # TasksMax as the user manager has it

    if version in NEWER_CLIENTS:
        newer_clients(events["clients-new"], version, tree, why)

    # rootless runc and crun --systemd-cgroup as the user: a scope of the user manager, under
    # user@UID.service (runc reads the manager's ControlGroup), root inside mapped to the user
    for runtime in runtimes:
        oci = events[f"rootless-{runtime}"]
        assert oci["status"] == 0, why
        out = oci["stdout"].splitlines()
        # crun (1.8) puts the container's processes into a "container" child of the
        # delegated scope; runc into the scope itself
        inner = "/container" if runtime == "crun" else ""
        assert f"0::{tree}/app.slice/{runtime}-rootless-e2e.scope{inner}" in out, why
        assert out[-1] == "0" and oci["scope_left"] is False, why

    # rootless podman --cgroup-manager=systemd: subordinate ids through newuidmap, the
    # container in a scope of the user manager in its user.slice (podman's parent for
    # rootless), no "no systemd user session available" fallback, nothing left after --rm
    if rootless and podman:
        pod = events["podman"]
        maps = [line.split() for line in pod["unshare"]["stdout"].splitlines()]
        assert pod["unshare"]["status"] == 0 and maps == [
            ["0", str(uid), "1"],
            ["1", "100000", "65536"],
        ], why
        assert pod["import"]["status"] == 0, why
        for runtime in runtimes:  # podman --runtime runc, then crun
            run_ = pod[f"run-{runtime}"]
            assert run_["status"] == 0, why
            out = run_["stdout"].splitlines()
            inner = "/container" if runtime == "crun" else ""
            scope = rf"{re.escape(tree)}/user\.slice/libpod-[0-9a-f]{{64}}\.scope"
            assert re.fullmatch(rf"0::{scope}{inner}", out[-2]), why
            assert out[-1] == "0", why
            assert "no systemd user session" not in run_["stderr"], why
        assert pod["scopes_left"] == [], why

    # SIGKILL of the user manager with a scope running: started again in init.scope, the
    # scope taken back, its process never moved
    killed = events["sigkill"]
    assert killed["new_manager"] and killed["new_manager"] not in killed["killed"], why
    assert killed["keeper_cgroup"] == str(killed["keeper_pid"]), why
    assert killed["show"]["stdout"].strip() == "active", why
    assert killed["user_unit"]["SubState"] == "running", why

    # flatpak's exact calls over /run/user/UID/systemd/private: app.slice/app-flatpak-*.scope
    clients = events["clients"]
    flatpak = _last_json(clients["flatpak"]["stdout"])
    assert clients["flatpak"]["status"] == 0, why
    assert flatpak["removed"]["result"] == "done", why
    assert flatpak["cgroup"] == f"{tree}/app.slice/{flatpak['unit']}", why
    # gnome_start_systemd_scope from inside the tree: the child in app-gnome-NAME-PID.scope,
    # and libsystemd's sd_pid_get_user_unit() names it
    if clients["gnome_available"]:
        gnome = _last_json(clients["gnome"]["stdout"])
        unit = f"app-gnome-org.example.Gnome-{gnome['child']}.scope"
        assert gnome["ok"] is True, why
        assert gnome["child_cgroup"] == f"{tree}/app.slice/{unit}", why
        assert gnome["child_user_unit"] == unit, why
        assert gnome["self_user_unit"] == "run-gnome.scope", why

    # a second session of the same user: the same user manager serves it; the first
    # session's logout leaves user@UID.service and its manager running, untouched
    second = events["second-session"]
    assert second["created"]["ok"] is True, why
    assert second["created"]["session"] != login["created"]["session"], why
    assert second["user_unit"]["SubState"] == "running", why
    assert second["manager_before"], why
    assert second["manager_with_two"] == second["manager_before"], why
    assert second["first_removed"] is True, why
    assert second["manager_after"] == second["manager_before"], why
    assert second["user_states"] in ([], ["active/running"]), why
    assert second["user_unit_after"]["SubState"] == "running", why
    assert second["show_environment"]["status"] == 0, why

    # logout of the last one: logind stops user@UID.service; nothing of the user is left
    out = events["logout"]
    assert out["user_unit_removed"] is True, why
    assert out["processes_left"] == {}, why
    assert out["user_cgroup_left"] is False and out["slice_cgroup_left"] is False, why
    assert out["runtime_dir_mounted"] is False, why

    # linger on: logind starts user@UID.service with no login, and it serves; off: it goes
    linger = events["linger"]
    assert linger["enabled"]["status"] == 0 and linger["disabled"]["status"] == 0, why
    assert linger["user_unit"]["SubState"] == "running", why
    assert linger["show_environment"]["status"] == 0, why
    assert f"XDG_RUNTIME_DIR=/run/user/{uid}" in linger["show_environment"]["stdout"], why
    assert linger["user_unit_removed"] is True, why
    assert linger["processes_left"] == {} and linger["slice_cgroup_left"] is False, why
    assert events["stopped"]["exit"] == 0, why
    refused = events["logs"]["refused_calls"]
    if int(version) >= 258:
        # FIFO-less logind (258+) abandons the scope after its only process, the leader, has
        # exited: the scope is gone already, and systemd answers Abandon() with the same
        # ScopeNotRunning "Scope session-cN.scope is not running, cannot abandon."
        gone = " Abandon -> org.freedesktop.systemd1.ScopeNotRunning"
        refused = [x for x in refused if gone not in x]
    assert refused == [], why


def newer_clients(new: dict[str, Any], version: str, tree: str, why: str) -> None:
    """systemctl --user and systemd-run --user --scope -p of 257 or 262 against the user
    manager: the same answers as 252's, and kill, stop, import-environment."""
    assert new["version"].startswith(f"systemd {version} "), why
    for name in ("status", "list_units", "show", "import", "show_environment", "after"):
        assert new[name]["status"] == 0, why
    assert f"CGroup: {tree}" in new["status"]["stdout"], why
    listed = {line.split()[0] for line in new["list_units"]["stdout"].splitlines()}
    assert listed == {"-.slice", "init.scope", "session.slice", "app.slice", "dbus.service"}, why
    assert f"ControlGroup={tree}" in new["show"]["stdout"].splitlines(), why
    # import-environment NAME: the caller's value of NAME into the manager's environment
    assert "E2E_IMPORTED=from-login" in new["show_environment"]["stdout"].splitlines(), why

    # systemd-run --user --scope -p ...: in app.slice/run-new.scope, the limits as given
    scope = new["scope"]
    out = scope["stdout"].splitlines()
    assert scope["status"] == 0, why
    assert f"0::{tree}/app.slice/run-new.scope" in out, why
    assert {"TasksMax=12", "MemoryMax=33554432", "CPUWeight=50"} <= set(out), why
    # each limit in its file, or (the controller not on this cgroup2 tree, as on a hybrid
    # host whose v1 hierarchies hold it) the manager's note saying so
    for file, value in (("pids.max", "12"), ("memory.max", "33554432"), ("cpu.weight", "50")):
        controller = file.split(".")[0]
        missing = f"run-new.scope: controller {controller} is not available"
        landed = f"{file}:{value}" in out
        assert landed or any(missing in note for note in new["scope_notes"]), why

    # kill -s SIGTERM and stop of a running scope: its sleep ends by SIGTERM, the scope goes
    for verb in ("kill", "stop"):
        done = new[verb]
        assert done["status"] == 0 and done["procs_before"] == str(done["pid"]), why
        assert done["exit"] == -15 and done["cgroup_left"] is False, why
    after = {line.split()[0] for line in new["after"]["stdout"].splitlines()}
    assert not {"run-kill.scope", "run-stop.scope"} & after, why
