"""Queue clients for the app's queues: one per queue per process, the queue created when missing."""

from __future__ import annotations

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from .logs import get_logger
from .settings import StorageConnection

logger = get_logger(__name__)


def open_queue(storage: StorageConnection, name: str, credential=None) -> QueueClient:
    """A client for queue `name` (created if missing); `credential` serves identity-based connections."""
    if storage.connection_string:
        client = QueueClient.from_connection_string(storage.connection_string, name)
    else:
        client = QueueClient(account_url=storage.queue_service_uri, queue_name=name, credential=credential)
    try:
        client.create_queue()
        logger.info("created queue %s", name)
    except ResourceExistsError:
        pass
    return client
