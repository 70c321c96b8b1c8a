"""Every error the app builds itself, in the shape of ARM's error object (contract section 4).

ARM's own errors are read from its answers (`arm_answers.arm_error`); the ones here say what the
app decided: the contract's codes, and the codes of transient failures, which a `RetriesExhausted`
carries as its last error.
"""

from __future__ import annotations

from enum import StrEnum

from .cleaning import clean_text


class ErrorCode(StrEnum):
    # the contract's codes of a Failed event
    INVALID_REQUEST = "InvalidRequest"
    OPERATION_TIMED_OUT = "OperationTimedOut"
    RETRIES_EXHAUSTED = "RetriesExhausted"
    UNTRUSTED_OPERATION_URL = "UntrustedOperationUrl"
    OPERATION_FAILED = "OperationFailed"  # a failure with no ARM error body
    OPERATION_CANCELED = "OperationCanceled"
    # a policy request's Failed event (ScVmm.CheckpointPolicy.Failed)
    POLICIES_UNAVAILABLE = "PoliciesUnavailable"  # no table service: policies cannot run
    # transient failures (the last error of a RetriesExhausted)
    TIMEOUT = "Timeout"
    CONNECTION_ERROR = "ConnectionError"
    TOKEN_REQUEST_FAILED = "TokenRequestFailed"
    OUT_OF_TIME = "OutOfTime"  # no time left in the step's budget for the call
    HTTP_ERROR = "HttpError"  # a transient HTTP status with no error body


def app_error(code: ErrorCode | str, message: str, target: str | None = None) -> dict:
    """An error object with every member of the contract's shape."""
    return {"code": str(code), "message": clean_text(message), "target": target, "details": [], "additionalInfo": []}


def invalid_request(message: str, target: str) -> dict:
    return app_error(ErrorCode.INVALID_REQUEST, message, target)


def untrusted_operation_url(url: str) -> dict:
    return app_error(ErrorCode.UNTRUSTED_OPERATION_URL, f"status URL is outside ARM_ENDPOINT: {url}")


def operation_timed_out(seconds: int) -> dict:
    return app_error(ErrorCode.OPERATION_TIMED_OUT, f"the operation was still running {seconds} s after submission")


def retries_exhausted(last_error: dict | None, tries: str) -> dict:
    """RetriesExhausted, saying how many tries were made and carrying the last error seen."""
    error = app_error(ErrorCode.RETRIES_EXHAUSTED, f"transient failures did not stop within the retry budget ({tries})")
    if last_error:
        message = f"{error['message']}; last error: {last_error.get('code')}: {last_error.get('message')}"
        error["message"] = clean_text(message)  # at most 4 KiB, as every string of an event
        error["details"] = [last_error]
    return error


def poisoned() -> dict:
    """RetriesExhausted for a request message the host moved to the poison queue."""
    return app_error(
        ErrorCode.RETRIES_EXHAUSTED, "the request message was moved to the poison queue after its last delivery failed"
    )
