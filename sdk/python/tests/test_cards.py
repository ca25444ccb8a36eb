"""Agent cards and skill routing (DESIGN §9) from the SDK against a real stack: the card is
registered at start, listed with its skills, kept alive by heartbeat with the agent's own
metrics, reached through ``skill:<id>``, and removed at stop; an unknown skill raises
``NoCapableAgent`` with the live agents."""

from __future__ import annotations

import asyncio

import pytest

from ymera import Agent, Message, NoCapableAgent, NotFound

from .conftest import Stack, run

SEND = ["comm:send", "comm:read"]


def test_card_registration_heartbeat_and_skill_routing(stack: Stack) -> None:
    worker_key = stack.key("py-summarizer", SEND)
    user_key = stack.key("py-card-user", SEND)

    async def body() -> None:
        worker = Agent(
            "py-summarizer",
            skills=[{"id": "py_summarize", "tags": ["text"], "examples": ["summarize this"]}],
            description="summarizes text",
            credential=worker_key,
            url=stack.nats_url,
            ttl_s=6,
        )

        @worker.inbox
        async def handle(message: Message) -> dict:
            return {"success": True, "summary": message.payload["message"][:10]}

        async with worker, Agent("py-card-user", credential=user_key, url=stack.nats_url, register=False) as user:
            assert worker.registered
            card = await stack.admin_call("communication.agents.get", {"name": "py-summarizer"})
            assert card["live"] is True and card["description"] == "summarizes text"
            assert [s["id"] for s in card["skills"]] == ["py_summarize"]
            listed = await stack.admin_call("communication.agents.list", {"skill": "py_summarize"})
            assert [a["name"] for a in listed["agents"]] == ["py-summarizer"]

            answer = await user.request("skill:py_summarize", {"message": "a long text to summarize"}, timeout=30)
            assert answer.sender == "py-summarizer" and answer.payload["summary"] == "a long tex"

            # The heartbeat (every ttl/3 = 2 s) carries the agent's metrics.
            for _ in range(50):
                card = await stack.admin_call("communication.agents.get", {"name": "py-summarizer"})
                if (card.get("metrics") or {}).get("requests_handled") == 1:
                    break
                await asyncio.sleep(0.2)
            assert card["metrics"]["requests_handled"] == 1 and card["metrics"]["errors"] == 0
            assert card["delivery"]["delivered"] >= 1

            with pytest.raises(NoCapableAgent) as refused:
                await user.send("skill:py_nobody", {"message": "x"})
            assert "py-summarizer" in [a["name"] for a in refused.value.live_agents]

        # Stopped: deregistered.
        with pytest.raises(NotFound):
            await stack.admin_call("communication.agents.get", {"name": "py-summarizer"})

    run(body())
