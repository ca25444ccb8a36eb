"""Pure parts: envelopes, ids, error decoding."""

from __future__ import annotations

import json
import uuid

import pytest

from ymera import (
    Agent,
    NoCapableAgent,
    NotFound,
    RateLimited,
    ValidationFailed,
    error_from_reply,
    new_envelope,
    uuid7,
)


def test_uuid7_is_version_7_and_ordered() -> None:
    ids = [uuid7() for _ in range(50)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert [str(i)[:8] for i in ids] == sorted(str(i)[:8] for i in ids)


def test_envelope_fields() -> None:
    env = new_envelope("me", ["you"], {"message": "hi"}, type="request", correlation_id=None)
    assert env["sender"] == "me" and env["recipients"] == ["you"] and env["priority"] == "normal"
    assert env["created_at"].endswith("Z") and "correlation_id" not in env


def test_error_replies_decode_to_typed_errors() -> None:
    body = json.dumps({"error": {"code": "rate_limited", "message": "slow down", "details": {"retry_after_ms": 250}}})
    err = error_from_reply({"Nats-Service-Error-Code": "429", "Nats-Service-Error": "slow down"}, body.encode())
    assert isinstance(err, RateLimited) and err.retry_after_ms == 250 and err.message == "slow down"
    skill = json.dumps(
        {"error": {"code": "validation_failed", "message": "no agent", "details": {"reason": "no_capable_agent", "live_agents": ["a"]}}}
    )
    err = error_from_reply({"Nats-Service-Error-Code": "422"}, skill.encode())
    assert isinstance(err, NoCapableAgent) and isinstance(err, ValidationFailed) and err.live_agents == ["a"]
    assert isinstance(error_from_reply({"Nats-Service-Error-Code": "404"}, b"not json"), NotFound)
    assert error_from_reply({}, b"{}") is None
    assert error_from_reply(None, b"") is None


def test_bad_agent_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Agent("Not Valid")
    with pytest.raises(ValueError):
        Agent("ok", ttl_s=1)
    agent = Agent("ok", skills=["code_review", {"id": "x", "tags": ["t"]}])
    card = agent.card()
    assert card["skills"][0] == {"id": "code_review", "name": "code review", "description": "", "tags": [], "examples": []}
    assert card["skills"][1]["tags"] == ["t"] and card["ttl_s"] == 30
    with pytest.raises(TypeError):
        agent.inbox(lambda m: None)  # type: ignore[arg-type]
