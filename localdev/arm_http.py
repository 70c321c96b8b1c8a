"""HTTP plumbing of the ARM emulator: the TLS listener, its request handler (reading a body, keeping
a record of the request with the token redacted, and sending an answer the way ARM does, with its
request-id headers, or losing it).

Authorization headers and tokens are never logged; in the records they are redacted and only a
fingerprint (``sha256(token)[:12]``) is kept to compare tokens."""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from localdev.arm_common import Reply, full_error
from localdev.arm_records import RecordedRequest, RequestLog
from localdev.servers import LoopbackHandler, LoopbackServer

__all__ = ["MAX_BODY", "ArmHandler", "BodyCutShort", "TLSServer", "fingerprint"]

_LOG = logging.getLogger("localdev.arm_emulator")

MAX_BODY = 1 << 20


class BodyCutShort(Exception):
    """The connection ended inside the request body (``received`` bytes of it came)."""

    def __init__(self, received: int) -> None:
        super().__init__(f"the request body ended after {received} bytes")
        self.received = received


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


class ArmHandler(LoopbackHandler):
    server_version = "ArmEmulator/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300

    def _dispatch(self) -> None:
        self.server.on_request(self)  # type: ignore[attr-defined]

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch  # noqa: N815

    def read_body(self) -> bytes | None:
        """The request body; None if it is too large or malformed (connection then closes).

        Raises :class:`BodyCutShort` when the stream ends before the body does: the client went
        away while sending (a process killed between writing the headers and the body, which
        urllib3 sends apart). ARM never sees such a request whole, so it is not one to judge."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise BodyCutShort(total)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    self.close_connection = True
                    return None
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise BodyCutShort(total - size + len(chunk))
                chunks.append(chunk)
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return None
        body = self.rfile.read(length) if length > 0 else b""
        if len(body) < length:
            raise BodyCutShort(len(body))
        return body

    def receive(self, log: RequestLog) -> RecordedRequest | None:
        """The request, read whole and added to ``log``; None when it is dealt with already: a body
        over :data:`MAX_BODY` (answered 413), or one cut short (:class:`BodyCutShort`: recorded as
        kind ``cut-short`` with no answer, since ARM never sees such a request whole, it is never
        judged)."""
        try:
            raw = self.read_body()
        except BodyCutShort as cut:
            rec = self.record(b"", "cut-short")
            log.add(rec)
            _LOG.info("arm-emulator: %s %s: %s; no answer", rec.method, rec.path, cut)
            self.hang_up()
            return None
        if raw is None:
            self.send_reply(
                Reply.json(413, full_error({"code": "RequestEntityTooLarge", "message": "Body too large."}))
            )
            return None
        rec = self.record(raw, "unknown")
        log.add(rec)
        return rec

    def record(self, raw: bytes, kind: str) -> RecordedRequest:
        """The request as received, its Authorization redacted."""
        url = urlsplit(self.path)
        headers: dict[str, str] = {}
        fp = None
        for k, v in self.headers.items():
            if k.lower() == "authorization":
                scheme, _, token = v.partition(" ")
                fp = fingerprint(token.strip()) if token.strip() else None
                v = f"{scheme} ***" if token else "***"
            headers[k] = v
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return RecordedRequest(
            method=self.command,
            path=url.path,
            query={k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
            headers=headers,
            body=body,
            connection_id=getattr(self.request, "conn_id", 0),
            time=time.time(),
            raw_body=raw,
            target=self.path,
            kind=kind,
            token_fingerprint=fp,
        )

    def answer(self, rec: RecordedRequest, reply: Reply) -> None:
        """Send ``reply`` after its delay, with ARM's request-id and rate-limit headers, or drop
        the connection (``reply.drop``); note the outcome in ``rec``."""
        if reply.delay:
            time.sleep(reply.delay)
        if reply.drop:
            rec.dropped = True
            self.hang_up()
            return
        rec.status = reply.status
        request_id = str(uuid.uuid4())
        reply.headers += [
            ("x-ms-request-id", request_id),
            ("x-ms-correlation-request-id", self.headers.get("x-ms-correlation-request-id") or request_id),
        ]
        client_rid = self.headers.get("x-ms-client-request-id")
        if client_rid:
            reply.headers.append(("x-ms-client-request-id", client_rid))
        if rec.ratelimit_remaining is not None:
            bucket = "writes" if rec.method == "POST" else "reads"
            reply.headers.append((f"x-ms-ratelimit-remaining-subscription-{bucket}", str(rec.ratelimit_remaining)))
        self.send_reply(reply)

    def answer_other_host(self, log: RequestLog) -> None:
        """The listener no token should reach: any request is recorded as a violation, answered 200."""
        try:
            raw = self.read_body() or b""
        except BodyCutShort:
            raw = b""
        rec = self.record(raw, "other-host")
        msg = f"other host received {self.command} {rec.path}" + (
            " with Authorization" if rec.has_authorization else ""
        )
        log.add(rec)
        log.violated(msg)
        _LOG.warning("arm-other-host: %s", msg)
        rec.status = 200
        self.send_reply(Reply.json(200, {}))

    def send_reply(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for k, v in reply.headers:
            self.send_header(k, v)
        body = reply.body
        if reply.status in (204, 304) or 100 <= reply.status < 200:
            body = b""
        else:
            self.send_header("Content-Length", str(len(body)))
        self._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]
        if body and self.command != "HEAD":
            self._headers_buffer.append(body)  # type: ignore[attr-defined]
        self.flush_headers()

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Only the request line and status reach the log; headers (Authorization) never do.
        _LOG.debug("%s: " + format, self.server.name, *args)  # type: ignore[attr-defined]


class TLSServer(LoopbackServer):
    """HTTPS listener whose handler hands each request to ``on_request``."""

    def __init__(
        self,
        host: str,
        ctx: ssl.SSLContext,
        name: str,
        on_request: Callable[[ArmHandler], None],
        on_connect: Callable[[], int],
    ):
        self.on_request = on_request
        super().__init__(host, ArmHandler, name, ssl_context=ctx, on_connect=on_connect)
