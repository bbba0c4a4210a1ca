"""A replay client in a process of its own (started by shim/bus/replay.py).

`python -m shim.bus.replay_peer ADDRESS` connects to the bus and prints one JSON line
{"name": UNIQUE-NAME, "pid": PID}; then, per JSON line on stdin:
  {"op": "call", "destination", "path", "interface", "member", "signature", "body", "timeout"}
      -> {"kind": "return"|"error", "error_name", "signature", "body", "sender"}
  {"op": "disconnect"} -> {"ok": true}; the process stays (as a `sleep` would) until stdin
  closes.
Bodies are shim/replay/values.py's JSON form.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from shim.bus.replay import from_dbus, to_dbus
from shim.replay import values as rv


async def _answer(bus: MessageBus | None, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "disconnect":
        if bus is not None:
            bus.disconnect()
        return {"ok": True}
    if op != "call":
        return {"error": f"unknown op {op!r}"}
    if bus is None or not bus.connected:
        return {"error": "disconnected"}
    sig = request["signature"]
    types = rv.parse_signature(sig)
    body = rv.body_from_json(sig, request["body"])
    msg = Message(
        destination=request["destination"],
        path=request["path"],
        interface=request["interface"],
        member=request["member"],
        signature=sig,
        body=[to_dbus(t, v) for t, v in zip(types, body, strict=True)],
    )
    try:
        reply = await asyncio.wait_for(bus.call(msg), float(request.get("timeout", 10)))
    except TimeoutError:
        return {"error": "timeout"}
    if reply is None:
        return {"error": "no reply"}
    rsig = reply.signature or ""
    rtypes = rv.parse_signature(rsig)
    rbody = [from_dbus(t, v) for t, v in zip(rtypes, reply.body, strict=True)]
    return {
        "kind": "error" if reply.message_type is MessageType.ERROR else "return",
        "error_name": reply.error_name,
        "signature": rsig,
        "body": rv.body_to_json(rsig, rbody),
        "sender": reply.sender,
    }


async def main(address: str) -> int:
    bus: MessageBus | None = await MessageBus(bus_address=address).connect()
    assert bus is not None
    print(json.dumps({"name": bus.unique_name, "pid": os.getpid()}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        request: dict[str, Any] = {}
        try:
            request = json.loads(line)
            answer = await _answer(bus, request)
        except Exception as e:  # a bad request must not end the peer
            answer = {"error": f"{type(e).__name__}: {e}"}
        if request.get("op") == "disconnect":
            bus = None
        print(json.dumps(answer), flush=True)
    if bus is not None:
        bus.disconnect()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1])))
