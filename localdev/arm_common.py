"""Small pieces shared by the ARM emulator's modules: the answer being built, ARM's ErrorResponse,
timestamps and resource keys."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["Reply", "full_error", "iso", "norm_resource", "subscription_of"]


def full_error(err: dict | None, target: str | None = None) -> dict:
    """ARM's ErrorResponse ``{"error": {code, message, target, details, additionalInfo}}``, missing
    members filled in."""
    err = dict(err or {})
    return {
        "error": {
            "code": str(err.pop("code", "InternalServerError")),
            "message": str(err.pop("message", "")),
            "target": err.pop("target", target) or "",
            "details": err.pop("details", []),
            "additionalInfo": err.pop("additionalInfo", []),
            **err,
        }
    }


def norm_resource(uri: str) -> str:
    """The key of a resourceUri: leading and trailing slashes and case ignored."""
    return "/" + uri.strip("/").lower()


def subscription_of(uri: str) -> str:
    """The subscription id of a resourceUri (lower case), ``"-"`` when it names none."""
    m = re.match(r"^/?subscriptions/([^/]+)", uri, re.IGNORECASE)
    return m.group(1).lower() if m else "-"


def iso(t: float) -> str:
    """RFC 3339 UTC of a ``time.time()`` value."""
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Reply:
    """The answer the emulator is about to give (or, with ``drop``, not give)."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    delay: float = 0.0
    drop: bool = False
    violation: str | None = None
    operation_id: str | None = None

    @classmethod
    def json(cls, status: int, payload: Any, **kw: Any) -> Reply:
        r = cls(status=status, body=json.dumps(payload).encode(), **kw)
        r.headers.append(("Content-Type", "application/json; charset=utf-8"))
        return r

    @classmethod
    def error(cls, status: int, code: str, message: str, target: str | None = None) -> Reply:
        """``status`` with a full ErrorResponse (an answer ARM gives, not a violation)."""
        return cls.json(status, full_error({"code": code, "message": message}, target))
