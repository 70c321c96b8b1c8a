"""The table client of the app's table of VM turns (shared/vm_turns.py): one per process."""

from __future__ import annotations

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient

from .budgets import STORAGE_RETRIES
from .logs import get_logger
from .queues import storage_transport
from .settings import StorageConnection

logger = get_logger(__name__)


def _client(storage: StorageConnection, name: str, credential=None, **options) -> TableClient:
    if storage.connection_string:
        return TableClient.from_connection_string(storage.connection_string, name, **options)
    return TableClient(endpoint=storage.table_service_uri, table_name=name, credential=credential, **options)


def open_table(storage: StorageConnection, name: str, credential=None, pool_size: int = 32) -> TableClient:
    """A client for table `name` whose calls are bounded in time as the queues' are, the table
    created if missing."""
    endpoint = _client(storage, name, credential).url
    options = {
        "transport": storage_transport(endpoint, pool_size),
        "retry_total": STORAGE_RETRIES,
        "retry_backoff_factor": 1.0,
    }
    client = _client(storage, name, credential, **options)
    try:
        client.create_table()
        logger.info("created table %s", name)
    except ResourceExistsError:
        pass
    return client
