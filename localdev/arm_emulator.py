"""A local stand-in for Azure Resource Manager: the SCVMM deleteCheckpoint action, its LRO, and the
VM instance it changes.

Serves HTTPS on 127.0.0.1 (certificate from a ``trustme.CA``), HTTP/1.1 keep-alive, one thread per
connection::

    POST /{resourceUri}/providers/Microsoft.ScVmm/virtualMachineInstances/default/deleteCheckpoint
         ?api-version=2024-06-01                       body {"id": "<checkpoint>"} or {}
    GET  /providers/Microsoft.ScVmm/locations/local/operationResults/<opid>?api-version=2024-06-01
    GET  /providers/Microsoft.ScVmm/locations/local/operationStatuses/<opid>?api-version=2024-06-01
    GET  /{resourceUri}/providers/Microsoft.ScVmm/virtualMachineInstances/default?api-version=2024-06-01

Every request is recorded in :attr:`ArmEmulator.received` and checked (:mod:`localdev.arm_checks`:
path, method, bearer token from :class:`IdentityEndpoint`, ``api-version``, ``Content-Type``, body
against the project's record of the operation, :mod:`localdev.arm_spec`); a request that breaks a
rule is answered the way ARM answers it and the breach is appended to :attr:`ArmEmulator.violations`.

What a valid request gets is scripted with :class:`Scenario` (see its fields), per checkpoint id,
per resourceUri, or by default; the decisions are in :mod:`localdev.arm_operations`::

    ca = trustme.CA()
    with IdentityEndpoint() as idp, ArmEmulator(ca, idp) as arm:
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

Tokens are never logged; in the records they are redacted (:mod:`localdev.arm_http`).
"""

from __future__ import annotations

import logging
import re
import shutil
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from localdev.arm_chaos import Chaos, ChaosInjector
from localdev.arm_checks import Throttle, check_body, check_call, violation
from localdev.arm_common import Reply, full_error, norm_resource, subscription_of
from localdev.arm_http import ArmHandler, TLSServer
from localdev.arm_instances import Deletion, VmInstances
from localdev.arm_operations import STATUS_PATH, Operations
from localdev.arm_records import Operation, RecordedRequest, RequestLog, StatusCall
from localdev.arm_scenario import Fault, Scenario
from localdev.arm_spec import SpecRules, load_spec_rules
from localdev.servers import LoopbackServer, LoopbackService

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


class ArmEmulator(LoopbackService):
    """ARM stand-in for deleteCheckpoint, its operations and the VM instance, over HTTPS on 127.0.0.1.

    Besides the scripts (:meth:`script`, :attr:`default`): :meth:`set_checkpoints` defines a VM
    instance, :attr:`one_job_per_vm` makes a POST on a busy VM answer 409, :attr:`chaos` injects
    random faults.

    :param ca: a ``trustme.CA``; the server certificate is issued for ``127.0.0.1`` and ``localhost``.
    :param identity: the :class:`~localdev.identity_endpoint.IdentityEndpoint` whose tokens are
        accepted (``identity.verify(token, "https://management.azure.com")``); ``None`` accepts any
        non-empty bearer token.
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
        *,
        throttle: bool | dict = False,
        location_name: str = "local",
        audience: str = ARM_AUDIENCE,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(host)
        self.ca = ca
        self.identity = identity
        self.rules = load_spec_rules()
        self.api_version = self.rules.api_version
        self.audience = audience
        self.location_name = location_name
        self._path_re = self.rules.path_regex()
        self._instance_re = self.rules.path_regex(self.rules.instance_path_template)

        self.default = Scenario()
        self._scripts: dict[str, Scenario] = {}
        self._scripts_by_resource: dict[str, Scenario] = {}

        self._lock = threading.RLock()
        self._log = RequestLog(self._lock)
        self.received = self._log.received  # the lists themselves: they are cleared, never replaced
        self.violations = self._log.violations
        self.other_host_received = self._log.other_host_received
        self._throttle = Throttle(throttle, self._lock)
        self._instances = VmInstances(self._lock)
        self._operations = Operations(self._lock, self._instances, location_name, self.api_version)
        self._chaos = ChaosInjector()
        self.one_job_per_vm = False  # a POST on a VM while one of its operations runs answers 409

        self._tmpdir: str | None = None

    # ---- lifecycle (start, stop: LoopbackService) ----------------------------------------------
    def _listen(self) -> list[LoopbackServer]:
        self._tmpdir = tempfile.mkdtemp(prefix="arm-emulator-")
        bundle = Path(self._tmpdir) / "ca.pem"
        self.ca.cert_pem.write_to_path(str(bundle))
        self._ca_bundle_path = str(bundle)
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        cert.configure_cert(ctx)
        return [
            TLSServer(self._host, ctx, "arm-emulator", self._on_request, self._log.connected),
            TLSServer(
                self._host,
                ctx,
                "arm-other-host",
                lambda h: h.answer_other_host(self._log),
                lambda: self._log.connected(other_host=True),
            ),
        ]

    def _ended(self) -> None:
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    # ---- addresses -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._listener(0).port

    @property
    def endpoint(self) -> str:
        """``https://127.0.0.1:PORT`` (the app's ``ARM_ENDPOINT``)."""
        return f"https://{self._host}:{self.port}"

    @property
    def other_host_endpoint(self) -> str:
        """``https://localhost:OTHERPORT``: a listener no token should ever reach."""
        return f"https://localhost:{self._listener(1).port}"

    @property
    def ca_bundle_path(self) -> str:
        """PEM file of the CA (for ``REQUESTS_CA_BUNDLE``); exists while started."""
        self._listener(0)
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

    @property
    def overlaps(self) -> int:
        """POSTs that came while another operation ran on the VM (409s with ``one_job_per_vm``)."""
        return self._instances.overlaps

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
    def throttled(self) -> int:
        """Requests answered 429 by the throttle buckets since start / :meth:`clear`."""
        return self._throttle.throttled

    @property
    def connections_opened(self) -> int:
        """TLS connections accepted by the main listener since start / :meth:`clear`."""
        with self._lock:
            return self._log.connections_opened

    @property
    def other_host_connections(self) -> int:
        with self._lock:
            return self._log.other_connections

    @property
    def operations(self) -> list[Operation]:
        """Every operation started (202 answers), oldest first."""
        return self._operations.all()

    def operation(self, opid: str) -> Operation:
        """The operation with that id (KeyError if none)."""
        return self._operations.get(opid)

    def operations_for(self, key: str) -> list[Operation]:
        """Operations whose checkpoint id equals ``key`` or whose resourceUri matches it."""
        return self._operations.matching(key)

    def requests(self, kind: str | None = None, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests of the main listener, optionally filtered by kind / method."""
        return self._log.requests(kind, method)

    def clear(self) -> None:
        """Forget records and counters: received, violations, other_host_received, connection
        counts, throttle buckets, submit- and instance-fault progress, the deletion log, chaos
        counts and bursts. Scripts, ``default``, operations (and so their status URLs), VM
        instances, ``chaos`` and ``one_job_per_vm`` stay."""
        with self._lock:
            self._instances.clear()
            self._chaos.clear()
            self._log.clear()
            self._operations.clear()
            self._throttle.clear()

    def reset(self) -> None:
        """:meth:`clear` plus forget operations, scripts, VM instances, ``chaos`` and
        ``one_job_per_vm``, and restore ``default = Scenario()``."""
        with self._lock:
            self.clear()
            self._instances.forget()
            self._chaos.configure(None)
            self.one_job_per_vm = False
            self._operations.forget()
            self._scripts.clear()
            self._scripts_by_resource.clear()
            self.default = Scenario()

    # ---- the main listener's requests (the other host's: ArmHandler.answer_other_host) ------------
    def _on_request(self, h: ArmHandler) -> None:
        rec = h.receive(self._log)
        if rec is None:
            return
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
            self._log.violated(reply.violation)
            _LOG.info("arm-emulator: violation: %s", reply.violation)
        h.answer(rec, reply)

    # ---- decisions (checks: localdev.arm_checks; operations: localdev.arm_operations) ----------
    def _decide(self, h: ArmHandler, rec: RecordedRequest) -> Reply:
        m = self._path_re.match(rec.path)
        if m:
            rec.kind = "submit"
            return self._decide_submit(h, rec, m.group("resourceUri"))
        s = STATUS_PATH.match(rec.path)
        if s:
            rec.kind = "status"
            return self._decide_status(h, rec, s)
        i = self._instance_re.match(rec.path)
        if i:
            rec.kind = "instance"
            return self._decide_instance(h, rec, i.group("resourceUri"))
        return violation(rec, 404, "NotFound", f"No route for path '{rec.path}'.")

    def _check_call(
        self, h: ArmHandler, rec: RecordedRequest, method: str, resource_uri: str | None = None
    ) -> tuple[Reply | None, str | None]:
        return check_call(h, rec, method, self.identity, self.audience, self.api_version, resource_uri)

    def _admit(self, rec: RecordedRequest, kind: str, resource_uri: str, principal: str | None) -> Reply | None:
        """A checked call meets the throttle bucket, then chaos: their answer, or None to go on."""
        early = self._throttle.check(rec, kind, resource_uri, principal)
        if early:
            return early
        drawn = self._chaos.draw(subscription_of(resource_uri))
        if drawn is None:
            return None
        rec.chaos, reply = drawn
        return reply

    def _decide_submit(self, h: ArmHandler, rec: RecordedRequest, resource_uri: str) -> Reply:
        err, principal = self._check_call(h, rec, "POST", resource_uri)
        if err:
            return err
        err, body = check_body(h, rec, self.rules)
        if err:
            return err
        resource_uri = "/" + resource_uri
        checkpoint_id = body.get("id") if isinstance(body, dict) else None
        early = self._admit(rec, "writes", resource_uri, principal)
        if early:
            return early
        scenario = self.scenario_for(resource_uri, checkpoint_id)
        return self._operations.submit(resource_uri, checkpoint_id, scenario, self.endpoint, self.one_job_per_vm)

    def _decide_instance(self, h: ArmHandler, rec: RecordedRequest, resource_uri: str) -> Reply:
        err, principal = self._check_call(h, rec, "GET", resource_uri)
        if err:
            return err
        resource_uri = "/" + resource_uri
        early = self._admit(rec, "reads", resource_uri, principal)
        if early:
            return early
        return self._instances.answer_get(resource_uri, self.scenario_for(resource_uri, None), time.time())

    def _decide_status(self, h: ArmHandler, rec: RecordedRequest, m: re.Match) -> Reply:
        err, principal = self._check_call(h, rec, "GET")
        if err:
            return err
        op, missing = self._operations.find(m, rec.path)
        if op is None:
            return violation(rec, 404, "OperationNotFound", missing)
        early = self._admit(rec, "reads", op.resource_uri, principal)
        if early:
            return early
        return self._operations.status(op, rec, m.group("kind").lower() == "operationstatuses")
