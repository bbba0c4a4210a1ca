"""A transient service's standard streams to and from files (systemd.exec(5) StandardInput=
file:, StandardOutput=/StandardError= file:, append:, truncate:, as systemd-run sends them:
StandardOutputFile=PATH and friends), with real processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from dbus_fast import Variant

from tests.bus.test_services import SERVICE, SH, STU, execstart, job_result, start
from tests.conftest import Client, Daemon

ONESHOT = ["Type", Variant("s", "oneshot")]
REMAIN = ["RemainAfterExit", Variant("b", True)]


def path_prop(name: str, path: Path | str) -> list[object]:
    return [name, Variant("s", str(path))]


async def test_input_append_and_truncate(client: Client, tmp_path: Path) -> None:
    source, out, err = tmp_path / "in", tmp_path / "out", tmp_path / "err"
    source.write_text("from the file\n")
    out.write_text("old\n")
    err.write_text("garbage that goes\n")
    job = await start(
        client, "streams.service", execstart(SH, "-c", "cat; echo out; echo err >&2"),
        ONESHOT, REMAIN,
        path_prop("StandardInputFile", source),
        path_prop("StandardOutputFileToAppend", out),
        path_prop("StandardErrorFileToTruncate", err),
    )  # fmt: skip
    assert await job_result(client, job) == "done"
    assert out.read_text() == "old\nfrom the file\nout\n"
    assert err.read_text() == "err\n"
    (path,) = await client.ok("GetUnit", "s", ["streams.service"])
    # each stream reads as its kind (systemd 252 in the lab: file, append, truncate)
    got = [await client.get(path, SERVICE, f"Standard{s}") for s in ("Input", "Output", "Error")]
    assert got == ["file", "append", "truncate"]


async def test_file_writes_from_the_start_and_stderr_follows(
    client: Client, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.write_text("XXXXXXXX\n")
    job = await start(client, "file.service", execstart(SH, "-c", "printf a; printf b >&2"),
                      ONESHOT, REMAIN, path_prop("StandardOutputFile", out))  # fmt: skip
    assert await job_result(client, job) == "done"
    # file: is not truncated; StandardError= unset follows standard output (inherit)
    assert out.read_text() == "abXXXXXX\n"


async def test_an_output_that_cannot_be_opened_fails_the_start(
    client: Client, tmp_path: Path
) -> None:
    job = await start(client, "noopen.service", execstart(SH, "-c", "true"), ONESHOT,
                      path_prop("StandardOutputFile", tmp_path / "missing" / "out"),
                      ["AddRef", Variant("b", True)])  # fmt: skip
    assert await job_result(client, job) == "failed"
    (path,) = await client.ok("GetUnit", "s", ["noopen.service"])
    assert await client.get(path, SERVICE, "Result") == "exit-code"
    # systemd.exec(5): 209/STDOUT; a simple service likewise, a missing input 208/STDIN
    assert await client.get(path, SERVICE, "ExecMainStatus") == 209
    job = await start(client, "noin.service", execstart(SH, "-c", "true"),
                      path_prop("StandardInputFile", tmp_path / "missing"),
                      ["AddRef", Variant("b", True)])  # fmt: skip
    await job_result(client, job)
    (path,) = await client.ok("GetUnit", "s", ["noin.service"])
    for _ in range(500):
        if await client.get(path, "org.freedesktop.systemd1.Unit", "ActiveState") == "failed":
            break
        await asyncio.sleep(0.02)
    assert await client.get(path, SERVICE, "ExecMainStatus") == 208


@pytest.mark.parametrize(
    ("value", "message"),
    [("rel/x", "Path rel/x is not absolute"), ("/tmp/../x", "Path /tmp/../x is not normalized")],
)
async def test_bad_paths_are_refused(
    daemon: Daemon, client: Client, value: str, message: str
) -> None:
    props = [execstart(SH), path_prop("StandardOutputFile", value)]
    reply = await client.call("StartTransientUnit", STU, ["bad.service", "fail", props, []])
    assert (reply.error_name, reply.body[0]) == ("org.freedesktop.DBus.Error.InvalidArgs", message)
    assert "bad.service" not in daemon.manager.units
