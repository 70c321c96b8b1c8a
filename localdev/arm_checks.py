"""The ARM emulator's checks of a request: the resourceUri in the path, the method, the bearer token,
the api-version, the Content-Type and the body (against the operation record, see
:mod:`localdev.arm_spec`), and ARM's throttling buckets.

A request that breaks a rule gets the answer ARM gives it; the answer of :func:`violation` also
carries the breach, which the emulator appends to its ``violations``. A throttled request is not a
violation."""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from localdev.arm_common import Reply, full_error, subscription_of
from localdev.arm_records import RecordedRequest
from localdev.arm_spec import SpecRules

__all__ = [
    "Throttle",
    "check_api_version",
    "check_auth",
    "check_body",
    "check_call",
    "violation",
]

_WWW_AUTHENTICATE = 'Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token"'


def violation(rec: RecordedRequest, status: int, code: str, message: str, **kw: Any) -> Reply:
    """ARM's answer to a request that breaks a rule, the breach noted in ``reply.violation``."""
    reply = Reply.json(status, full_error({"code": code, "message": message}), **kw)
    reply.violation = f"{rec.method} {rec.path}: {status} {code}: {message}"
    return reply


def check_call(
    h: Any,
    rec: RecordedRequest,
    method: str,
    identity: Any,
    audience: str,
    api_version: str,
    resource_uri: str | None = None,
) -> tuple[Reply | None, str | None]:
    """The resourceUri in the path (when given), the method, the bearer token and the api-version:
    (an error reply or None, the caller's principal)."""
    if resource_uri is not None and "" in resource_uri.split("/"):
        return violation(rec, 404, "InvalidResourceType", "The resourceUri in the path has an empty segment."), None
    if rec.method != method:
        return violation(rec, 405, "MethodNotAllowed", f"The method '{rec.method}' is not allowed."), None
    err, principal = check_auth(h, rec, identity, audience)
    return (err or check_api_version(rec, api_version)), principal


def _unauthorized(rec: RecordedRequest, code: str, message: str) -> tuple[Reply, None]:
    reply = violation(rec, 401, code, message)
    reply.headers.append(("WWW-Authenticate", _WWW_AUTHENTICATE))
    return reply, None


def check_auth(h: Any, rec: RecordedRequest, identity: Any, audience: str) -> tuple[Reply | None, str | None]:
    """(error reply or None, principal client id): a bearer token ``identity`` issued for ``audience``
    (any non-empty one when ``identity`` is None)."""
    value = h.headers.get("Authorization")
    if value is None:
        return _unauthorized(
            rec, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
        )
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _unauthorized(
            rec,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is not in the 'Bearer <token>' form.",
        )
    if identity is None:
        return None, None
    info = identity.token_info(token) if hasattr(identity, "token_info") else None
    if not identity.verify(token, audience):
        if info is not None and info.expires_on <= time.time():
            return _unauthorized(rec, "ExpiredAuthenticationToken", "The access token has expired.")
        if info is not None:
            return _unauthorized(rec, "InvalidAuthenticationToken", "The access token has an invalid audience.")
        return _unauthorized(rec, "InvalidAuthenticationToken", "The access token is invalid.")
    return None, getattr(info, "client_id", None)


def check_api_version(rec: RecordedRequest, api_version: str) -> Reply | None:
    q = parse_qs(urlsplit(rec.target).query, keep_blank_values=True)
    values = q.get("api-version")
    if not values or not values[0]:
        return violation(
            rec,
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    if any(v != api_version for v in values):
        return violation(
            rec,
            400,
            "InvalidApiVersionParameter",
            f"The api-version '{values[0]}' is invalid. The supported versions are '{api_version}'.",
        )
    return None


def check_body(h: Any, rec: RecordedRequest, rules: SpecRules) -> tuple[Reply | None, Any]:
    """(error reply or None, the parsed body): Content-Type application/json, a JSON body valid
    against the operation's body schema."""
    ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return violation(
            rec,
            415,
            "UnsupportedMediaType",
            f"The content media type '{ctype}' is not supported. Only 'application/json' is supported.",
        ), None
    if not rec.raw_body:
        if rules.body_required:
            return violation(rec, 400, "InvalidRequestContent", "The request content is missing."), None
        body: Any = {}
    else:
        try:
            body = json.loads(rec.raw_body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            message = f"The request content was invalid and could not be deserialized: {exc}"
            return violation(rec, 400, "InvalidRequestContent", message), None
    errors = sorted(rules.body_validator.iter_errors(body), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.path) or "(root)"
        return violation(
            rec, 400, "InvalidRequestContent", f"The request content is invalid at {where}: {e.message}"
        ), None
    return None, body


class _Bucket:
    """Token bucket: ``capacity`` requests, refilled at ``rate`` per second."""

    def __init__(self, capacity: float, rate: float) -> None:
        self.capacity = float(capacity)
        self.rate = float(rate)
        self.level = float(capacity)
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 if a request may pass (and take one), else seconds until one is available."""
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level >= 1:
            self.level -= 1
            return 0.0
        return (1 - self.level) / self.rate if self.rate > 0 else 60.0


class Throttle:
    """ARM's token buckets per subscription and principal, one set for ``"writes"`` and one for
    ``"reads"``: ``limits`` is ``False`` (off), ``True`` (writes: 200, refill 10/s; reads: 250,
    refill 25/s) or ``{"writes": (capacity, per_second), "reads": (capacity, per_second)}``."""

    def __init__(self, limits: bool | dict, lock: threading.RLock) -> None:
        if limits is True:
            limits = {"writes": (200, 10.0), "reads": (250, 25.0)}
        self._limits: dict = dict(limits) if limits else {}
        self._lock = lock
        self._buckets: dict[tuple, _Bucket] = {}
        self.throttled = 0  # 429 answers given

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()
            self.throttled = 0

    def check(self, rec: RecordedRequest, kind: str, resource_uri: str, principal: str | None) -> Reply | None:
        """None when the request may pass (its bucket's level noted in ``rec.ratelimit_remaining``),
        else ARM's 429."""
        limits = self._limits.get(kind)
        if not limits:
            return None
        sub = subscription_of(resource_uri)
        key = (kind, sub, principal or "-")
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(*limits)
            wait = bucket.take()
            rec.ratelimit_remaining = int(bucket.level)
            if not wait:
                return None
            self.throttled += 1
        message = f"Number of '{kind}' requests for subscription '{sub}' exceeded the limit (emulated)."
        reply = Reply.json(429, full_error({"code": "TooManyRequests", "message": message}))
        reply.headers.append(("Retry-After", str(max(1, math.ceil(wait)))))
        return reply
