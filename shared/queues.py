"""Queue clients for the app's queues (and its tools): one per queue per process."""

from __future__ import annotations

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from .logs import get_logger
from .settings import StorageConnection

logger = get_logger(__name__)


def queue_client(storage: StorageConnection, name: str, credential=None, **options) -> QueueClient:
    """A client for queue `name`; `credential` serves identity-based connections, `options` go to the SDK."""
    if storage.connection_string:
        return QueueClient.from_connection_string(storage.connection_string, name, **options)
    return QueueClient(account_url=storage.queue_service_uri, queue_name=name, credential=credential, **options)


def open_queue(storage: StorageConnection, name: str, credential=None) -> QueueClient:
    """A client for queue `name`, the queue created if missing."""
    client = queue_client(storage, name, credential)
    try:
        client.create_queue()
        logger.info("created queue %s", name)
    except ResourceExistsError:
        pass
    return client
