"""Message envelopes (DESIGN §4) and the messages an agent receives."""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["Message", "new_envelope", "uuid7", "valid_agent_name", "MESSAGE_TYPES", "PRIORITIES"]

MESSAGE_TYPES = ("request", "response", "event", "command")
PRIORITIES = ("low", "normal", "high", "critical")
MAX_RECIPIENTS = 100
MAX_SUBJECT = 500
_AGENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def valid_agent_name(name: str) -> bool:
    """``[a-z0-9][a-z0-9_-]{0,63}``."""
    return bool(_AGENT_NAME.match(name))


def uuid7() -> uuid.UUID:
    """A UUID version 7 (RFC 9562): 48-bit Unix milliseconds, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_envelope(
    sender: str,
    recipients: Sequence[str],
    payload: Any,
    *,
    type: str = "request",
    subject: str = "",
    conversation_id: Optional[str] = None,
    correlation_id: Optional[str] = None,
    priority: str = "normal",
    expires_at: Optional[str] = None,
    metadata: Optional[Dict[str, str]] = None,
) -> Dict[str, Any]:
    """A new envelope with a fresh UUID v7 id. The communication agent validates it."""
    envelope: Dict[str, Any] = {
        "id": str(uuid7()),
        "type": type,
        "sender": sender,
        "recipients": list(recipients),
        "subject": subject,
        "payload": payload,
        "priority": priority,
        "created_at": now_rfc3339(),
    }
    if conversation_id is not None:
        envelope["conversation_id"] = conversation_id
    if correlation_id is not None:
        envelope["correlation_id"] = correlation_id
    if expires_at is not None:
        envelope["expires_at"] = expires_at
    if metadata:
        envelope["metadata"] = dict(metadata)
    return envelope


@dataclass
class Message:
    """An envelope delivered to the agent's inbox."""

    id: str
    type: str
    sender: str
    recipients: List[str]
    subject: str
    payload: Any
    conversation_id: Optional[str] = None
    correlation_id: Optional[str] = None
    priority: str = "normal"
    created_at: Optional[str] = None
    metadata: Dict[str, str] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_envelope(cls, envelope: Dict[str, Any]) -> "Message":
        return cls(
            id=str(envelope.get("id", "")),
            type=str(envelope.get("type", "request")),
            sender=str(envelope.get("sender", "")),
            recipients=[str(r) for r in envelope.get("recipients", [])],
            subject=str(envelope.get("subject", "")),
            payload=envelope.get("payload"),
            conversation_id=envelope.get("conversation_id"),
            correlation_id=envelope.get("correlation_id"),
            priority=str(envelope.get("priority", "normal")),
            created_at=envelope.get("created_at"),
            metadata=dict(envelope.get("metadata") or {}),
            raw=envelope,
        )

    @property
    def text(self) -> str:
        """The chat text (``payload.message``), or ``""``."""
        if isinstance(self.payload, dict) and isinstance(self.payload.get("message"), str):
            return self.payload["message"]
        return ""
