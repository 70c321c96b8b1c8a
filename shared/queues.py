"""Queue clients for the app's queues (and its tools): one per queue per process."""

from __future__ import annotations

from azure.core.exceptions import ResourceExistsError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.queue import ExponentialRetry, QueueClient

from .budgets import STORAGE_RETRIES, STORAGE_TIMEOUT
from .connections import ca_bundle, endpoint_session
from .logs import get_logger
from .settings import StorageConnection

logger = get_logger(__name__)


def bounded_options(endpoint: str, pool_size: int = 32) -> dict:
    """SDK options that bound every storage call (see `budgets`): the SDK's defaults would retry
    a hung call for minutes (three retries, 15 s apart and more, each with a 60 s read timeout).
    The pool holds a connection for each thread that uses the client at once; the environment's
    proxy and CA settings for `endpoint` are read once (`connections`), not on every call."""
    return {
        "connection_timeout": STORAGE_TIMEOUT[0],
        "read_timeout": STORAGE_TIMEOUT[1],
        "retry_policy": ExponentialRetry(
            initial_backoff=1, increment_base=2, retry_total=STORAGE_RETRIES, random_jitter_range=0.5
        ),
        "transport": storage_transport(endpoint, pool_size),
    }


def storage_transport(endpoint: str, pool_size: int) -> RequestsTransport:
    """The HTTP transport of a storage client (queues, the table of VM turns): calls bounded by
    STORAGE_TIMEOUT, a pool of `pool_size` connections, the environment read once for `endpoint`."""
    return RequestsTransport(
        session=endpoint_session(endpoint, pool_size),
        session_owner=True,
        connection_timeout=STORAGE_TIMEOUT[0],
        read_timeout=STORAGE_TIMEOUT[1],
        connection_verify=ca_bundle(),
    )


def queue_client(storage: StorageConnection, name: str, credential=None, **options) -> QueueClient:
    """A client for queue `name`; `credential` serves identity-based connections, `options` go to the SDK."""
    if storage.connection_string:
        return QueueClient.from_connection_string(storage.connection_string, name, **options)
    return QueueClient(account_url=storage.queue_service_uri, queue_name=name, credential=credential, **options)


def open_queue(storage: StorageConnection, name: str, credential=None, pool_size: int = 32) -> QueueClient:
    """A client for queue `name` whose calls are bounded in time, the queue created if missing."""
    endpoint = queue_client(storage, name, credential).url
    client = queue_client(storage, name, credential, **bounded_options(endpoint, pool_size))
    try:
        client.create_queue()
        logger.info("created queue %s", name)
    except ResourceExistsError:
        pass
    return client
