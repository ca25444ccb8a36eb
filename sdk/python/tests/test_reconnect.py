"""Reconnect: the agent's inbox keeps working after its nats-server restarts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import nats

from ymera import Agent, Message, new_envelope

from .conftest import free_ports, run


def _start(binary: str, port: int) -> subprocess.Popen:
    process = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    import socket

    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("nats-server did not start")


def test_inbox_survives_a_server_restart(nats_server_bin: str) -> None:
    port = free_ports(1)[0]
    url = f"nats://127.0.0.1:{port}"
    server = _start(nats_server_bin, port)

    async def body() -> None:
        nonlocal server
        agent = Agent("py-reconnect", url=url, register=False)
        got = []

        @agent.inbox
        async def handle(message: Message) -> None:
            got.append(message.payload)

        async def deliver(n: int) -> bytes:
            nc = await nats.connect(url)
            try:
                envelope = new_envelope("tester", ["py-reconnect"], {"n": n}, type="event")
                reply = await nc.request("agent.py-reconnect.inbox", json.dumps(envelope).encode(), timeout=5)
                return reply.data
            finally:
                await nc.close()

        await agent.start()
        try:
            assert await deliver(1) == b""  # the acknowledgement
            server.kill()
            server.wait()
            server = _start(nats_server_bin, port)
            deadline = time.monotonic() + 20
            while not agent._nc().is_connected and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert agent._nc().is_connected
            for _ in range(50):  # the resubscription follows the reconnect
                try:
                    await deliver(2)
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            for _ in range(50):
                if len(got) == 2:
                    break
                await asyncio.sleep(0.1)
            assert got == [{"n": 1}, {"n": 2}]
        finally:
            await agent.stop()

    try:
        run(body())
    finally:
        server.kill()
        server.wait()
