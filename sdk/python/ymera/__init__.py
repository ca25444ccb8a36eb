"""Ymera SDK: write agents for the Ymera platform in Python.

>>> from ymera import Agent
>>> agent = Agent("echo", skills=["echo"])
>>> @agent.inbox
... async def echo(message):
...     return {"echo": message.payload}
"""

from .agent import Agent, Config, Handler, Skill
from .envelope import Message, new_envelope, uuid7, valid_agent_name
from .errors import (
    Conflict,
    Forbidden,
    Internal,
    InvalidRequest,
    NoCapableAgent,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Timeout,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
    YmeraError,
    error_from_reply,
)

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "Config",
    "Handler",
    "Skill",
    "Message",
    "new_envelope",
    "uuid7",
    "valid_agent_name",
    "YmeraError",
    "InvalidRequest",
    "Unauthenticated",
    "Forbidden",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "ValidationFailed",
    "NoCapableAgent",
    "RateLimited",
    "Internal",
    "Unavailable",
    "Timeout",
    "error_from_reply",
]
