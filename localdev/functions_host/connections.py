"""Storage connections as the host resolves them (connection strings, ``UseDevelopmentStorage``,
identity-based sections), and :class:`Queues`: the queue clients the listeners and output
bindings share, and the wake-up a sent message gives the listener of its queue."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Mapping
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueServiceClient

from localdev.functions_host.config import HostConfigError

DEV_ACCOUNT_NAME = "devstoreaccount1"
# Azurite's documented, public development account key (not a secret).
DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEFAULT_CONNECTION = "AzureWebJobsStorage"
_QUEUE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")


class Queues:
    """Queue clients for the functions' bindings (one service client per connection name, shared)
    and the host's SharedQueueWatcher: a message this host sends wakes that queue's listener."""

    def __init__(self, settings: Mapping[str, str]) -> None:
        self.settings = settings
        self._service_clients: dict[str, QueueServiceClient] = {}
        self._watchers: list[tuple[QueueClient, threading.Event]] = []

    def client(self, connection: str, queue_name: str, where: str) -> QueueClient:
        """A client for ``queue_name`` on the connection named ``connection`` (default
        AzureWebJobsStorage); ``where`` names the binding in errors."""
        if not queue_name:
            raise HostConfigError(f"{where}: queueName is empty")
        if not _QUEUE_NAME.fullmatch(queue_name):
            raise HostConfigError(
                f"{where}: {queue_name!r} is not a valid queue name (3-63 lowercase letters, digits, single hyphens)"
            )
        connection = connection or DEFAULT_CONNECTION
        service = self._service_clients.get(connection)
        if service is None:
            service = self._service_clients[connection] = _make_service_client(connection, self.settings, where)
        return service.get_queue_client(queue_name)

    def watch(self, client: QueueClient) -> threading.Event:
        """The event a listener of ``client``'s queue waits on; set when this host sends there."""
        wake = threading.Event()
        self._watchers.append((client, wake))
        return wake

    def notify(self, client: QueueClient) -> None:
        for watched, wake in self._watchers:
            if watched.queue_name == client.queue_name and watched.url == client.url:
                wake.set()


def send_message(client: QueueClient, text: str) -> None:
    """Send ``text``, creating the queue if it does not exist yet."""
    try:
        client.send_message(text)
    except ResourceNotFoundError:
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
        client.send_message(text)


def _dev_storage_connection_string(value: str) -> str:
    parts = dict(p.split("=", 1) for p in value.strip().rstrip(";").split(";") if "=" in p)
    parts = {k.strip().lower(): v.strip() for k, v in parts.items()}
    proxy = parts.get("developmentstorageproxyuri")
    if proxy:
        endpoint = f"{proxy.rstrip('/')}:10001/{DEV_ACCOUNT_NAME}"
    else:
        endpoint = f"http://127.0.0.1:10001/{DEV_ACCOUNT_NAME}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT_NAME};"
        f"AccountKey={DEV_ACCOUNT_KEY};QueueEndpoint={endpoint};"
    )


def _make_service_client(connection: str, settings: Mapping[str, str], where: str) -> QueueServiceClient:
    """The host's lookup: ``AzureWebJobs<name>`` then ``<name>``; each either a connection string
    or an identity-based section (``<name>__queueServiceUri`` / ``__serviceUri`` /
    ``__accountName``, with ``__credential``, ``__clientId``, ``__tenantId``, ``__clientSecret``)."""
    candidates = [f"AzureWebJobs{connection}", connection]
    for candidate in candidates:
        value = (settings.get(candidate) or "").strip()
        if value:
            if re.search(r"(?i)(^|;)\s*UseDevelopmentStorage\s*=\s*true", value):
                value = _dev_storage_connection_string(value)
            try:
                return QueueServiceClient.from_connection_string(value)
            except ValueError as exc:
                raise HostConfigError(
                    f"{where}: app setting {candidate!r} is not a storage connection string: {exc}"
                ) from None
        section = {
            k[len(candidate) + 2 :].lower(): v for k, v in settings.items() if k.startswith(f"{candidate}__") and v
        }
        if section:
            uri = section.get("queueserviceuri") or section.get("serviceuri")
            if not uri and section.get("accountname"):
                uri = f"https://{section['accountname']}.queue.core.windows.net"
            if not uri:
                raise HostConfigError(
                    f"{where}: identity-based connection {candidate!r} needs {candidate}__queueServiceUri "
                    f"(or __serviceUri / __accountName)"
                )
            return QueueServiceClient(uri.rstrip("/"), credential=_identity_credential(section))
    raise HostConfigError(
        f"{where}: storage connection {connection!r} is not configured: set app setting {connection!r} "
        f"to a connection string (UseDevelopmentStorage=true for Azurite) or {connection}__queueServiceUri "
        f"for an identity-based connection"
    )


def _identity_credential(section: Mapping[str, str]) -> Any:
    from azure.identity import ClientSecretCredential, DefaultAzureCredential, ManagedIdentityCredential

    client_id = section.get("clientid")
    if section.get("credential", "").lower() == "managedidentity":
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    if client_id and section.get("tenantid") and section.get("clientsecret"):
        return ClientSecretCredential(section["tenantid"], client_id, section["clientsecret"])
    return DefaultAzureCredential(managed_identity_client_id=client_id) if client_id else DefaultAzureCredential()
