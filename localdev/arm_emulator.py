"""A local stand-in for Azure Resource Manager: the SCVMM deleteCheckpoint action, its LRO, and the
VM instance it changes.

Serves HTTPS on 127.0.0.1 (certificate from a ``trustme.CA``), HTTP/1.1 keep-alive, one thread per
connection::

    POST /{resourceUri}/providers/Microsoft.ScVmm/virtualMachineInstances/default/deleteCheckpoint
         ?api-version=2024-06-01                       body {"id": "<checkpoint>"} or {}
    GET  /providers/Microsoft.ScVmm/locations/local/operationResults/<opid>?api-version=2024-06-01
    GET  /providers/Microsoft.ScVmm/locations/local/operationStatuses/<opid>?api-version=2024-06-01
    GET  /{resourceUri}/providers/Microsoft.ScVmm/virtualMachineInstances/default?api-version=2024-06-01

Every request is validated (path, method, bearer token from :class:`IdentityEndpoint`,
``api-version``, ``Content-Type``, body against the spec's ``VirtualMachineDeleteCheckpoint``
schema) and recorded in :attr:`ArmEmulator.received`; a request that breaks a rule is answered the
way ARM answers it and the breach is appended to :attr:`ArmEmulator.violations`.

What a valid request gets is scripted with :class:`Scenario` (see its fields), per checkpoint id,
per resourceUri, or by default::

    ca = trustme.CA()
    with IdentityEndpoint() as idp, ArmEmulator(ca, idp, spec_dir=spec_folder) as arm:
        arm.script("cp-1", Scenario(submit_faults=[Fault(status=429, retry_after=1)],
                                    done_after_polls=2, final="204"))
        arm.default = Scenario(submit="accepted_async", final="Failed")
        ...  # point the app at arm.endpoint, REQUESTS_CA_BUNDLE=arm.ca_bundle_path
        assert arm.violations == []

VM instances are opt-in per resourceUri (``arm.set_checkpoints(uri, ["cp-1", "cp-2"])``): their GET
answers the checkpoints left, deletions change them, and :attr:`ArmEmulator.deletions` logs every
checkpoint removed (rules in :mod:`localdev.arm_instances`); with ``arm.one_job_per_vm = True`` a
POST on a VM whose operation still runs answers 409. ``arm.chaos = Chaos(seed=...)`` adds random
faults (:mod:`localdev.arm_chaos`).

Authorization headers and tokens are never logged; in the records they are redacted.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import logging
import math
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from localdev.arm_chaos import Chaos, ChaosInjector
from localdev.arm_common import Reply, full_error, iso, norm_resource, subscription_of
from localdev.arm_instances import Deletion, VmInstances
from localdev.arm_records import Operation, RecordedRequest, StatusCall
from localdev.arm_scenario import Fault, Scenario
from localdev.arm_spec import SpecRules, load_spec_rules
from localdev.servers import LoopbackServer

__all__ = [
    "ArmEmulator",
    "Chaos",
    "Deletion",
    "Fault",
    "Operation",
    "RecordedRequest",
    "Scenario",
    "SpecRules",
    "StatusCall",
    "load_spec_rules",
]

_LOG = logging.getLogger("localdev.arm_emulator")

ARM_AUDIENCE = "https://management.azure.com"
MAX_BODY = 1 << 20


# ================================================================================================
# Small helpers
# ================================================================================================
def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


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


# ================================================================================================
# HTTP plumbing
# ================================================================================================
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ArmEmulator/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300

    def _dispatch(self) -> None:
        self.server.on_request(self)  # type: ignore[attr-defined]

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch  # noqa: N815

    def read_body(self) -> bytes | None:
        """The request body; None if it is too large or malformed (connection then closes)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    self.close_connection = True
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

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


class _TLSServer(LoopbackServer):
    """HTTPS listener whose handler hands each request to `on_request`."""

    def __init__(self, host: str, ctx: ssl.SSLContext, name: str, on_request: Callable, on_connect: Callable):
        self.on_request = on_request
        super().__init__(host, _Handler, name, ssl_context=ctx, on_connect=on_connect)


# ================================================================================================
# The emulator
# ================================================================================================
class ArmEmulator:
    """ARM stand-in for deleteCheckpoint, its operations and the VM instance, over HTTPS on 127.0.0.1.

    Besides the scripts (:meth:`script`, :attr:`default`): :meth:`set_checkpoints` defines a VM
    instance, :attr:`one_job_per_vm` makes a POST on a busy VM answer 409, :attr:`chaos` injects
    random faults.

    :param ca: a ``trustme.CA``; the server certificate is issued for ``127.0.0.1`` and ``localhost``.
    :param identity: the :class:`~localdev.identity_endpoint.IdentityEndpoint` whose tokens are
        accepted (``identity.verify(token, "https://management.azure.com")``); ``None`` accepts any
        non-empty bearer token.
    :param spec_dir: the spec folder (Microsoft's OpenAPI document of Microsoft.ScVmm beside the
        common types); when it exists the path templates, api-version and body schema come from
        the spec, else built-in equivalents are used.
    :param throttle: ``False`` (default) or ``True`` for ARM's limits per subscription and principal
        (writes: 200, refill 10/s; reads: 250, refill 25/s), or a dict
        ``{"writes": (capacity, per_second), "reads": (capacity, per_second)}``. Throttled requests
        get 429 + ``Retry-After`` + ``TooManyRequests`` (not a violation); every answer that went
        through a bucket carries ``x-ms-ratelimit-remaining-subscription-writes`` (POST) or
        ``-reads`` (GET). Instance GETs and status GETs are reads.
    :param location_name: the ``locations/<name>`` segment of status URLs.
    """

    def __init__(
        self,
        ca: Any,
        identity: Any = None,
        spec_dir: str | Path | None = None,
        *,
        throttle: bool | dict = False,
        location_name: str = "local",
        audience: str = ARM_AUDIENCE,
        host: str = "127.0.0.1",
    ) -> None:
        self.ca = ca
        self.identity = identity
        self.rules = load_spec_rules(spec_dir)
        self.api_version = self.rules.api_version
        self.audience = audience
        self.location_name = location_name
        self._host = host
        self._path_re = self.rules.path_regex()
        self._instance_re = self.rules.path_regex(self.rules.instance_path_template)
        self._status_re = re.compile(
            r"^/providers/Microsoft\.ScVmm/locations/(?P<loc>[^/]+)/(?P<kind>operationResults|operationStatuses)"
            r"/(?P<opid>[0-9a-f-]{36})(?:\.(?P<step>\d+))?$",
            re.IGNORECASE,
        )
        if throttle is True:
            throttle = {"writes": (200, 10.0), "reads": (250, 25.0)}
        self._throttle: dict = dict(throttle) if throttle else {}
        self._buckets: dict[tuple, _Bucket] = {}

        self.default = Scenario()
        self._scripts: dict[str, Scenario] = {}
        self._scripts_by_resource: dict[str, Scenario] = {}

        self._lock = threading.RLock()
        self.received: list[RecordedRequest] = []
        self.violations: list[str] = []
        self.other_host_received: list[RecordedRequest] = []
        self._connections_opened = 0
        self._other_connections = 0
        self._conn_seq = 0
        self._submit_progress: dict[tuple, tuple[Scenario, int]] = {}
        self._ops: dict[str, Operation] = {}
        self.throttled = 0
        self._instances = VmInstances(self._lock)
        self._chaos = ChaosInjector()
        self.one_job_per_vm = False  # a POST on a VM while one of its operations runs answers 409

        self._tmpdir: str | None = None
        self._server: _TLSServer | None = None
        self._other: _TLSServer | None = None
        self._threads: list[threading.Thread] = []

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> ArmEmulator:
        if self._server is not None:
            return self
        self._tmpdir = tempfile.mkdtemp(prefix="arm-emulator-")
        bundle = Path(self._tmpdir) / "ca.pem"
        self.ca.cert_pem.write_to_path(str(bundle))
        self._ca_bundle_path = str(bundle)
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        cert.configure_cert(ctx)
        self._server = _TLSServer(self._host, ctx, "arm-emulator", self._on_request, self._on_connect)
        self._other = _TLSServer(self._host, ctx, "arm-other-host", self._on_other_request, self._on_other_connect)
        for srv in (self._server, self._other):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, name=srv.name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        servers = [s for s in (self._server, self._other) if s is not None]
        self._server = self._other = None
        for srv in servers:
            srv.shutdown()
            srv.server_close()
            srv.close_live_connections()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> ArmEmulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- addresses -------------------------------------------------------------------------
    def _require(self, srv: _TLSServer | None) -> _TLSServer:
        if srv is None:
            raise RuntimeError("ArmEmulator is not started")
        return srv

    @property
    def port(self) -> int:
        return self._require(self._server).server_address[1]

    @property
    def endpoint(self) -> str:
        """``https://127.0.0.1:PORT`` (the app's ``ARM_ENDPOINT``)."""
        return f"https://{self._host}:{self.port}"

    @property
    def other_host_endpoint(self) -> str:
        """``https://localhost:OTHERPORT``: a listener no token should ever reach."""
        return f"https://localhost:{self._require(self._other).server_address[1]}"

    @property
    def ca_bundle_path(self) -> str:
        """PEM file of the CA (for ``REQUESTS_CA_BUNDLE``); exists while started."""
        self._require(self._server)
        return self._ca_bundle_path

    def url_for(self, resource_uri: str, api_version: str | None = None) -> str:
        """The deleteCheckpoint URL for ``resource_uri`` (with or without a leading slash)."""
        path = self.rules.path_template.replace("{resourceUri}", resource_uri.strip("/"))
        return f"{self.endpoint}{path}?api-version={api_version or self.api_version}"

    def instance_url_for(self, resource_uri: str, api_version: str | None = None) -> str:
        """The VM instance GET URL for ``resource_uri``."""
        path = self.rules.instance_path_template.replace("{resourceUri}", resource_uri.strip("/"))
        return f"{self.endpoint}{path}?api-version={api_version or self.api_version}"

    # ---- scripting -------------------------------------------------------------------------
    def script(self, key: str, scenario: Scenario | None) -> None:
        """Script the answers for a checkpoint id or a resourceUri (``None`` removes the script).

        Lookup per request: the body's checkpoint id (exact), then the resourceUri (leading and
        trailing slashes and case ignored), then :attr:`default`.
        """
        with self._lock:
            if scenario is None:
                self._scripts.pop(key, None)
                self._scripts_by_resource.pop(norm_resource(key), None)
            else:
                self._scripts[key] = scenario
                self._scripts_by_resource[norm_resource(key)] = scenario

    def scenario_for(self, resource_uri: str, checkpoint_id: str | None) -> Scenario:
        with self._lock:
            if checkpoint_id is not None and checkpoint_id in self._scripts:
                return self._scripts[checkpoint_id]
            return self._scripts_by_resource.get(norm_resource(resource_uri), self.default)

    # ---- VM instances and chaos (see localdev.arm_instances, localdev.arm_chaos) --------------
    def set_checkpoints(self, resource_uri: str, checkpoints: list[str | dict]) -> None:
        """Define the VM instance at ``resource_uri`` with its checkpoint chain, root first: ids, or
        dicts ``{"checkpointID", "name", "description"}``. Calling it again replaces the list."""
        self._instances.define(resource_uri, checkpoints)

    def checkpoints(self, resource_uri: str) -> list[str]:
        """The instance's checkpoint ids in chain order ([] for an undefined instance); like an
        instance GET, it settles the VM's operations that are due by time first."""
        return self._instances.ids(resource_uri)

    def checkpoint_exists(self, resource_uri: str, checkpoint_id: str) -> bool:
        return self._instances.exists(resource_uri, checkpoint_id)

    @property
    def deletions(self) -> list[Deletion]:
        """Every checkpoint removed, in order (operations due by time are settled first)."""
        return self._instances.all_deletions()

    @property
    def chaos(self) -> Chaos | None:
        """Random faults for POSTs, status GETs and instance GETs (``None``: off)."""
        return self._chaos.config

    @chaos.setter
    def chaos(self, value: Chaos | None) -> None:
        self._chaos.configure(value)

    @property
    def chaos_counts(self) -> dict[str, int]:
        """How many faults of each kind chaos injected ("error", "throttle", "slow", "reset", "lost")."""
        return self._chaos.counts()

    # ---- inspection ------------------------------------------------------------------------
    @property
    def connections_opened(self) -> int:
        """TLS connections accepted by the main listener since start / :meth:`clear`."""
        with self._lock:
            return self._connections_opened

    @property
    def other_host_connections(self) -> int:
        with self._lock:
            return self._other_connections

    @property
    def operations(self) -> list[Operation]:
        """Every operation started (202 answers), oldest first."""
        with self._lock:
            return list(self._ops.values())

    def operation(self, opid: str) -> Operation:
        """The operation with that id (KeyError if none)."""
        with self._lock:
            return self._ops[opid]

    def operations_for(self, key: str) -> list[Operation]:
        """Operations whose checkpoint id equals ``key`` or whose resourceUri matches it."""
        norm = norm_resource(key)
        with self._lock:
            return [
                op for op in self._ops.values() if op.checkpoint_id == key or norm_resource(op.resource_uri) == norm
            ]

    def requests(self, kind: str | None = None, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests of the main listener, optionally filtered by kind / method."""
        with self._lock:
            return [
                r for r in self.received if (kind is None or r.kind == kind) and (method is None or r.method == method)
            ]

    def clear(self) -> None:
        """Forget records and counters: received, violations, other_host_received, connection
        counts, throttle buckets, submit- and instance-fault progress, the deletion log, chaos
        counts and bursts. Scripts, ``default``, operations (and so their status URLs), VM
        instances, ``chaos`` and ``one_job_per_vm`` stay."""
        with self._lock:
            self._instances.clear()
            self._chaos.clear()
            self.received.clear()
            self.violations.clear()
            self.other_host_received.clear()
            self._connections_opened = 0
            self._other_connections = 0
            self._submit_progress.clear()
            self._buckets.clear()
            self.throttled = 0

    def reset(self) -> None:
        """:meth:`clear` plus forget operations, scripts, VM instances, ``chaos`` and
        ``one_job_per_vm``, and restore ``default = Scenario()``."""
        with self._lock:
            self.clear()
            self._instances.forget()
            self._chaos.configure(None)
            self.one_job_per_vm = False
            self._ops.clear()
            self._scripts.clear()
            self._scripts_by_resource.clear()
            self.default = Scenario()

    # ---- connection hooks --------------------------------------------------------------------
    def _on_connect(self) -> int:
        with self._lock:
            self._connections_opened += 1
            self._conn_seq += 1
            return self._conn_seq

    def _on_other_connect(self) -> int:
        with self._lock:
            self._other_connections += 1
            self._conn_seq += 1
            return self._conn_seq

    # ---- request entry points ------------------------------------------------------------------
    def _record(self, h: _Handler, raw: bytes, kind: str) -> RecordedRequest:
        url = urlsplit(h.path)
        headers: dict[str, str] = {}
        fp = None
        for k, v in h.headers.items():
            if k.lower() == "authorization":
                scheme, _, token = v.partition(" ")
                fp = _fingerprint(token.strip()) if token.strip() else None
                v = f"{scheme} ***" if token else "***"
            headers[k] = v
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return RecordedRequest(
            method=h.command,
            path=url.path,
            query={k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
            headers=headers,
            body=body,
            connection_id=getattr(h.request, "conn_id", 0),
            time=time.time(),
            raw_body=raw,
            target=h.path,
            kind=kind,
            token_fingerprint=fp,
        )

    def _on_other_request(self, h: _Handler) -> None:
        raw = h.read_body()
        rec = self._record(h, raw or b"", "other-host")
        msg = f"other host received {h.command} {rec.path}" + (" with Authorization" if rec.has_authorization else "")
        with self._lock:
            self.other_host_received.append(rec)
            self.violations.append(msg)
        _LOG.warning("arm-other-host: %s", msg)
        reply = Reply.json(200, {})
        rec.status = 200
        h.send_reply(reply)

    def _on_request(self, h: _Handler) -> None:
        raw = h.read_body()
        if raw is None:
            h.send_reply(Reply.json(413, full_error({"code": "RequestEntityTooLarge", "message": "Body too large."})))
            return
        rec = self._record(h, raw, "unknown")
        with self._lock:
            self.received.append(rec)
        try:
            reply = self._decide(h, rec)
            self._chaos.finish(rec.chaos, reply)  # a slow or lost answer of a processed request
        except Exception:  # a bug here must show up as a violation, not a hung client
            _LOG.exception("arm-emulator: internal error")
            reply = Reply.json(500, full_error({"code": "EmulatorError", "message": "internal emulator error"}))
            reply.violation = f"{rec.method} {rec.path}: emulator internal error"
        rec.operation_id = reply.operation_id
        if reply.violation:
            rec.violation = reply.violation
            with self._lock:
                self.violations.append(reply.violation)
            _LOG.info("arm-emulator: violation: %s", reply.violation)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.drop:
            rec.dropped = True
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.request.shutdown(socket.SHUT_RDWR)
            return
        rec.status = reply.status
        request_id = str(uuid.uuid4())
        reply.headers += [
            ("x-ms-request-id", request_id),
            ("x-ms-correlation-request-id", h.headers.get("x-ms-correlation-request-id") or request_id),
        ]
        client_rid = h.headers.get("x-ms-client-request-id")
        if client_rid:
            reply.headers.append(("x-ms-client-request-id", client_rid))
        if rec.ratelimit_remaining is not None:
            bucket = "writes" if rec.method == "POST" else "reads"
            reply.headers.append((f"x-ms-ratelimit-remaining-subscription-{bucket}", str(rec.ratelimit_remaining)))
        h.send_reply(reply)

    # ---- validation ------------------------------------------------------------------------------
    def _fail(self, rec: RecordedRequest, status: int, code: str, message: str, **kw: Any) -> Reply:
        reply = Reply.json(status, full_error({"code": code, "message": message}), **kw)
        reply.violation = f"{rec.method} {rec.path}: {status} {code}: {message}"
        return reply

    def _check_auth(self, h: _Handler, rec: RecordedRequest) -> tuple[Reply | None, str | None]:
        """(error reply or None, principal client id)."""
        value = h.headers.get("Authorization")
        www = 'Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token"'
        if value is None:
            r = self._fail(
                rec, 401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
            )
            r.headers.append(("WWW-Authenticate", www))
            return r, None
        scheme, _, token = value.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            r = self._fail(
                rec,
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is not in the 'Bearer <token>' form.",
            )
            r.headers.append(("WWW-Authenticate", www))
            return r, None
        if self.identity is None:
            return None, None
        info = self.identity.token_info(token) if hasattr(self.identity, "token_info") else None
        if not self.identity.verify(token, self.audience):
            if info is not None and info.expires_on <= time.time():
                code, msg = "ExpiredAuthenticationToken", "The access token has expired."
            elif info is not None:
                code, msg = "InvalidAuthenticationToken", "The access token has an invalid audience."
            else:
                code, msg = "InvalidAuthenticationToken", "The access token is invalid."
            r = self._fail(rec, 401, code, msg)
            r.headers.append(("WWW-Authenticate", www))
            return r, None
        return None, getattr(info, "client_id", None)

    def _check_api_version(self, rec: RecordedRequest) -> Reply | None:
        q = parse_qs(urlsplit(rec.target).query, keep_blank_values=True)
        values = q.get("api-version")
        if not values or not values[0]:
            return self._fail(
                rec,
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if any(v != self.api_version for v in values):
            return self._fail(
                rec,
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{values[0]}' is invalid. The supported versions are '{self.api_version}'.",
            )
        return None

    def _admit(self, rec: RecordedRequest, kind: str, resource_uri: str, principal: str | None) -> Reply | None:
        """A checked call meets the throttle bucket, then chaos: their answer, or None to go on."""
        return self._throttle_check(rec, kind, resource_uri, principal) or self._chaos_draw(rec, resource_uri)

    def _chaos_draw(self, rec: RecordedRequest, resource_uri: str) -> Reply | None:
        drawn = self._chaos.draw(subscription_of(resource_uri))
        if drawn is None:
            return None
        rec.chaos, reply = drawn
        return reply

    def _throttle_check(
        self, rec: RecordedRequest, kind: str, resource_uri: str, principal: str | None
    ) -> Reply | None:
        limits = self._throttle.get(kind)
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
        reply = Reply.json(
            429,
            full_error(
                {
                    "code": "TooManyRequests",
                    "message": f"Number of '{kind}' requests for subscription '{sub}' exceeded the limit (emulated).",
                }
            ),
        )
        reply.headers.append(("Retry-After", str(max(1, math.ceil(wait)))))
        return reply

    # ---- decisions ---------------------------------------------------------------------------------
    def _decide(self, h: _Handler, rec: RecordedRequest) -> Reply:
        m = self._path_re.match(rec.path)
        if m:
            rec.kind = "submit"
            return self._decide_submit(h, rec, m.group("resourceUri"))
        s = self._status_re.match(rec.path)
        if s:
            rec.kind = "status"
            return self._decide_status(h, rec, s)
        i = self._instance_re.match(rec.path)
        if i:
            rec.kind = "instance"
            return self._decide_instance(h, rec, i.group("resourceUri"))
        return self._fail(rec, 404, "NotFound", f"No route for path '{rec.path}'.")

    def _check_call(self, h: _Handler, rec: RecordedRequest, method: str) -> tuple[Reply | None, Any]:
        """The method, the bearer token and the api-version: (an error reply or None, the caller's principal)."""
        if rec.method != method:
            return self._fail(rec, 405, "MethodNotAllowed", f"The method '{rec.method}' is not allowed."), None
        err, principal = self._check_auth(h, rec)
        return (err or self._check_api_version(rec)), principal

    def _decide_submit(self, h: _Handler, rec: RecordedRequest, resource_uri: str) -> Reply:
        if "" in resource_uri.split("/"):
            return self._fail(rec, 404, "InvalidResourceType", "The resourceUri in the path has an empty segment.")
        err, principal = self._check_call(h, rec, "POST")
        if err:
            return err
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return self._fail(
                rec,
                415,
                "UnsupportedMediaType",
                f"The content media type '{ctype}' is not supported. Only 'application/json' is supported.",
            )
        if not rec.raw_body:
            if self.rules.body_required:
                return self._fail(rec, 400, "InvalidRequestContent", "The request content is missing.")
            body: Any = {}
        else:
            try:
                body = json.loads(rec.raw_body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                return self._fail(
                    rec,
                    400,
                    "InvalidRequestContent",
                    f"The request content was invalid and could not be deserialized: {exc}",
                )
        errors = sorted(self.rules.body_validator.iter_errors(body), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            where = "/".join(str(p) for p in e.path) or "(root)"
            return self._fail(
                rec, 400, "InvalidRequestContent", f"The request content is invalid at {where}: {e.message}"
            )

        resource_uri = "/" + resource_uri
        checkpoint_id = body.get("id") if isinstance(body, dict) else None
        early = self._admit(rec, "writes", resource_uri, principal)
        if early:
            return early

        scenario = self.scenario_for(resource_uri, checkpoint_id)
        with self._lock:
            ident = (norm_resource(resource_uri), checkpoint_id)
            owner, idx = self._submit_progress.get(ident, (scenario, 0))
            if owner is not scenario:  # re-scripted: start its faults afresh
                idx = 0
            fault = scenario.submit_faults[idx] if idx < len(scenario.submit_faults) else None
            if fault is not None:
                self._submit_progress[ident] = (scenario, idx + 1)
        if fault is not None and (fault.drop or fault.status is not None):
            return self._fault_reply(fault, scenario, resource_uri)

        answer = scenario.submit
        with self._lock:  # the VM's state is checked and changed in one step
            now = time.time()
            refusal = self._instances.check_submit(resource_uri, checkpoint_id, self.one_job_per_vm, now)
            if refusal:
                reply = refusal
            elif isinstance(answer, Fault):
                reply = self._fault_reply(answer, scenario, resource_uri)
            elif answer in ("done_200", "done_204"):
                self._instances.finished_at_once(resource_uri, checkpoint_id, now)
                reply = Reply(status=200 if answer == "done_200" else 204)
            else:
                op = self._new_operation(resource_uri, checkpoint_id, scenario, answer == "accepted_async")
                reply = Reply(status=202, operation_id=op.id)
                reply.headers.append(("Location", op.location_url))
                if op.async_url:
                    reply.headers.append(("Azure-AsyncOperation", op.async_url))
                self._add_retry_after(reply, scenario.retry_after, scenario)
        return self._after_fault(reply, fault)

    def _decide_instance(self, h: _Handler, rec: RecordedRequest, resource_uri: str) -> Reply:
        if "" in resource_uri.split("/"):
            return self._fail(rec, 404, "InvalidResourceType", "The resourceUri in the path has an empty segment.")
        err, principal = self._check_call(h, rec, "GET")
        if err:
            return err
        resource_uri = "/" + resource_uri
        early = self._admit(rec, "reads", resource_uri, principal)
        if early:
            return early
        scenario = self.scenario_for(resource_uri, None)
        fault = self._instances.next_fault(resource_uri, scenario)
        if fault is not None and (fault.drop or fault.status is not None):
            return self._fault_reply(fault, scenario, resource_uri)
        return self._after_fault(self._instances.get_reply(resource_uri, time.time()), fault)

    def _new_operation(
        self, resource_uri: str, checkpoint_id: str | None, scenario: Scenario, async_: bool
    ) -> Operation:
        opid = str(uuid.uuid4())
        base = (scenario.location_base or self.endpoint).rstrip("/")
        prefix = f"{base}/providers/Microsoft.ScVmm/locations/{self.location_name}"
        location = f"{prefix}/operationResults/{opid}?api-version={self.api_version}"
        async_url = f"{prefix}/operationStatuses/{opid}?api-version={self.api_version}" if async_ else None
        op = Operation(
            id=opid,
            resource_uri=resource_uri,
            checkpoint_id=checkpoint_id,
            protocol="async" if async_ else "location",
            created=time.time(),
            location_url=location,
            async_url=async_url,
            scenario=scenario,
            location_urls=[location],
        )
        op._valid_targets.add(("operationresults", None))
        if async_:
            op._valid_targets.add(("operationstatuses", None))
        with self._lock:
            self._ops[opid] = op
            self._instances.started(op)
        return op

    def _decide_status(self, h: _Handler, rec: RecordedRequest, m: re.Match) -> Reply:
        err, principal = self._check_call(h, rec, "GET")
        if err:
            return err
        opid = m.group("opid").lower()
        kind = m.group("kind").lower()
        step = m.group("step")
        with self._lock:
            op = self._ops.get(opid)
        if op is None or m.group("loc").lower() != self.location_name.lower():
            return self._fail(rec, 404, "OperationNotFound", f"No operation '{opid}'.")
        if (kind, step) not in op._valid_targets:
            return self._fail(rec, 404, "OperationNotFound", f"The status URL '{rec.path}' was never handed out.")
        early = self._admit(rec, "reads", op.resource_uri, principal)
        if early:
            return early

        scenario = op.scenario
        is_async = kind == "operationstatuses"
        now = time.time()
        with self._lock:
            op.polls += 1
            if is_async:
                op.async_polls += 1
            else:
                op.location_polls += 1
            fault = None
            if op._fault_index < len(scenario.poll_faults):
                fault = scenario.poll_faults[op._fault_index]
                op._fault_index += 1
            call = StatusCall("async" if is_async else "location", rec.target, None, now)
            op.calls.append(call)
        if fault is not None and (fault.drop or fault.status is not None):
            reply = self._fault_reply(fault, scenario, op.resource_uri)
        else:
            reply = self._after_fault(self._status_answer(op, scenario, is_async, now), fault)
        reply.operation_id = op.id
        call.status = None if reply.drop else reply.status
        return reply

    def _status_answer(self, op: Operation, scenario: Scenario, is_async: bool, now: float) -> Reply:
        with self._lock:
            if not op.done:
                if op.running_answers >= scenario.done_after_polls and now - op.created >= scenario.done_after_seconds:
                    op.completed_at = now
                    self._instances.completed(op)
                else:
                    op.running_answers += 1
            done = op.done
            new_location = None
            if not done and not is_async and scenario.new_location_each_poll:
                step = len(op.location_urls)
                base = op.location_url.split("/providers/", 1)[0]
                new_location = (
                    f"{base}/providers/Microsoft.ScVmm/locations/{self.location_name}/operationResults/"
                    f"{op.id}.{step}?api-version={self.api_version}"
                )
                op._valid_targets.add(("operationresults", str(step)))
                op.location_urls.append(new_location)
                op.location_url = new_location

        if not done:
            if is_async:
                reply = Reply.json(
                    200, {"id": op.async_url, "name": op.id, "status": "InProgress", "startTime": iso(op.created)}
                )
            else:
                reply = Reply(status=202)
                if new_location:
                    reply.headers.append(("Location", new_location))
            self._add_retry_after(reply, scenario.retry_after, scenario)
            return reply

        final = scenario.final
        if isinstance(final, Fault):
            return self._fault_reply(final, scenario, op.resource_uri)
        end = iso(op.completed_at or now)

        def async_status(status: str, error: dict | None = None) -> Reply:
            body = {"id": op.async_url, "name": op.id, "status": status, "startTime": iso(op.created), "endTime": end}
            return Reply.json(200, {**body, **(error or {})})

        if final == "Failed":
            err = full_error(
                scenario.error
                or {"code": "CheckpointDeleteFailed", "message": "The checkpoint could not be deleted (emulated)."},
                op.resource_uri,
            )
            return async_status("Failed", err) if is_async else Reply.json(400, err)
        if final == "Canceled":
            if is_async:
                return async_status("Canceled", full_error(scenario.error, op.resource_uri) if scenario.error else None)
            err = scenario.error or {"code": "OperationCanceled", "message": "The operation was canceled (emulated)."}
            return Reply.json(400, full_error(err, op.resource_uri))
        if is_async:
            return async_status("Succeeded")
        return Reply(status=204 if final == "204" else 200)

    @staticmethod
    def _after_fault(reply: Reply, fault: Fault | None) -> Reply:
        """The normal answer under a fault that lets the request be processed (slow, lost)."""
        if fault is not None:
            reply.delay += fault.delay
            reply.drop = reply.drop or fault.drop_after_processing
        return reply

    def _fault_reply(self, fault: Fault, scenario: Scenario, target: str) -> Reply:
        if fault.drop:
            return Reply(drop=True, delay=fault.delay)
        status = int(fault.status or 500)
        if fault.error is not None:
            reply = Reply.json(status, full_error(fault.error, target), delay=fault.delay)
        else:
            reply = Reply(status=status, delay=fault.delay)
        if fault.location:
            reply.headers.append(("Location", fault.location))
        self._add_retry_after(reply, fault.retry_after, scenario)
        reply.headers.extend((str(k), str(v)) for k, v in fault.headers.items())
        return reply

    @staticmethod
    def _add_retry_after(reply: Reply, value: int | str | None, scenario: Scenario) -> None:
        if value is None:
            return
        if isinstance(value, str):
            reply.headers.append(("Retry-After", value))
        elif scenario.retry_after_http_date:
            reply.headers.append(("Retry-After", email.utils.formatdate(time.time() + int(value), usegmt=True)))
        else:
            reply.headers.append(("Retry-After", str(int(value))))
