"""The process's one set of clients and steps, built from the settings at first use."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from azure.identity import ManagedIdentityCredential

from . import telemetry
from .arm_client import ArmClient
from .budgets import ARM_TIMEOUT, DEFAULT_BUDGETS, EVENTGRID_TIMEOUT, IDENTITY_TIMEOUT, Budgets, Deadline
from .eventgrid import PUBLISH_RETRY, EventGridForwarder
from .events import EventWriter
from .logs import get_logger
from .pacing import ArmPacer
from .poison import PoisonHandler
from .policy_runs import PolicyRuns
from .poll import Poller
from .queues import open_queue
from .retry import POLL_RETRY, SUBMIT_RETRY, RetryPolicy
from .settings import Settings
from .submit import Submitter
from .tables import open_table
from .tracking import TrackingStore
from .vm_turns import VmTurns

logger = get_logger(__name__)

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
POLL_CONCURRENCY = 16
SUBMIT_CONCURRENCY = 24  # host.json: batchSize + newBatchThreshold

# The Functions worker sets the root logger to INFO: unless AZURE_SDK_HTTP_LOGGING asks for it, the
# SDK's HTTP logging policy would ship a multi-line record of every storage and Event Grid request
# to Application Insights.
HTTP_LOGGING = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
HTTP_LOGGING.setLevel(logging.WARNING)
# azure-eventgrid warns on every publish that the per-call timeouts are "not a known attribute"
# of its event model; they are the transport's, and they are applied.
logging.getLogger("azure.eventgrid._legacy._generated._serialization").setLevel(logging.ERROR)


@dataclass
class Services:
    settings: Settings
    arm: ArmClient
    submitter: Submitter
    poller: Poller
    poison: PoisonHandler
    forwarder: EventGridForwarder | None = None

    budgets: Budgets = DEFAULT_BUDGETS

    def poll(self, thread_init: Callable[[], None] | None = None) -> None:
        """One poll run: due operations and, beside them, events waiting for Event Grid (a busy
        run must not hold them back); then what the run itself wrote, within the outbox's budget."""
        if self.forwarder is None:
            self.poller.run(thread_init=thread_init)
            return
        polled = threading.Event()
        beside = threading.Thread(target=self._forward_while, args=(polled, thread_init), name="outbox", daemon=True)
        beside.start()
        try:
            self.poller.run(thread_init=thread_init)
        finally:
            polled.set()
            beside.join(self.budgets.outbox_run)
        self._forward(Deadline(self.budgets.outbox_run))

    def _forward_while(self, polled: threading.Event, thread_init: Callable[[], None] | None) -> None:
        if thread_init is not None:
            thread_init()
        deadline = Deadline(self.budgets.poll_run)
        while not polled.is_set() and deadline.remaining() > 0:
            self._forward(deadline)
            polled.wait(1.0)  # events failing to go wait out their backoff invisible: a look a second is cheap

    def _forward(self, deadline: Deadline) -> None:
        try:
            self.forwarder.forward(deadline)
        except Exception:  # storage failing: the outbox keeps its events for a later run
            logger.exception("Event Grid outbox: forwarding failed; the events wait for a later run")

    def close(self) -> None:
        self.poller.close()
        self.arm.close()


def queue_host_settings(path: Path = HOST_JSON) -> dict:
    """host.json's extensions.queues section."""
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("extensions", {}).get("queues", {})


def build_services(
    settings: Settings,
    max_deliveries: int,
    *,
    submit_retry: RetryPolicy = SUBMIT_RETRY,
    poll_retry: RetryPolicy = POLL_RETRY,
    publish_retry: RetryPolicy = PUBLISH_RETRY,
    arm_timeout: tuple[float, float] = ARM_TIMEOUT,
    arm_pacer: ArmPacer | None = None,
    budgets: Budgets = DEFAULT_BUDGETS,
) -> Services:
    HTTP_LOGGING.setLevel(logging.INFO if settings.sdk_http_logging else logging.WARNING)
    credentials: dict[str | None, ManagedIdentityCredential] = {}

    def credential(client_id: str | None) -> ManagedIdentityCredential:
        if client_id not in credentials:
            # bounded: the token cache waits for a fetch at most budgets.token_wait anyway
            options = {"connection_timeout": IDENTITY_TIMEOUT[0], "read_timeout": IDENTITY_TIMEOUT[1], "retry_total": 1}
            credentials[client_id] = ManagedIdentityCredential(client_id=client_id, **options)
        return credentials[client_id]

    workers = SUBMIT_CONCURRENCY + POLL_CONCURRENCY
    storage_credential = None if settings.storage.connection_string else credential(settings.storage.client_id)

    def queue(name: str):
        return open_queue(settings.storage, name, storage_credential, pool_size=workers)

    arm = ArmClient(
        credential(settings.client_id),
        settings.arm_endpoint,
        settings.arm_api_version,
        timeout=arm_timeout,
        budgets=budgets,
        pool_size=workers,
        pacer=arm_pacer,
    )
    tracking = TrackingStore(queue(settings.tracking_queue))
    telemetry.current().watch(tracking)  # the in-flight gauge
    forwarder = outbox = None
    if settings.eventgrid_topic_endpoint:
        from azure.eventgrid import EventGridPublisherClient

        # retries off: the outbox is the retry
        publisher = EventGridPublisherClient(
            settings.eventgrid_topic_endpoint, credential(settings.client_id), retry_total=0
        )
        outbox = queue(settings.outbox_queue)
        deadletter = queue(settings.deadletter_queue)
        forwarder = EventGridForwarder(publisher, outbox, deadletter, publish_retry, EVENTGRID_TIMEOUT)
    events = EventWriter(queue(settings.events_queue), outbox)
    turns = runs = None
    if settings.storage.has_tables:
        table = open_table(settings.storage, settings.turns_table, storage_credential, pool_size=workers)
        turns = VmTurns(table, queue(settings.requests_queue))
        runs = PolicyRuns(table, turns, events)
    else:
        logger.warning(
            "the storage connection names no table service: one operation per VM at a time and retention "
            "policies are off (set AzureWebJobsStorage__tableServiceUri, or a TableEndpoint)"
        )
    poller = Poller(
        arm,
        tracking,
        events,
        settings.operation_timeout_seconds,
        settings.poll_failure_window_seconds,
        retry=poll_retry,
        budgets=budgets,
        concurrency=POLL_CONCURRENCY,
        turns=turns,
    )
    return Services(
        settings=settings,
        arm=arm,
        submitter=Submitter(
            arm,
            tracking,
            events,
            max_deliveries=max_deliveries,
            retry=submit_retry,
            budgets=budgets,
            turns=turns,
            runs=runs,
        ),
        poller=poller,
        poison=PoisonHandler(
            arm, events, retry=submit_retry, budgets=budgets, turns=turns, runs=runs, tracking=tracking
        ),
        forwarder=forwarder,
        budgets=budgets,
    )


_lock = threading.Lock()
_services: Services | None = None


def get_services() -> Services:
    """The process's services, built on first use from the environment and host.json."""
    global _services
    with _lock:
        if _services is None:
            max_deliveries = int(queue_host_settings().get("maxDequeueCount", 5))
            telemetry.configure_telemetry()  # once: on only with APPLICATIONINSIGHTS_CONNECTION_STRING
            _services = build_services(Settings.from_env(), max_deliveries)
        return _services


def install_services(services: Services | None) -> None:
    """Replace the process's services (a local host or a test that tunes them); None forgets them."""
    global _services
    with _lock:
        if _services is not None and _services is not services:
            _services.close()
        _services = services
