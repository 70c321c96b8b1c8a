"""Where the app's queues are: the storage connection and the queue names, resolved like the app does.

Queue names and the storage connection go through ``shared.settings.Settings.from_env`` so that the
names, their defaults and their validation cannot drift from the app's. Only the settings the CLI
needs are handed to it (queue names and the AzureWebJobsStorage family), so a CLI user is never
stopped by an app-only setting (ARM_ENDPOINT, POLL_SCHEDULE, ...) in their environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.queue import ExponentialRetry, QueueClient

from shared.queues import queue_client
from shared.settings import IDENTITY_STORAGE_SETTINGS, STORAGE_SETTING, Settings, SettingsError, StorageConnection

QUEUE_SETTINGS = {
    "requests_queue": "CHECKPOINT_REQUESTS_QUEUE",
    "tracking_queue": "CHECKPOINT_TRACKING_QUEUE",
    "events_queue": "CHECKPOINT_EVENTS_QUEUE",
}
# Every environment variable that describes the storage connection (Settings.from_env reads these).
STORAGE_SETTINGS = (STORAGE_SETTING, *IDENTITY_STORAGE_SETTINGS, f"{STORAGE_SETTING}__accountName")
_STORAGE_LOCATORS = (STORAGE_SETTING, f"{STORAGE_SETTING}__queueServiceUri", f"{STORAGE_SETTING}__accountName")

DEFAULT_RETRIES = 3
CONNECTION_TIMEOUT = 10  # seconds to open a connection to the queue service
READ_TIMEOUT = 30  # seconds to wait for an answer


class UsageError(Exception):
    """The command line or the environment is wrong (exit code 2)."""


@dataclass(frozen=True)
class Target:
    storage: StorageConnection
    requests_queue: str
    tracking_queue: str
    events_queue: str
    poison_queue: str
    outbox_queue: str
    deadletter_queue: str


def resolve_target(
    *,
    connection_string: str | None = None,
    account_url: str | None = None,
    queue_names: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Target:
    """The storage connection and queue names from the flags, else the app's environment settings.

    `queue_names` maps requests_queue/tracking_queue/events_queue to a flag value (None = not given).
    """
    environ = os.environ if environ is None else environ
    env: dict[str, str] = {}
    for attribute, setting in QUEUE_SETTINGS.items():
        value = (queue_names or {}).get(attribute) or environ.get(setting)
        if value:
            env[setting] = value
    if connection_string:
        env[STORAGE_SETTING] = connection_string
    elif account_url:
        env[f"{STORAGE_SETTING}__queueServiceUri"] = account_url
    else:
        env.update({name: environ[name] for name in STORAGE_SETTINGS if environ.get(name)})
    if not any((env.get(name) or "").strip() for name in _STORAGE_LOCATORS):
        raise UsageError(
            "no storage connection: give --connection-string (UseDevelopmentStorage=true for Azurite) or "
            f"--account-url https://<account>.queue.core.windows.net, or set {STORAGE_SETTING} like the app does"
        )
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        raise UsageError(f"{exc} (queue names come from the --*-queue flags or the app's settings)") from None
    if not settings.storage.connection_string and urlsplit(settings.storage.queue_service_uri).scheme != "https":
        raise UsageError(
            f"{settings.storage.queue_service_uri!r}: an identity-based (Microsoft Entra) connection needs an https "
            "queue service URL; for Azurite use --connection-string"
        )
    return Target(
        storage=settings.storage,
        requests_queue=settings.requests_queue,
        tracking_queue=settings.tracking_queue,
        events_queue=settings.events_queue,
        poison_queue=settings.poison_queue,
        outbox_queue=settings.outbox_queue,
        deadletter_queue=settings.deadletter_queue,
    )


class Queues:
    """Queue clients for one target, with retries and timeouts suited to an interactive tool."""

    def __init__(self, storage: StorageConnection, retries: int = DEFAULT_RETRIES):
        self._storage = storage
        self._retries = retries
        self._credential = None

    def _options(self) -> dict:
        return {
            # The SDK's default waits 15 s, 18 s, 24 s between tries: far too long for a person.
            "retry_policy": ExponentialRetry(
                initial_backoff=1, increment_base=2, retry_total=self._retries, random_jitter_range=1
            ),
            "connection_timeout": CONNECTION_TIMEOUT,
            "read_timeout": READ_TIMEOUT,
        }

    def client(self, name: str) -> QueueClient:
        credential = None if self._storage.connection_string else self._token_credential()
        try:
            return queue_client(self._storage, name, credential, **self._options())
        except ValueError as exc:
            raise UsageError(f"the storage connection string is not usable: {exc}") from None

    def _token_credential(self):
        if self._credential is None:
            from azure.identity import DefaultAzureCredential  # slow to import; only identity connections need it

            client_id = self._storage.client_id
            self._credential = (
                DefaultAzureCredential(managed_identity_client_id=client_id) if client_id else DefaultAzureCredential()
            )
        return self._credential

    def close(self) -> None:
        if self._credential is not None:
            self._credential.close()
            self._credential = None


def ensure_queue(client: QueueClient) -> None:
    """Create the queue when it is missing (as the app does)."""
    try:
        client.create_queue()
    except ResourceExistsError:
        pass
    except HttpResponseError as exc:
        # A principal allowed to send but not to create: the queue may well exist; sending will tell.
        if exc.status_code != 403:
            raise


def public_url(client: QueueClient) -> str:
    """The queue's URL without any SAS token, safe to print."""
    parts = urlsplit(client.url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
