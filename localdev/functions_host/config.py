"""The host's configuration: host.json (``extensions.queues``, ``functionTimeout``) with the host's
defaults and TimeSpan durations, ``%SETTING%`` references, and local.settings.json ``Values``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MIN_POLLING_INTERVAL = 0.1  # the host's QueuePollingIntervals.Minimum (100 ms)


class HostConfigError(ValueError):
    """The app, its bindings, host.json or the settings cannot be run as the host would run them."""


# ------------------------------------------------------------------------------------------------
# durations (host.json TimeSpan values)
# ------------------------------------------------------------------------------------------------
_TIMESPAN = re.compile(
    r"^(?P<neg>-)?(?:(?P<days>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2})(?::(?P<s>\d{1,2})(?:\.(?P<f>\d{1,7}))?)?$"
)


def parse_duration(value: Any, *, what: str = "duration") -> float:
    """A host.json duration in seconds.

    Accepts what the host accepts for TimeSpan options: ``"hh:mm:ss[.fffffff]"``,
    ``"d.hh:mm:ss"``, ``"hh:mm"``, a bare whole number string meaning days (as .NET's
    TimeSpan.Parse reads it), and JSON numbers meaning milliseconds (as the host reads
    ``maxPollingInterval``). A :class:`datetime.timedelta` is taken as is.
    """
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise HostConfigError(f"{what}: {value!r} is not a duration")
    if isinstance(value, (int, float)):
        return float(value) / 1000.0
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return int(text) * 86400.0
        match = _TIMESPAN.match(text)
        if match:
            seconds = (
                int(match["days"] or 0) * 86400
                + int(match["h"]) * 3600
                + int(match["m"]) * 60
                + int(match["s"] or 0)
                + (int((match["f"] or "0").ljust(7, "0")) / 1e7)
            )
            if int(match["h"]) > 23 or int(match["m"]) > 59 or int(match["s"] or 0) > 59:
                raise HostConfigError(f"{what}: {value!r} is not a TimeSpan (hh:mm:ss)")
            return -seconds if match["neg"] else seconds
    raise HostConfigError(f'{what}: {value!r} is not a TimeSpan like "00:00:30" or a number of milliseconds')


# ------------------------------------------------------------------------------------------------
# options from host.json
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class QueueOptions:
    """host.json ``extensions.queues`` with the host's defaults (durations in seconds)."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"


@dataclasses.dataclass(frozen=True)
class HostOptions:
    queues: QueueOptions = QueueOptions()
    function_timeout: float | None = None  # seconds; None = no limit
    # Local-only knobs (not host.json): how long a received message stays invisible while its
    # function runs (the host uses 10 minutes and renews at half-time), and the thread count
    # (the Python worker's PYTHON_THREADPOOL_THREAD_COUNT).
    processing_visibility_timeout: float = 600.0
    max_workers: int | None = None


_QUEUE_KEYS = {
    "batchsize": "batchSize",
    "newbatchthreshold": "newBatchThreshold",
    "maxpollinginterval": "maxPollingInterval",
    "visibilitytimeout": "visibilityTimeout",
    "maxdequeuecount": "maxDequeueCount",
    "messageencoding": "messageEncoding",
}
_HOST_KEYS = {
    "functiontimeout": "functionTimeout",
    "processingvisibilitytimeout": "processingVisibilityTimeout",
    "maxworkers": "maxWorkers",
}


def _strip_json_comments(text: str) -> str:
    # host.json may carry // and /* */ comments (the host tolerates them); keep string literals.
    pattern = re.compile(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/', re.S)
    return pattern.sub(lambda m: m.group(1) or "", text)


def _lower_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k).lower(): _lower_keys(v) for k, v in value.items()}
    return value


def load_host_json(host_json: Path | str | Mapping[str, Any] | None) -> dict[str, Any]:
    """host.json as a dict with lower-cased keys (the host's configuration is case-insensitive)."""
    if host_json is None:
        return {}
    if isinstance(host_json, Mapping):
        return _lower_keys(host_json)
    path = Path(host_json)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise HostConfigError(f"cannot read host.json at {path}: {exc}") from exc
    try:
        data = json.loads(_strip_json_comments(text))
    except json.JSONDecodeError as exc:
        raise HostConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise HostConfigError(f"{path} must hold a JSON object")
    return _lower_keys(data)


def _int_option(value: Any, name: str, low: int, high: int | None = None) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise HostConfigError(f"{name}: {value!r} is not a whole number") from None
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise HostConfigError(f"{name}: {number} must be {bound}")
    return number


def build_options(host_json: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> HostOptions:
    """Merge host.json (lower-cased) and overrides (host.json key names) into HostOptions."""
    queues_raw = dict(((host_json.get("extensions") or {}).get("queues")) or {})
    host_raw = {k: host_json[k] for k in _HOST_KEYS if k in host_json}
    for key, value in (overrides or {}).items():
        low = key.lower()
        if low in _QUEUE_KEYS:
            queues_raw[low] = value
        elif low in _HOST_KEYS:
            host_raw[low] = value
        else:
            known = sorted([*_QUEUE_KEYS.values(), *_HOST_KEYS.values()])
            raise HostConfigError(f"unknown override {key!r}; known: {', '.join(known)}")

    batch_size = _int_option(queues_raw.get("batchsize", 16), "extensions.queues.batchSize", 1, 32)
    threshold = queues_raw.get("newbatchthreshold")
    new_batch_threshold = (
        batch_size // 2
        if threshold is None or threshold == -1
        else _int_option(threshold, "extensions.queues.newBatchThreshold", 0)
    )
    max_polling = parse_duration(
        queues_raw.get("maxpollinginterval", "00:01:00"), what="extensions.queues.maxPollingInterval"
    )
    if max_polling < MIN_POLLING_INTERVAL:
        raise HostConfigError(
            f"extensions.queues.maxPollingInterval must be at least 100 ms, got {max_polling * 1000:g} ms"
        )
    visibility = parse_duration(
        queues_raw.get("visibilitytimeout", "00:00:00"), what="extensions.queues.visibilityTimeout"
    )
    if visibility < 0 or visibility > 7 * 86400:
        raise HostConfigError("extensions.queues.visibilityTimeout must be between 0 and 7 days")
    max_dequeue = _int_option(queues_raw.get("maxdequeuecount", 5), "extensions.queues.maxDequeueCount", 1)
    encoding = str(queues_raw.get("messageencoding", "base64")).strip().lower()
    if encoding not in ("base64", "none"):
        raise HostConfigError(f'extensions.queues.messageEncoding must be "base64" or "none", got {encoding!r}')

    timeout_raw = host_raw.get("functiontimeout")
    function_timeout: float | None = None
    if timeout_raw is not None:
        function_timeout = parse_duration(timeout_raw, what="functionTimeout")
        if function_timeout < 0:  # "-1" / "-00:00:01": unbounded
            function_timeout = None
    processing_visibility = parse_duration(
        host_raw.get("processingvisibilitytimeout", "00:10:00"), what="processingVisibilityTimeout"
    )
    if processing_visibility < 1:
        raise HostConfigError("processingVisibilityTimeout must be at least 1 second")
    max_workers = host_raw.get("maxworkers")
    if max_workers is not None:
        max_workers = _int_option(max_workers, "maxWorkers", 1)

    return HostOptions(
        queues=QueueOptions(
            batch_size=batch_size,
            new_batch_threshold=new_batch_threshold,
            max_polling_interval=max_polling,
            visibility_timeout=visibility,
            max_dequeue_count=max_dequeue,
            message_encoding=encoding,
        ),
        function_timeout=function_timeout,
        processing_visibility_timeout=processing_visibility,
        max_workers=max_workers,
    )


# ------------------------------------------------------------------------------------------------
# %SETTING% references
# ------------------------------------------------------------------------------------------------
_SETTING_REF = re.compile(r"%([^%]+)%")


def resolve_setting_refs(value: str, settings: Mapping[str, str], *, where: str = "binding") -> str:
    """Replace every ``%NAME%`` in ``value`` with ``settings[NAME]``, as the host does."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        resolved = settings.get(name)
        if resolved is None:
            raise HostConfigError(f"{where}: '%{name}%' does not resolve to a value: app setting {name!r} is not set")
        return str(resolved)

    return _SETTING_REF.sub(substitute, value)


# ------------------------------------------------------------------------------------------------
# local.settings.json
# ------------------------------------------------------------------------------------------------
def load_local_settings(path: Path, environ: dict[str, str] | os._Environ[str] | None = None) -> int:
    """Copy local.settings.json ``Values`` into ``environ`` (default os.environ) without
    replacing variables already set, as ``func start`` does. Returns how many were set."""
    environ = os.environ if environ is None else environ
    try:
        data = json.loads(_strip_json_comments(path.read_text(encoding="utf-8-sig")))
    except (OSError, json.JSONDecodeError) as exc:
        raise HostConfigError(f"cannot read {path}: {exc}") from exc
    if data.get("IsEncrypted"):
        raise HostConfigError(f"{path} is encrypted; decrypt it first (func settings decrypt)")
    values = data.get("Values") or {}
    if not isinstance(values, dict):
        raise HostConfigError(f"{path}: Values must be an object")
    count = 0
    for key, value in values.items():
        if key not in environ and value is not None:
            environ[key] = str(value)
            count += 1
    return count
