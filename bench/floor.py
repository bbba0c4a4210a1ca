"""The floor: a trivial dbus-fast service with systemd1's message shapes and nothing else.

It owns org.freedesktop.systemd1 and answers the calls the benchmark driver makes with the
same signatures as systemd (StartTransientUnit -> 'o' then JobRemoved(uoss); StopUnit;
GetUnit; Properties.Get; ListUnits a(ssssssouso); Subscribe), keeping one dict entry per
unit and noticing a scope's process exit through a pidfd (UnitRemoved). No validation, no
cgroups, no state: whatever a real implementation costs above this is its own work.

Usage: floor.py --address ADDRESS
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

NAME = "org.freedesktop.systemd1"
ROOT = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT_PREFIX = ROOT + "/unit/"


def unit_path(name: str) -> str:
    out = []
    for i, c in enumerate(name):
        if c.isascii() and (c.isalpha() or (i > 0 and c.isdigit())):
            out.append(c)
        else:
            out.append(f"_{ord(c):02x}")
    return UNIT_PREFIX + "".join(out)


class Floor:
    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.loop = asyncio.get_running_loop()
        self.units: dict[str, tuple[str, int]] = {}  # name -> (state, pidfd or -1)
        self.by_path: dict[str, str] = {}
        self.next_job = 1
        self.stopping: dict[str, tuple[int, str]] = {}  # name -> its stop job
        bus.add_message_handler(self.on_message)

    def signal(self, member: str, sig: str, body: list[Any]) -> None:
        self.bus.send(Message.new_signal(ROOT, MANAGER, member, sig, body))

    def job(self) -> tuple[int, str]:
        job_id = self.next_job
        self.next_job += 1
        return job_id, f"{ROOT}/job/{job_id}"

    def gone(self, name: str) -> None:
        _state, fd = self.units.pop(name, ("", -1))
        self.by_path.pop(unit_path(name), None)
        if fd >= 0:
            self.loop.remove_reader(fd)
            os.close(fd)
        self.signal("UnitRemoved", "so", [name, unit_path(name)])
        stopping = self.stopping.pop(name, None)
        if stopping is not None:
            self.signal("JobRemoved", "uoss", [stopping[0], stopping[1], name, "done"])

    def on_message(self, msg: Message) -> Message | bool | None:
        if msg.message_type is not MessageType.METHOD_CALL:
            return None
        member = msg.member
        if member == "StartTransientUnit":
            name, _mode, props, _aux = msg.body
            pids = [p[1].value for p in props if p[0] == "PIDs"]
            fd = -1
            if pids and pids[0]:
                try:
                    fd = os.pidfd_open(pids[0][0])
                except OSError:
                    return Message.new_error(
                        msg, "org.freedesktop.DBus.Error.UnixProcessIdUnknown", "no such process"
                    )
                self.loop.add_reader(fd, self.gone, name)
            self.units[name] = ("active", fd)
            self.by_path[unit_path(name)] = name
            job_id, job_path = self.job()
            self.bus.send(Message.new_method_return(msg, "o", [job_path]))
            self.signal("JobRemoved", "uoss", [job_id, job_path, name, "done"])
            return True
        if member == "StopUnit":
            name, _mode = msg.body
            if name not in self.units:
                return Message.new_error(
                    msg, "org.freedesktop.systemd1.NoSuchUnit", f"Unit {name} not loaded."
                )
            job_id, job_path = self.job()
            self.bus.send(Message.new_method_return(msg, "o", [job_path]))
            self.stopping[name] = (job_id, job_path)
            _state, fd = self.units[name]
            if fd >= 0:
                signal.pidfd_send_signal(fd, signal.SIGTERM)
            else:
                self.gone(name)
            return True
        if member == "GetUnit":
            (name,) = msg.body
            if name not in self.units:
                return Message.new_error(
                    msg, "org.freedesktop.systemd1.NoSuchUnit", f"Unit {name} not loaded."
                )
            return Message.new_method_return(msg, "o", [unit_path(name)])
        if member == "Get":
            name = self.by_path.get(msg.path or "")
            state = self.units[name][0] if name in self.units else "inactive"
            return Message.new_method_return(msg, "v", [Variant("s", state)])
        if member == "ListUnits":
            rows = [
                [n, "", "loaded", s, "running", "", unit_path(n), 0, "", "/"]
                for n, (s, _fd) in self.units.items()
            ]
            return Message.new_method_return(msg, "a(ssssssouso)", [rows])
        if member in ("Subscribe", "Unsubscribe", "Ping"):
            return Message.new_method_return(msg)
        return Message.new_error(
            msg, "org.freedesktop.DBus.Error.UnknownMethod", f"Unknown method {member}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    args = parser.parse_args()
    bus = await MessageBus(bus_address=args.address).connect()
    Floor(bus)
    await bus.request_name(NAME)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    bus.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
