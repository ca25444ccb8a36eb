"""Typed errors mirroring the platform's error replies (DESIGN §4).

Every endpoint answers a failed request with the headers ``Nats-Service-Error`` and
``Nats-Service-Error-Code`` and the body ``{"error": {"code", "message", "details"}}``.
:func:`error_from_reply` turns such a reply into the matching :class:`YmeraError` subclass.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Type

__all__ = [
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


class YmeraError(Exception):
    """A refused or failed platform request: HTTP-like ``status``, ``code`` slug, ``details``."""

    status: int = 500
    code: str = "internal"

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        details: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.details: Dict[str, Any] = details or {}

    @property
    def reason(self) -> Optional[str]:
        """``details.reason`` when the service gave one (e.g. ``revoked_key``)."""
        reason = self.details.get("reason")
        return reason if isinstance(reason, str) else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"


class InvalidRequest(YmeraError):
    """400 ``invalid_request``: malformed JSON, unknown fields."""

    status, code = 400, "invalid_request"


class Unauthenticated(YmeraError):
    """401 ``unauthenticated``: no credential, or a wrong, expired or revoked one."""

    status, code = 401, "unauthenticated"


class Forbidden(YmeraError):
    """403 ``forbidden``: the credential lacks the permission."""

    status, code = 403, "forbidden"


class NotFound(YmeraError):
    """404 ``not_found``."""

    status, code = 404, "not_found"


class Conflict(YmeraError):
    """409 ``conflict``."""

    status, code = 409, "conflict"


class PayloadTooLarge(YmeraError):
    """413 ``payload_too_large``: over ``MAX_MESSAGE_SIZE`` or a service's own limit."""

    status, code = 413, "payload_too_large"


class ValidationFailed(YmeraError):
    """422 ``validation_failed``: ``details`` lists the violations."""

    status, code = 422, "validation_failed"

    @property
    def violations(self) -> List[Dict[str, Any]]:
        found = self.details.get("violations")
        return found if isinstance(found, list) else []


class NoCapableAgent(ValidationFailed):
    """422 with ``details.reason = "no_capable_agent"``: no live agent has the skill.

    ``live_agents`` are the agents that are live (DESIGN §9)."""

    @property
    def live_agents(self) -> List[Any]:
        for key in ("live_agents", "agents", "available_agents"):
            found = self.details.get(key)
            if isinstance(found, list):
                return found
        return []


class RateLimited(YmeraError):
    """429 ``rate_limited``; ``retry_after_ms`` says when to try again."""

    status, code = 429, "rate_limited"

    @property
    def retry_after_ms(self) -> Optional[int]:
        value = self.details.get("retry_after_ms")
        return int(value) if isinstance(value, (int, float)) else None


class Internal(YmeraError):
    """500 ``internal``."""

    status, code = 500, "internal"


class Unavailable(YmeraError):
    """503 ``unavailable``: circuit open, a dependency down, no service answering."""

    status, code = 503, "unavailable"


class Timeout(Unavailable):
    """No reply within the request's timeout (raised by the SDK, not a service)."""

    code = "timeout"


_BY_STATUS: Dict[int, Type[YmeraError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    500: Internal,
    503: Unavailable,
}


def error_from_reply(headers: Optional[Mapping[str, str]], body: bytes) -> Optional[YmeraError]:
    """The error a reply carries, or ``None`` for a successful reply."""
    headers = headers or {}
    status_text = headers.get("Nats-Service-Error-Code")
    if status_text is None:
        return None
    try:
        status = int(status_text)
    except ValueError:
        status = 500
    message = headers.get("Nats-Service-Error", "") or "request failed"
    code: Optional[str] = None
    details: Dict[str, Any] = {}
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = error.get("message") or message
        if isinstance(error.get("details"), dict):
            details = error["details"]
    kind = _BY_STATUS.get(status, YmeraError)
    if status == 422 and details.get("reason") == "no_capable_agent":
        kind = NoCapableAgent
    return kind(message, status=status, code=code or kind.code, details=details)
