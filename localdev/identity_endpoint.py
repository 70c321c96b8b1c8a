"""A local managed-identity endpoint in the App Service form (protocol 2019-08-01).

It answers what ``azure.identity.ManagedIdentityCredential`` sends (through MSAL) when the
environment holds ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER``::

    GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<resource>[&client_id=<id>]
    X-IDENTITY-HEADER: {IDENTITY_HEADER}
    Metadata: true

and answers like App Service does::

    200 {"access_token": "...", "expires_on": "<epoch seconds>", "resource": "...",
         "token_type": "Bearer", "client_id": "..."}

Errors are JSON ``{"statusCode": <n>, "message": "...", "correlationId": "..."}`` (the shape MSAL
reads for App Service). MSAL turns ``expires_on`` into ``expires_in``, caches the token and only
asks again when fewer than 5 minutes remain (or at half-life for tokens of 2 hours or more), so
keep ``token_lifetime`` well above 300 seconds.

Faults: ``fail_next(n, status)`` (counted in ``failures_served``); ``hang_for(seconds)`` and
``garbage_for(seconds, kind)`` (counted in ``faults_served``, ended by ``reset_counts()``).

Plain HTTP, bound to 127.0.0.1 on a free port. Tokens and the header secret are never logged.

Usage::

    with IdentityEndpoint() as idp:
        os.environ.update(idp.env())
        cred = ManagedIdentityCredential()
        tok = cred.get_token("https://management.azure.com/.default")
        assert idp.verify(tok.token, "https://management.azure.com")
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from localdev.servers import LoopbackHandler, LoopbackServer, LoopbackService

__all__ = ["GARBAGE_KINDS", "IdentityEndpoint", "IssuedToken", "normalize_resource"]

_LOG = logging.getLogger("localdev.identity_endpoint")

TOKEN_PATH = "/msi/token"
API_VERSION = "2019-08-01"
DEFAULT_SYSTEM_CLIENT_ID = "00000000-0000-0000-0000-00000000a11c"
GARBAGE_KINDS = ("html502", "bad_expires_on", "not_json")
_HTML_502 = (
    b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>"
    b"<p>The gateway did not receive a valid answer from the upstream server.</p></body></html>"
)


def normalize_resource(resource: str) -> str:
    """Compare form of a resource or scope: no ``/.default`` suffix, no trailing slash, lower case."""
    r = (resource or "").strip()
    if r.endswith("/.default"):
        r = r[: -len("/.default")]
    return r.rstrip("/").lower()


@dataclass(frozen=True)
class IssuedToken:
    """What the endpoint remembers about a token it handed out."""

    resource: str  # the resource as requested
    client_id: str | None  # client_id asked for (None = system-assigned)
    expires_on: int  # epoch seconds


class _Handler(LoopbackHandler):
    server_version = "LocalIdentityEndpoint/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self.server.owner._handle(self)  # type: ignore[attr-defined]

    def _not_allowed(self) -> None:
        self._drain()
        self.reply(405, {"statusCode": 405, "message": "Only GET is supported."})

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)

    def reply(self, status: int, payload: dict, headers: dict | None = None) -> None:
        self.reply_raw(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)

    def reply_raw(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]
        self._headers_buffer.append(body)  # type: ignore[attr-defined]
        self.flush_headers()

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        # The request line holds only path and query (no secret); headers are never logged.
        _LOG.debug("identity endpoint: " + format, *args)


class _Server(LoopbackServer):
    def __init__(self, host: str, owner: IdentityEndpoint) -> None:
        self.owner = owner
        super().__init__(host, _Handler, "identity-endpoint")


class IdentityEndpoint(LoopbackService):
    """App Service style managed-identity token endpoint on http://127.0.0.1:<free port>/msi/token.

    :param token_lifetime: seconds each token lives (default 7200).
    :param header_secret: value expected in ``X-IDENTITY-HEADER`` (default: random).
    :param system_client_id: ``client_id`` reported for the system-assigned identity.
    """

    def __init__(
        self,
        token_lifetime: int = 7200,
        header_secret: str | None = None,
        system_client_id: str = DEFAULT_SYSTEM_CLIENT_ID,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(host)
        self.token_lifetime = int(token_lifetime)
        self._secret = header_secret or secrets.token_urlsafe(24)
        self.system_client_id = system_client_id
        self._lock = threading.Lock()
        self._window_changed = threading.Condition(self._lock)
        self._tokens: dict[str, IssuedToken] = {}
        self._issued: list[tuple[str, str | None]] = []
        self._tokens_issued = 0
        self._requests = 0
        self._failures_served = 0
        self._fail_queue: list[tuple[int, int | None]] = []
        self._faults_served = 0
        self._hang_until = 0.0  # time.monotonic() until which token requests hang
        self._garbage_until = 0.0
        self._garbage_kind = "html502"

    # ---- lifecycle (start, stop: LoopbackService) ----------------------------------------------
    def _listen(self) -> list[LoopbackServer]:
        return [_Server(self._host, self)]

    def _ending(self) -> None:
        with self._window_changed:  # hung requests end now
            self._hang_until = self._garbage_until = 0.0
            self._window_changed.notify_all()

    # ---- addresses -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._listener().port

    @property
    def endpoint(self) -> str:
        """Full token URL, e.g. ``http://127.0.0.1:PORT/msi/token`` (the ``IDENTITY_ENDPOINT`` value)."""
        return f"http://{self._host}:{self.port}{TOKEN_PATH}"

    @property
    def header_secret(self) -> str:
        """The ``IDENTITY_HEADER`` value clients must send as ``X-IDENTITY-HEADER``."""
        return self._secret

    def env(self) -> dict[str, str]:
        """``{"IDENTITY_ENDPOINT": ..., "IDENTITY_HEADER": ...}`` for the process under test."""
        return {"IDENTITY_ENDPOINT": self.endpoint, "IDENTITY_HEADER": self._secret}

    # ---- counters --------------------------------------------------------------------------
    @property
    def tokens_issued(self) -> int:
        """Tokens handed out over HTTP (not counting :meth:`mint`)."""
        with self._lock:
            return self._tokens_issued

    @property
    def issued(self) -> list[tuple[str, str | None]]:
        """``(resource, client_id)`` of every token handed out over HTTP, in order (a copy)."""
        with self._lock:
            return list(self._issued)

    @property
    def requests_received(self) -> int:
        """All requests to the token path, failed ones included."""
        with self._lock:
            return self._requests

    @property
    def failures_served(self) -> int:
        """Answers produced by :meth:`fail_next`."""
        with self._lock:
            return self._failures_served

    @property
    def faults_served(self) -> int:
        """Token requests held by :meth:`hang_for` or answered by :meth:`garbage_for`."""
        with self._lock:
            return self._faults_served

    def reset_counts(self) -> None:
        """Zero the counters and the ``issued`` list; end any hang (its requests go unanswered)
        or garbage window. Tokens already issued stay valid."""
        with self._window_changed:
            self._issued.clear()
            self._tokens_issued = 0
            self._requests = 0
            self._failures_served = 0
            self._faults_served = 0
            self._hang_until = self._garbage_until = 0.0
            self._window_changed.notify_all()

    # ---- control ---------------------------------------------------------------------------
    def fail_next(self, n: int, status: int = 500, retry_after: int | None = None) -> None:
        """Make the next ``n`` token requests fail with ``status`` (JSON error body).

        ``retry_after`` adds a ``Retry-After`` header. Note the client side: azure-core's retry
        policy inside azure-identity retries 408/429/500/502/503/504 on its own, and MSAL caches a
        429/5xx answer for 5 s (or ``Retry-After`` seconds) and replays it without asking again.
        """
        with self._lock:
            self._fail_queue.extend([(int(status), retry_after)] * int(n))

    def hang_for(self, seconds: float) -> None:
        """Hold every token request that arrives within the next ``seconds`` unanswered until the
        window has ended, then close its connection without an answer."""
        with self._window_changed:
            self._hang_until = time.monotonic() + max(0.0, float(seconds))
            self._window_changed.notify_all()

    def garbage_for(self, seconds: float, kind: str = "html502") -> None:
        """Answer every token request of the next ``seconds`` with garbage: ``"html502"`` a 502 with
        a text/html body; ``"bad_expires_on"`` a real token with ``"expires_on": "soon"``;
        ``"not_json"`` a 200 with a text/plain body."""
        if kind not in GARBAGE_KINDS:
            raise ValueError(f"kind must be one of {GARBAGE_KINDS}, got {kind!r}")
        with self._window_changed:
            self._garbage_until = time.monotonic() + max(0.0, float(seconds))
            self._garbage_kind = kind

    def verify(self, token: str, resource: str) -> bool:
        """True when ``token`` was issued here for ``resource`` and has not expired.

        Resources compare without ``/.default``, without a trailing slash, case-insensitively.
        """
        info = self.token_info(token)
        return bool(
            info is not None
            and normalize_resource(info.resource) == normalize_resource(resource)
            and info.expires_on > time.time()
        )

    def token_info(self, token: str) -> IssuedToken | None:
        """What was recorded when ``token`` was issued (None if unknown)."""
        with self._lock:
            return self._tokens.get(token)

    def mint(self, resource: str, client_id: str | None = None, lifetime: int | None = None) -> str:
        """Issue a token directly (no HTTP), e.g. for tests that only need a valid bearer token.

        Not counted in ``tokens_issued``/``issued``. ``lifetime`` may be negative (expired token).
        """
        return self._new_token(resource, client_id, self.token_lifetime if lifetime is None else lifetime)

    # ---- internals -------------------------------------------------------------------------
    def _new_token(self, resource: str, client_id: str | None, lifetime: int) -> str:
        token = "lmi." + secrets.token_urlsafe(32)
        info = IssuedToken(resource=resource, client_id=client_id, expires_on=int(time.time()) + int(lifetime))
        with self._lock:
            self._tokens[token] = info
        return token

    def _handle(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        if url.path != TOKEN_PATH:
            h.reply(404, self._err(404, f"No such path: {url.path}"))
            return
        with self._lock:
            self._requests += 1
            now = time.monotonic()
            hang = now < self._hang_until
            garbage = self._garbage_kind if not hang and now < self._garbage_until else None
            failure = self._fail_queue.pop(0) if self._fail_queue and not (hang or garbage) else None
            if failure:
                self._failures_served += 1
            if hang or garbage:
                self._faults_served += 1
        if hang:
            self._hang(h)
            return
        if garbage == "html502":
            h.reply_raw(502, _HTML_502, "text/html; charset=utf-8")
            return
        if garbage == "not_json":
            h.reply_raw(200, b"OK: token service ready", "text/plain; charset=utf-8")
            return
        if failure:
            status, retry_after = failure
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
            h.reply(status, self._err(status, "Injected failure of the local identity endpoint."), headers)
            return

        sent = h.headers.get("X-IDENTITY-HEADER")
        if sent is None or not hmac.compare_digest(sent.encode(), self._secret.encode()):
            what = "missing" if sent is None else "wrong"
            h.reply(401, self._err(401, f"The X-IDENTITY-HEADER header is {what}."))
            return
        q = parse_qs(url.query, keep_blank_values=True)
        api_version = (q.get("api-version") or [""])[0]
        if api_version != API_VERSION:
            h.reply(400, self._err(400, f"api-version must be {API_VERSION}, got {api_version!r}."))
            return
        resource = (q.get("resource") or [""])[0]
        if not resource:
            h.reply(400, self._err(400, "The 'resource' query parameter is required."))
            return
        client_id = (q.get("client_id") or [None])[0] or None

        token = self._new_token(resource, client_id, self.token_lifetime)
        with self._lock:
            if garbage is None:  # a "bad_expires_on" answer is a fault, not a token handed out
                self._tokens_issued += 1
                self._issued.append((resource, client_id))
            expires_on = self._tokens[token].expires_on
        h.reply(
            200,
            {
                "access_token": token,
                # App Service sends epoch seconds as a string
                "expires_on": "soon" if garbage else str(expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id or self.system_client_id,
            },
        )

    def _hang(self, h: _Handler) -> None:
        with self._window_changed:
            self._hold(self._window_changed, lambda: self._hang_until)
        h.hang_up()

    @staticmethod
    def _err(status: int, message: str) -> dict:
        return {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}
