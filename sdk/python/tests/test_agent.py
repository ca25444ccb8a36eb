"""The SDK against a real stack (``ymera up --auth``): inbox, send, request, typed errors,
configuration, and the built-in code-analysis agent."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from ymera import (
    Agent,
    Forbidden,
    InvalidRequest,
    Message,
    Timeout,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
    YmeraError,
)

from .conftest import Stack, run

SEND = ["comm:send", "comm:read"]


def test_request_gets_the_correlated_response(stack: Stack) -> None:
    server_key = stack.key("py-echo", SEND)
    client_key = stack.key("py-client", SEND)

    async def body() -> None:
        echo = Agent("py-echo", credential=server_key, url=stack.nats_url, register=False)
        seen = []

        @echo.inbox
        async def handle(message: Message) -> dict:
            seen.append(message)
            return {"success": True, "echo": message.payload["message"].upper()}

        async with echo, Agent("py-client", credential=client_key, url=stack.nats_url, register=False) as client:
            answer = await client.request("py-echo", {"message": "hello"}, subject="greeting", timeout=30)
            assert answer.type == "response"
            assert answer.sender == "py-echo"
            assert answer.correlation_id == seen[0].id
            assert answer.payload["echo"] == "HELLO"
            assert isinstance(answer.payload["processing_time"], float)
            assert seen[0].sender == "py-client" and seen[0].subject == "greeting"
            # An event is delivered to the handler; nothing comes back.
            accepted = await client.send("py-echo", {"message": "fyi"}, type="event")
            assert accepted["status"] == "accepted" and accepted["recipients"] == ["py-echo"]
            for _ in range(100):
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.1)
            assert [m.type for m in seen] == ["request", "event"]
            assert echo.metrics.requests_handled == 2 and echo.metrics.errors == 0

    run(body())


def test_handler_exception_becomes_the_seed_error_shape(stack: Stack) -> None:
    server_key = stack.key("py-broken", SEND)
    client_key = stack.key("py-asker", SEND)

    async def body() -> None:
        broken = Agent("py-broken", credential=server_key, url=stack.nats_url, register=False)

        @broken.inbox
        async def handle(message: Message) -> dict:
            raise RuntimeError("cannot handle this")

        async with broken, Agent("py-asker", credential=client_key, url=stack.nats_url, register=False) as asker:
            answer = await asker.request("py-broken", {"message": "x"}, timeout=30)
            assert answer.payload["success"] is False
            assert answer.payload["error"] == "cannot handle this"
            assert broken.metrics.errors == 1

    run(body())


def test_chat_with_the_builtin_code_analysis_agent(stack: Stack) -> None:
    key = stack.key("py-reviewer-client", SEND)
    seed_message = "Please review this code for security bugs:\n```python\ndef run(cmd):\n    return eval(cmd)\n```"

    async def body() -> None:
        async with Agent("py-reviewer-client", credential=key, url=stack.nats_url, register=False) as agent:
            answer = await agent.request("code-analysis", {"message": seed_message}, timeout=60)
            assert answer.sender == "code-analysis"
            assert answer.payload["success"] is True, answer.payload
            assert "eval" in answer.payload["response"].lower()

    run(body())


def test_errors_are_typed(stack: Stack) -> None:
    key = stack.key("py-errors", ["comm:send"])
    reader_only = stack.key("py-reader", ["config:read"])

    async def body() -> None:
        async with Agent("py-errors", credential="ymk_not_a_real_key", url=stack.nats_url, register=False) as bad:
            with pytest.raises(Unauthenticated) as refused:
                await bad.send("py-echo", {"message": "x"})
            assert refused.value.status == 401
        async with Agent("py-reader", credential=reader_only, url=stack.nats_url, register=False) as reader:
            with pytest.raises(Forbidden) as forbidden:
                await reader.send("py-echo", {"message": "x"})
            assert forbidden.value.status == 403 and forbidden.value.code == "forbidden"
        async with Agent("py-errors", credential=key, url=stack.nats_url, register=False) as agent:
            with pytest.raises(ValidationFailed) as invalid:
                await agent.send("Not A Name!", {"message": "x"})
            assert invalid.value.status == 422
            assert any(v.get("path", "").startswith("/recipients") for v in invalid.value.violations), invalid.value.details
            # Someone else's name as the sender: refused, the credential is tied to its owner.
            with pytest.raises(Forbidden):
                await agent.call(
                    "communication.send",
                    {"type": "event", "sender": "someone-else", "recipients": ["py-echo"], "subject": "", "payload": {}},
                )
            with pytest.raises(InvalidRequest):
                await agent.call("communication.send", {"unknown_field": 1})
            with pytest.raises(Unavailable) as none:
                await agent.call("nobody.listens.here", {}, timeout=2)
            assert none.value.reason == "no_responders"
            with pytest.raises(Timeout):
                await agent.request("py-nobody-home", {"message": "x"}, timeout=1)
            assert isinstance(none.value, YmeraError)

    run(body())


def test_config_current_and_changes(stack: Stack) -> None:
    key = stack.key("py-configured", ["config:read"])

    async def body() -> None:
        await stack.admin_call(
            "config.set",
            {"agent": "py-configured", "environment": "development", "config": {"workers": 2}},
        )
        async with Agent(
            "py-configured", credential=key, url=stack.nats_url, environment="development", register=False
        ) as agent:
            config = await agent.config()
            assert config["workers"] == 2 and config.version >= 1
            first = config.version
            changes = config.changes()

            async def change_later() -> None:
                await asyncio.sleep(0.5)
                await stack.admin_call(
                    "config.set",
                    {"agent": "py-configured", "environment": "development", "config": {"workers": 5}},
                )

            writer = asyncio.ensure_future(change_later())
            async for updated in changes:
                if updated.get("workers") == 5:
                    break
            await writer
            await changes.aclose()
            assert config.version > first and config.values == {"workers": 5}
        # An agent with no stored document: version 0, empty settings.
        empty_key = await stack.create_key("py-unconfigured", ["config:read"])
        async with Agent("py-unconfigured", credential=empty_key, url=stack.nats_url, register=False) as agent:
            config = await agent.config()
            assert config.version == 0 and config.get("workers", "default") == "default"

    run(body())
