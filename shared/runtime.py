"""The process's one set of clients and steps, built from the settings at first use."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from azure.identity import ManagedIdentityCredential

from .arm_client import DEFAULT_TIMEOUT, ArmClient
from .eventgrid import PUBLISH_RETRY, EventGridForwarder
from .events import EventWriter
from .pacing import ArmPacer
from .poll import Poller
from .queues import open_queue
from .retry import POLL_RETRY, SUBMIT_RETRY, RetryPolicy
from .settings import Settings
from .submit import PoisonHandler, Submitter
from .tracking import TrackingStore

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"

# How long one poll run may take: well below host.json's functionTimeout (10 minutes).
POLL_BUDGET_SECONDS = 240.0


@dataclass
class Services:
    settings: Settings
    arm: ArmClient
    submitter: Submitter
    poller: Poller
    poison: PoisonHandler
    forwarder: EventGridForwarder | None = None

    def poll(self, thread_init: Callable[[], None] | None = None) -> None:
        """One poll run: due operations, then events waiting for Event Grid."""
        self.poller.run(POLL_BUDGET_SECONDS, thread_init=thread_init)
        if self.forwarder is not None:
            self.forwarder.retry_pending()

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
    arm_timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    arm_pacer: ArmPacer | None = None,
) -> Services:
    credentials: dict[str | None, ManagedIdentityCredential] = {}

    def credential(client_id: str | None) -> ManagedIdentityCredential:
        if client_id not in credentials:
            credentials[client_id] = (
                ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
            )
        return credentials[client_id]

    storage_credential = None if settings.storage.connection_string else credential(settings.storage.client_id)
    tracking_queue = open_queue(settings.storage, settings.tracking_queue, storage_credential)
    events_queue = open_queue(settings.storage, settings.events_queue, storage_credential)
    arm = ArmClient(
        credential(settings.client_id),
        settings.arm_endpoint,
        settings.arm_api_version,
        timeout=arm_timeout,
        pacer=arm_pacer,
    )
    tracking = TrackingStore(tracking_queue)
    forwarder = None
    if settings.eventgrid_topic_endpoint:
        from azure.eventgrid import EventGridPublisherClient

        publisher = EventGridPublisherClient(settings.eventgrid_topic_endpoint, credential(settings.client_id))
        outbox = open_queue(settings.storage, settings.outbox_queue, storage_credential)
        forwarder = EventGridForwarder(publisher, outbox, publish_retry)
    events = EventWriter(events_queue, forwarder)
    return Services(
        settings=settings,
        arm=arm,
        submitter=Submitter(arm, tracking, events, max_deliveries=max_deliveries, retry=submit_retry),
        poller=Poller(arm, tracking, events, settings.operation_timeout_seconds, retry=poll_retry),
        poison=PoisonHandler(events),
        forwarder=forwarder,
    )


_lock = threading.Lock()
_services: Services | None = None


def get_services() -> Services:
    """The process's services, built on first use from the environment and host.json."""
    global _services
    with _lock:
        if _services is None:
            max_deliveries = int(queue_host_settings().get("maxDequeueCount", 5))
            _services = build_services(Settings.from_env(), max_deliveries)
        return _services


def install_services(services: Services | None) -> None:
    """Replace the process's services (a local host or a test that tunes them); None forgets them."""
    global _services
    with _lock:
        if _services is not None and _services is not services:
            _services.close()
        _services = services
