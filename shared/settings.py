"""The app's settings (contract section 2), read from the environment and validated once."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

STORAGE_SETTING = "AzureWebJobsStorage"

DEFAULTS = {
    "CHECKPOINT_REQUESTS_QUEUE": "checkpoint-delete-requests",
    "CHECKPOINT_TRACKING_QUEUE": "checkpoint-delete-tracking",
    "CHECKPOINT_EVENTS_QUEUE": "checkpoint-delete-events",
    "ARM_ENDPOINT": "https://management.azure.com",
    "ARM_API_VERSION": "2024-06-01",
    "POLL_SCHEDULE": "*/15 * * * * *",
    "OPERATION_TIMEOUT_SECONDS": "86400",
    "POLL_FAILURE_WINDOW_SECONDS": "3600",
    "AZURE_SDK_HTTP_LOGGING": "false",
    "CHECKPOINT_TURNS_TABLE": "checkpointturns",
}

# Every setting the app reads (contract section 2); the identity-based storage connection is
# the AzureWebJobsStorage__* family instead of AzureWebJobsStorage itself.
SETTING_NAMES = (
    STORAGE_SETTING,
    *DEFAULTS,
    "AZURE_CLIENT_ID",
    "EVENTGRID_TOPIC_ENDPOINT",
)
IDENTITY_STORAGE_SETTINGS = (
    f"{STORAGE_SETTING}__queueServiceUri",
    f"{STORAGE_SETTING}__tableServiceUri",
    f"{STORAGE_SETTING}__credential",
    f"{STORAGE_SETTING}__clientId",
)

# Table names: 3-63 letters and digits, a letter first.
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
# Storage queue names: 3-63 characters, lowercase letters, digits and single hyphens.
_QUEUE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


def binding_setting(name: str, environ: Mapping[str, str] = os.environ) -> str:
    """A trigger binding's value for the setting `name`: `%name%` when the setting is there (the host
    resolves it), else the setting's default. The host cannot resolve a reference to a missing
    setting (the function would not start), and the contract gives these settings defaults."""
    return f"%{name}%" if environ.get(name) else DEFAULTS[name]


@dataclass(frozen=True)
class StorageConnection:
    """Where the queues (and the table of VM turns) live: a connection string, or service URIs
    reached with an identity."""

    connection_string: str | None = None
    queue_service_uri: str | None = None
    client_id: str | None = None
    table_service_uri: str | None = None

    @property
    def has_tables(self) -> bool:
        """Whether the connection names a table service. A connection string does unless it lists
        endpoints without a TableEndpoint (the SDK would make one up on the public cloud)."""
        if not self.connection_string:
            return bool(self.table_service_uri)
        parts = dict(p.split("=", 1) for p in self.connection_string.split(";") if "=" in p)
        names = {name.strip().lower() for name in parts}
        if "tableendpoint" in names or "usedevelopmentstorage" in names:
            return True
        return not ({"queueendpoint", "blobendpoint", "fileendpoint"} & names)


@dataclass(frozen=True)
class Settings:
    storage: StorageConnection
    requests_queue: str
    tracking_queue: str
    events_queue: str
    arm_endpoint: str
    arm_api_version: str
    client_id: str | None
    poll_schedule: str
    operation_timeout_seconds: int
    eventgrid_topic_endpoint: str | None
    poll_failure_window_seconds: int = 3600
    turns_table: str = DEFAULTS["CHECKPOINT_TURNS_TABLE"]
    sdk_http_logging: bool = False  # the Azure SDK's log line of every storage and Event Grid request

    @property
    def poison_queue(self) -> str:
        return f"{self.requests_queue}-poison"

    @property
    def outbox_queue(self) -> str:
        """Events waiting to be published to Event Grid."""
        return f"{self.events_queue}-outbox"

    @property
    def deadletter_queue(self) -> str:
        """Events that Event Grid refused for good, each with the reason."""
        return f"{self.events_queue}-deadletter"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str:
            value = (env.get(name) or "").strip()
            return value or DEFAULTS[name]

        queues = {}
        for name in ("CHECKPOINT_REQUESTS_QUEUE", "CHECKPOINT_TRACKING_QUEUE", "CHECKPOINT_EVENTS_QUEUE"):
            queues[name] = get(name)
            if not _QUEUE_NAME.match(queues[name]):
                raise SettingsError(
                    f"{name}={queues[name]!r} is not a valid storage queue name "
                    "(3-63 lowercase letters, digits and single hyphens)"
                )
        if len(queues["CHECKPOINT_REQUESTS_QUEUE"]) > 56:
            raise SettingsError(
                "CHECKPOINT_REQUESTS_QUEUE must be at most 56 characters so that its '-poison' queue is a valid name"
            )
        if len(queues["CHECKPOINT_EVENTS_QUEUE"]) > 52:
            raise SettingsError(
                "CHECKPOINT_EVENTS_QUEUE must be at most 52 characters so that its '-outbox' and '-deadletter' "
                "queues are valid names"
            )
        if len(set(queues.values())) != 3:
            raise SettingsError(
                "CHECKPOINT_REQUESTS_QUEUE, _TRACKING_QUEUE and _EVENTS_QUEUE must be three different queues"
            )

        arm_endpoint = _https_base_url("ARM_ENDPOINT", get("ARM_ENDPOINT"))
        api_version = get("ARM_API_VERSION")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", api_version):
            raise SettingsError(f"ARM_API_VERSION={api_version!r} is not an api-version like 2024-06-01")

        timeout = _positive_seconds("OPERATION_TIMEOUT_SECONDS", get("OPERATION_TIMEOUT_SECONDS"))
        failure_window = _positive_seconds("POLL_FAILURE_WINDOW_SECONDS", get("POLL_FAILURE_WINDOW_SECONDS"))

        schedule = get("POLL_SCHEDULE")
        if len(schedule.split()) != 6:
            raise SettingsError(
                f"POLL_SCHEDULE={schedule!r} must be an NCRONTAB expression of six fields, seconds first"
            )

        http_logging = get("AZURE_SDK_HTTP_LOGGING").lower()
        if http_logging not in ("true", "false"):
            raise SettingsError(f"AZURE_SDK_HTTP_LOGGING={http_logging!r} must be true or false")

        turns_table = get("CHECKPOINT_TURNS_TABLE")
        if not _TABLE_NAME.match(turns_table):
            raise SettingsError(
                f"CHECKPOINT_TURNS_TABLE={turns_table!r} is not a valid table name (3-63 letters and digits, a letter first)"
            )

        topic = (env.get("EVENTGRID_TOPIC_ENDPOINT") or "").strip() or None
        if topic:
            topic = _https_base_url("EVENTGRID_TOPIC_ENDPOINT", topic, allow_path=True)

        return cls(
            storage=_storage_connection(env),
            requests_queue=queues["CHECKPOINT_REQUESTS_QUEUE"],
            tracking_queue=queues["CHECKPOINT_TRACKING_QUEUE"],
            events_queue=queues["CHECKPOINT_EVENTS_QUEUE"],
            arm_endpoint=arm_endpoint,
            arm_api_version=api_version,
            client_id=(env.get("AZURE_CLIENT_ID") or "").strip() or None,
            poll_schedule=schedule,
            operation_timeout_seconds=timeout,
            eventgrid_topic_endpoint=topic,
            poll_failure_window_seconds=failure_window,
            turns_table=turns_table,
            sdk_http_logging=http_logging == "true",
        )


def _positive_seconds(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a whole number of seconds") from None
    if value <= 0:
        raise SettingsError(f"{name}={value} must be positive")
    return value


def _https_base_url(name: str, value: str, allow_path: bool = False) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise SettingsError(f"{name}={value!r} must be an absolute https URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise SettingsError(f"{name}={value!r} must not carry a query, fragment or credentials")
    if not allow_path and parts.path not in ("", "/"):
        raise SettingsError(f"{name}={value!r} must be a base URL without a path")
    return value.rstrip("/")


def _storage_connection(env: Mapping[str, str]) -> StorageConnection:
    connection_string = (env.get(STORAGE_SETTING) or "").strip()
    if connection_string:
        return StorageConnection(connection_string=connection_string)
    uri = (env.get(f"{STORAGE_SETTING}__queueServiceUri") or "").strip()
    account = (env.get(f"{STORAGE_SETTING}__accountName") or "").strip()
    if not uri and account:
        uri = f"https://{account}.queue.core.windows.net"
    if not uri:
        raise SettingsError(
            f"{STORAGE_SETTING} is not set: give a connection string (UseDevelopmentStorage=true for Azurite) "
            f"or {STORAGE_SETTING}__queueServiceUri (or __accountName) for an identity-based connection"
        )
    if urlsplit(uri).scheme not in ("https", "http"):
        raise SettingsError(f"{STORAGE_SETTING}__queueServiceUri={uri!r} must be an absolute URL")
    client_id = (env.get(f"{STORAGE_SETTING}__clientId") or "").strip() or None
    tables = (env.get(f"{STORAGE_SETTING}__tableServiceUri") or "").strip()
    if not tables and account:
        tables = f"https://{account}.table.core.windows.net"
    if not tables and (host := urlsplit(uri).hostname or "").split(".")[1:2] == ["queue"]:
        tables = uri.replace(f"{host.split('.')[0]}.queue.", f"{host.split('.')[0]}.table.", 1)  # the same account
    if tables and urlsplit(tables).scheme not in ("https", "http"):
        raise SettingsError(f"{STORAGE_SETTING}__tableServiceUri={tables!r} must be an absolute URL")
    return StorageConnection(
        queue_service_uri=uri.rstrip("/"), client_id=client_id, table_service_uri=tables.rstrip("/") or None
    )
