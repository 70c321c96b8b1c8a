"""Shared fixtures: the real local stand-ins (Azurite, the ARM emulator over HTTPS, the identity
endpoint) and a harness that runs the app's functions on them as the Functions host does."""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest
import trustme
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueServiceClient
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[1]
# Microsoft's OpenAPI document, beside the checkout; only tests/test_spec_drift.py reads it
SPEC_DIR = Path(os.environ.get("SCVMM_SPEC_DIR") or ROOT.parent / "shared" / "spec")

logging.getLogger("azure").setLevel(logging.WARNING)


def _is_loopback(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in (None, "localhost") or not isinstance(host, str):
        return True  # None: a bind to any address; non-str: not an internet address
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a name other than localhost


def _loopback_only(event: str, args) -> None:
    """No test sends traffic anywhere but the loopback: refuse other addresses and name lookups."""
    if event == "socket.connect" and isinstance(args[1], tuple) and not _is_loopback(args[1][0]):
        raise ConnectionRefusedError(f"tests may only connect to the loopback, not {args[1]!r}")
    if event == "socket.getaddrinfo" and not _is_loopback(args[0]):
        raise socket.gaierror(f"tests may only look up loopback names, not {args[0]!r}")


sys.addaudithook(_loopback_only)  # the SDK's HTTP logging drowns the app's

SUBMIT = "submit_checkpoint_deletion"
POLL = "poll_checkpoint_operations"
POISON = "report_poisoned_requests"
TERMINAL = ("ScVmm.CheckpointDelete.Succeeded", "ScVmm.CheckpointDelete.Failed")


def new_resource_uri(name: str | None = None) -> str:
    sub = uuid.uuid4()
    return f"/subscriptions/{sub}/resourceGroups/rg-test/providers/Microsoft.HybridCompute/machines/{name or 'vm1'}"


@pytest.fixture(scope="session")
def azurite():
    from localdev.azurite import Azurite

    with Azurite() as running:
        yield running


@pytest.fixture(scope="session")
def ca():
    return trustme.CA()


@pytest.fixture(scope="session")
def identity():
    from localdev.identity_endpoint import IdentityEndpoint

    with IdentityEndpoint() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def arm(ca, identity):
    from localdev.arm_emulator import ArmEmulator

    with ArmEmulator(ca, identity) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def topic(ca, identity):
    from localdev.eventgrid_endpoint import EventGridEndpoint

    with EventGridEndpoint(ca, identity) as endpoint:
        yield endpoint


@pytest.fixture
def spec_dir():
    if not SPEC_DIR.is_dir():
        pytest.skip(
            f"Microsoft's OpenAPI document is not beside the checkout ({SPEC_DIR} is absent): "
            "localdev/arm_operation.json is not compared with it"
        )
    return SPEC_DIR


# The schemas in schemas/, resolvable by their $id without any network
SCHEMA_DOCS = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in (ROOT / "schemas").glob("*.schema.json")}
SCHEMA_REGISTRY = Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in SCHEMA_DOCS.values())


def schema_validator(schema: dict) -> Draft202012Validator:
    return Draft202012Validator(schema, registry=SCHEMA_REGISTRY)  # no format_checker: formats are annotations


EVENT_SCHEMA = schema_validator(SCHEMA_DOCS["event.schema.json"])


class AppHarness:
    """The function app on the stand-ins, driven as the Functions host drives it."""

    def __init__(self, host, settings, services, connection_string: str):
        self.host = host
        self.settings = settings
        self.services = services
        service = QueueServiceClient.from_connection_string(connection_string)
        self.requests_queue = service.get_queue_client(settings.requests_queue)
        self.tracking_queue = service.get_queue_client(settings.tracking_queue)
        self.events_queue = service.get_queue_client(settings.events_queue)
        self.poison_queue = service.get_queue_client(settings.poison_queue)
        self.requests_queue.create_queue()
        self._events: list[dict] = []

    def send(self, request, encoding: str = "plain") -> str:
        """Put a request (a dict, or raw text) on the requests queue as a producer would."""
        text = request if isinstance(request, str) else json.dumps(request)
        if encoding == "base64":
            text = base64.b64encode(text.encode()).decode()
        return self.requests_queue.send_message(text).id

    def deliver(self) -> int:
        """One delivery round of the requests queue and of its poison queue."""
        handled = self.host.deliver_once(SUBMIT)
        return handled + self.host.deliver_once(POISON)

    def poll(self) -> None:
        self.host.fire(POLL)

    def events(self) -> list[dict]:
        """Every event written so far (the events queue is drained into this list)."""
        while True:
            batch = list(self.events_queue.receive_messages(messages_per_page=32, max_messages=32))
            if not batch:
                return list(self._events)
            for message in batch:
                event = json.loads(message.content)
                errors = [e.message for e in EVENT_SCHEMA.iter_errors(event)]
                assert not errors, f"an event the app wrote does not match schemas/event.schema.json: {errors}"
                self._events.append(event)
                self.events_queue.delete_message(message)

    def events_of(self, request_id: str) -> list[dict]:
        return [e for e in self.events() if e["data"].get("requestId") == request_id]

    def run(self, request_ids, timeout: float = 20.0) -> dict[str, list[dict]]:
        """Deliver and poll until every request has its terminal event; returns the events of each."""
        deadline = time.monotonic() + timeout
        while True:
            self.deliver()
            self.poll()
            by_request = {rid: self.events_of(rid) for rid in request_ids}
            if all(any(e["type"] in TERMINAL for e in events) for events in by_request.values()):
                return by_request
            if time.monotonic() > deadline:
                raise AssertionError(f"requests did not finish in {timeout} s: {by_request}")
            time.sleep(0.2)

    def count(self, queue) -> int:
        """Visible messages on `queue` (0 when the queue does not exist)."""
        try:
            return len(queue.peek_messages(max_messages=32))
        except ResourceNotFoundError:
            return 0


@pytest.fixture
def make_app(monkeypatch, azurite, identity, arm):
    """Builds the app with unique queues, its settings in the environment and fast retries.

    Keyword arguments override settings (by their names) and, for `host`, host.json values;
    `pacer`, `budgets`, `arm_timeout` and `publish_tries` (Event Grid, a second apart) go to the
    app's services.
    """
    import function_app
    from localdev.functions_host import LocalHost
    from shared.retry import RetryPolicy
    from shared.runtime import build_services, install_services, queue_host_settings
    from shared.settings import Settings

    hosts = []

    def build(
        host: dict | None = None,
        pacer=None,
        budgets=None,
        arm_timeout=(2.0, 1.5),
        publish_tries: int = 3,
        **settings_overrides,
    ) -> AppHarness:
        prefix = "t" + uuid.uuid4().hex[:12]
        env = {
            "AzureWebJobsStorage": azurite.connection_string,
            "CHECKPOINT_REQUESTS_QUEUE": f"{prefix}-requests",
            "CHECKPOINT_TRACKING_QUEUE": f"{prefix}-tracking",
            "CHECKPOINT_EVENTS_QUEUE": f"{prefix}-events",
            "ARM_ENDPOINT": arm.endpoint,
            "POLL_SCHEDULE": "*/1 * * * * *",
            "REQUESTS_CA_BUNDLE": arm.ca_bundle_path,
            **identity.env(),
            **settings_overrides,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        arm.reset()
        identity.reset_counts()

        settings = Settings.from_env()
        services = build_services(
            settings,
            max_deliveries=int(queue_host_settings()["maxDequeueCount"]),
            submit_retry=RetryPolicy(attempts=3, base_delay=0.05, max_delay=2.0),
            poll_retry=RetryPolicy(attempts=4, base_delay=0.05, max_delay=2.0),
            publish_retry=RetryPolicy(attempts=publish_tries, base_delay=1.0, max_delay=1.0),
            arm_timeout=arm_timeout,
            arm_pacer=pacer,
            **({"budgets": budgets} if budgets else {}),
        )
        install_services(services)
        local_host = LocalHost(
            function_app.app,
            settings=dict(os.environ),
            host_json=ROOT / "host.json",
            overrides={"visibilityTimeout": 0, "maxPollingInterval": 100, **(host or {})},
        )
        hosts.append(local_host)
        return AppHarness(local_host, settings, services, azurite.connection_string)

    yield build
    for local_host in hosts:
        local_host.stop()
    install_services(None)


@pytest.fixture
def app(make_app) -> AppHarness:
    return make_app()


@pytest.fixture
def no_proxies(monkeypatch):
    """Requests go straight to the loopback stand-ins, whatever proxies the environment names."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def blackhole():
    """An address on the loopback that takes connections and never answers: a service that hangs."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    try:
        yield listener.getsockname()
    finally:
        listener.close()
