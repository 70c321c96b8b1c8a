"""What an ARM answer means for a deletion: its state, its error and when to ask again.

Everything taken from an answer (error bodies, Location headers, Retry-After) is cleaned and
bounded here, so nothing ARM sends can break an event, a tracking message or the app.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from enum import StrEnum

import requests

from .cleaning import clean_error, clean_text
from .errors import ErrorCode, app_error


class AnswerState(StrEnum):
    """What one answer of ARM means."""

    ACCEPTED = "accepted"  # 202 to the POST: an operation to track
    RUNNING = "running"  # the operation is still running
    SUCCEEDED = "succeeded"  # done; for an instance read: read, with `checkpoints`
    FAILED = "failed"  # final failure; `error` says why
    NOT_PERMITTED = "not-permitted"  # 401/403 on a status URL: the identity may not read operation statuses
    TRANSIENT = "transient"  # try again later; `error` is the last error seen


ASYNC_FINAL = {
    "succeeded": AnswerState.SUCCEEDED,
    "failed": AnswerState.FAILED,
    "canceled": AnswerState.FAILED,
    "cancelled": AnswerState.FAILED,
}
MAX_URL = 4096  # a longer status URL is not followed
MAX_RETRY_AFTER = 86400.0  # seconds; longer answers are read as this
DEFAULT_RETRY_AFTER = 60  # seconds, when ARM sends no Retry-After (contract section 1)


@dataclass(frozen=True)
class ArmAnswer:
    state: AnswerState
    status_code: int | None = None
    location: str | None = None
    async_url: str | None = None
    retry_after: float | None = None
    error: dict | None = None
    checkpoints: frozenset[str] | None = None  # an instance read: the checkpoint ids it lists
    entries: tuple[dict, ...] | None = None  # an instance read: its checkpoints (id, name, parent), as listed
    verified: dict | None = None  # the verification facts, when reading the instance decided the outcome


MAX_NAME = 1024  # longer than any checkpointID a request may name (256) or pattern may match


def transient(code: ErrorCode, message: str, status: int | None = None, retry_after: float | None = None) -> ArmAnswer:
    return ArmAnswer(AnswerState.TRANSIENT, status, retry_after=retry_after, error=app_error(code, message))


def arm_error(body) -> dict | None:
    """ARM's ErrorResponse error object, cleaned, with every member of the contract, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    error = clean_error(body["error"])
    return error if error["code"] or error["message"] else None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (integer seconds or an HTTP-date), or None; never raises."""
    if not value:
        return None
    value = value.strip()[:64]
    if value.isascii() and value.isdigit():  # str.isdigit() alone takes "²", which int() refuses
        return min(MAX_RETRY_AFTER, float(int(value[:9])) if len(value) <= 9 else MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
        seconds = when.timestamp() - (time.time() if now is None else now)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def header_url(response: requests.Response, name: str) -> str | None:
    """A URL header, cleaned; one over MAX_URL characters is cut (and so never trusted)."""
    value = response.headers.get(name)
    return clean_text(value, MAX_URL) if value else None


def _json(response: requests.Response):
    try:
        return response.json()
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return None


def submit_answer(response: requests.Response) -> ArmAnswer:
    """The POST's answer: 202 accepted, 200/204 done, or a failure (404 and 409 lead to verification)."""
    status = response.status_code
    if status == 202:
        async_url = header_url(response, "Azure-AsyncOperation")
        location = header_url(response, "Location") or async_url
        if not location:
            return ArmAnswer(
                AnswerState.FAILED,
                202,
                error=app_error(ErrorCode.OPERATION_FAILED, "ARM accepted the deletion but named no Location"),
            )
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return ArmAnswer(AnswerState.ACCEPTED, 202, location=location, async_url=async_url, retry_after=retry_after)
    if status in (200, 204):
        return ArmAnswer(AnswerState.SUCCEEDED, status)
    return _unsuccessful(response)


def status_answer(response: requests.Response, *, is_async: bool) -> ArmAnswer:
    """A status GET's answer (contract section 5, Poll)."""
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 202:
        return ArmAnswer(AnswerState.RUNNING, 202, location=header_url(response, "Location"), retry_after=retry_after)
    if status == 204 or (status == 200 and not is_async):
        return ArmAnswer(AnswerState.SUCCEEDED, status)
    if status == 200:
        return _async_status(_json(response), retry_after)
    if redirect := _redirect(status):
        return redirect
    error = arm_error(_json(response))
    if status in (401, 403):
        return ArmAnswer(AnswerState.NOT_PERMITTED, status, error=error or _no_body(status))
    if status >= 400 and (
        retry_after is not None or status in (408, 429, 502, 503, 504) or (status >= 500 and error is None)
    ):
        return ArmAnswer(AnswerState.TRANSIENT, status, retry_after=retry_after, error=error or _http_error(status))
    if status >= 400:
        return ArmAnswer(AnswerState.FAILED, status, error=error or _no_body(status))
    return ArmAnswer(
        AnswerState.FAILED, status, error=app_error(ErrorCode.OPERATION_FAILED, f"unexpected answer HTTP {status}")
    )


def instance_answer(response: requests.Response) -> ArmAnswer:
    """The VM instance GET's answer: SUCCEEDED with the checkpoint ids it lists, FAILED, or TRANSIENT."""
    status = response.status_code
    if status == 200:
        body = _json(response)
        checkpoints = _checkpoint_ids(body)
        if checkpoints is None:
            return transient(ErrorCode.OPERATION_FAILED, "unreadable VM instance body", 200)
        return ArmAnswer(AnswerState.SUCCEEDED, 200, checkpoints=checkpoints, entries=_checkpoint_entries(body))
    return _unsuccessful(response)


def _unsuccessful(response: requests.Response) -> ArmAnswer:
    """A POST's or an instance read's answer that is not a success: a redirect or a 4xx fails,
    408, 429 and 5xx are transient."""
    status = response.status_code
    if redirect := _redirect(status):
        return redirect
    error = arm_error(_json(response))
    if status in (408, 429) or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return ArmAnswer(AnswerState.TRANSIENT, status, retry_after=retry_after, error=error or _http_error(status))
    return ArmAnswer(AnswerState.FAILED, status, error=error or _no_body(status))


def _checkpoint_ids(body) -> frozenset[str] | None:
    """The checkpointIDs of `properties.infrastructureProfile.checkpoints`, or None when unreadable."""
    properties = body.get("properties") if isinstance(body, dict) else None
    profile = properties.get("infrastructureProfile") if isinstance(properties, dict) else None
    if not isinstance(profile, dict):
        return None
    checkpoints = profile.get("checkpoints", [])
    if not isinstance(checkpoints, list):
        return None
    return frozenset(
        c["checkpointID"] for c in checkpoints if isinstance(c, dict) and isinstance(c.get("checkpointID"), str)
    )


def _checkpoint_entries(body) -> tuple[dict, ...]:
    """The listed checkpoints with only what a policy reads (checkpointID, name, parentCheckpointID),
    strings only; an over-long name is cut (it can then match no pattern of at most 256 characters)."""
    entries = body["properties"]["infrastructureProfile"].get("checkpoints", [])
    kept = []
    for entry in entries:
        if isinstance(entry, dict):
            fields = {k: entry.get(k) for k in ("checkpointID", "name", "parentCheckpointID")}
            kept.append({k: v[:MAX_NAME] for k, v in fields.items() if isinstance(v, str)})
    return tuple(kept)


def _async_status(body, retry_after: float | None) -> ArmAnswer:
    status = body.get("status") if isinstance(body, dict) else None
    if not isinstance(status, str):
        return transient(ErrorCode.OPERATION_FAILED, "unreadable operation status body", 200, retry_after)
    state = ASYNC_FINAL.get(status.lower(), AnswerState.RUNNING)
    if state != AnswerState.FAILED:
        return ArmAnswer(state, 200, retry_after=retry_after)
    canceled = status.lower() in ("canceled", "cancelled")
    error = arm_error(body) or app_error(
        ErrorCode.OPERATION_CANCELED if canceled else ErrorCode.OPERATION_FAILED,
        f"the operation ended with status {status}",
    )
    return ArmAnswer(AnswerState.FAILED, 200, error=error)


def _redirect(status: int) -> ArmAnswer | None:
    if 300 <= status < 400:
        message = f"ARM answered HTTP {status} (a redirect); redirects are not followed with a token"
        return ArmAnswer(AnswerState.FAILED, status, error=app_error(ErrorCode.OPERATION_FAILED, message))
    return None


def _http_error(status: int) -> dict:
    return app_error(ErrorCode.HTTP_ERROR, f"ARM answered HTTP {status}")


def _no_body(status: int) -> dict:
    return app_error(ErrorCode.OPERATION_FAILED, f"ARM answered HTTP {status} with no error body")
