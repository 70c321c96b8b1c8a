"""The ARM client: the deleteCheckpoint POST and the long-running operation's status GETs.

One `requests.Session` and one credential serve every call. A bearer token is only ever
sent over https to the host and port of ARM_ENDPOINT, and redirects are never followed.
Each call ends in an `ArmAnswer` that says what the answer means for the operation.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from azure.core.exceptions import AzureError
from requests.adapters import HTTPAdapter

from .logs import get_logger
from .pacing import ArmPacer
from .request import DeletionRequest

logger = get_logger(__name__)

OPERATION_PATH = "/providers/Microsoft.ScVmm/virtualMachineInstances/default/deleteCheckpoint"
PUBLIC_CLOUD_SCOPE = "https://management.azure.com/.default"
SOVEREIGN_SUFFIXES = (".usgovcloudapi.net", ".chinacloudapi.cn")
DEFAULT_TIMEOUT = (10.0, 60.0)  # connect, read (seconds)
TOKEN_REFRESH_MARGIN = 300  # seconds before expiry when a token is fetched anew

# Answer states
ACCEPTED = "accepted"  # 202 to the POST: an operation to track
RUNNING = "running"  # the operation is still running
SUCCEEDED = "succeeded"
FAILED = "failed"  # final failure; `error` says why
TRANSIENT = "transient"  # try again later; `error` is the last error seen

ASYNC_FINAL = {"succeeded": SUCCEEDED, "failed": FAILED, "canceled": FAILED, "cancelled": FAILED}


@dataclass(frozen=True)
class ArmAnswer:
    state: str
    status_code: int | None = None
    location: str | None = None
    async_url: str | None = None
    retry_after: float | None = None
    error: dict | None = None


def app_error(code: str, message: str, target: str | None = None) -> dict:
    return {"code": code, "message": message, "target": target, "details": [], "additionalInfo": []}


def arm_error(body) -> dict | None:
    """ARM's ErrorResponse error object, with every field of the contract present, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    error = body["error"]
    if not error.get("code") and not error.get("message"):
        return None
    return {
        "code": error.get("code"),
        "message": error.get("message"),
        "target": error.get("target"),
        "details": error.get("details") or [],
        "additionalInfo": error.get("additionalInfo") or [],
    }


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (integer seconds or an HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(int(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def arm_scope(arm_endpoint: str) -> str:
    host = urlsplit(arm_endpoint).hostname or ""
    if host.endswith(SOVEREIGN_SUFFIXES):
        return f"https://{host}/.default"
    return PUBLIC_CLOUD_SCOPE


class ArmClient:
    def __init__(
        self,
        credential,
        arm_endpoint: str,
        api_version: str,
        *,
        timeout=DEFAULT_TIMEOUT,
        pool_size=32,
        pacer: ArmPacer | None = None,
    ):
        self._credential = credential
        self._endpoint = arm_endpoint.rstrip("/")
        endpoint = urlsplit(self._endpoint)
        self._trusted_origin = (endpoint.hostname.lower(), endpoint.port or 443)
        self._api_version = api_version
        self._scope = arm_scope(arm_endpoint)
        self._timeout = timeout
        self._pacer = pacer or ArmPacer()
        self._token = None
        self._token_lock = threading.Lock()
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("https://", adapter)

    def close(self) -> None:
        self._session.close()

    def is_trusted(self, url: str | None) -> bool:
        """True when `url` may be sent a token: absolute https on ARM_ENDPOINT's host and port."""
        if not url:
            return False
        try:
            parts = urlsplit(url)
            origin = ((parts.hostname or "").lower(), parts.port or 443)
        except ValueError:
            return False
        return parts.scheme == "https" and not parts.username and not parts.password and origin == self._trusted_origin

    def operation_url(self, resource_uri: str) -> str:
        return f"{self._endpoint}{resource_uri}{OPERATION_PATH}?api-version={self._api_version}"

    def delete_checkpoint(self, request: DeletionRequest) -> ArmAnswer:
        body = {"id": request.checkpoint_id} if request.checkpoint_id is not None else {}
        self._paced("writes", request.resource_uri)
        response = self._send("POST", self.operation_url(request.resource_uri), json_body=body)
        if isinstance(response, ArmAnswer):
            return response
        if response.status_code == 202:
            async_url = response.headers.get("Azure-AsyncOperation")
            location = response.headers.get("Location") or async_url
            if not location:
                return ArmAnswer(
                    FAILED,
                    202,
                    error=app_error("OperationFailed", "ARM accepted the deletion but named no Location to follow"),
                )
            return ArmAnswer(
                ACCEPTED,
                202,
                location=location,
                async_url=async_url,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if response.status_code in (200, 204):
            return ArmAnswer(SUCCEEDED, response.status_code)
        return self._unsuccessful(response, error_body_is_final=False)

    def operation_status(self, url: str, *, is_async: bool, resource_uri: str | None = None) -> ArmAnswer:
        """GET a status URL (Location, or Azure-AsyncOperation when `is_async`) of an operation on `resource_uri`."""
        if not self.is_trusted(url):
            return ArmAnswer(
                FAILED, error=app_error("UntrustedOperationUrl", f"status URL is outside ARM_ENDPOINT: {url}")
            )
        self._paced("reads", resource_uri)
        response = self._send("GET", url)
        if isinstance(response, ArmAnswer):
            return response
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if response.status_code == 202:
            return ArmAnswer(RUNNING, 202, location=response.headers.get("Location"), retry_after=retry_after)
        if response.status_code == 204 or (response.status_code == 200 and not is_async):
            return ArmAnswer(SUCCEEDED, response.status_code)
        if response.status_code == 200:
            return self._async_status(response, retry_after)
        return self._unsuccessful(response, error_body_is_final=True)

    def _async_status(self, response: requests.Response, retry_after: float | None) -> ArmAnswer:
        try:
            body = response.json()
            status = str(body["status"])
        except (ValueError, KeyError, TypeError):
            return ArmAnswer(
                TRANSIENT,
                200,
                retry_after=retry_after,
                error=app_error("OperationFailed", "unreadable operation status body"),
            )
        state = ASYNC_FINAL.get(status.lower(), RUNNING)
        if state != FAILED:
            return ArmAnswer(state, 200, retry_after=retry_after)
        canceled = status.lower() in ("canceled", "cancelled")
        error = arm_error(body) or app_error(
            "OperationCanceled" if canceled else "OperationFailed", f"the operation ended with status {status}"
        )
        return ArmAnswer(FAILED, 200, error=error)

    def _unsuccessful(self, response: requests.Response, *, error_body_is_final: bool) -> ArmAnswer:
        status = response.status_code
        try:
            error = arm_error(response.json())
        except ValueError:
            error = None
        if 300 <= status < 400:
            return ArmAnswer(
                FAILED,
                status,
                error=app_error(
                    "OperationFailed",
                    f"ARM answered HTTP {status} (a redirect); redirects are not followed with a token",
                ),
            )
        if status in (408, 429) or (status >= 500 and not (error_body_is_final and error)):
            return ArmAnswer(
                TRANSIENT,
                status,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                error=error or app_error("HttpError", f"ARM answered HTTP {status}"),
            )
        if status >= 400:
            return ArmAnswer(
                FAILED,
                status,
                error=error or app_error("OperationFailed", f"ARM answered HTTP {status} with no error body"),
            )
        return ArmAnswer(FAILED, status, error=app_error("OperationFailed", f"unexpected answer HTTP {status}"))

    def _paced(self, kind: str, resource_uri: str | None) -> None:
        waited = self._pacer.wait(kind, resource_uri)
        if waited:
            logger.info("waited %.1f s to stay within ARM's %s limit for the subscription", waited, kind)

    def _bearer_token(self) -> str:
        """The cached token, fetched by one thread at a time when missing or within 5 minutes of expiry."""
        token = self._token
        if token is None or token.expires_on - time.time() < TOKEN_REFRESH_MARGIN:
            with self._token_lock:
                token = self._token
                if token is None or token.expires_on - time.time() < TOKEN_REFRESH_MARGIN:
                    token = self._token = self._credential.get_token(self._scope)
        return token.token

    def _send(self, method: str, url: str, json_body=None) -> requests.Response | ArmAnswer:
        try:
            token = self._bearer_token()
        except AzureError as exc:
            logger.warning("token request failed: %s", type(exc).__name__)
            return ArmAnswer(
                TRANSIENT,
                error=app_error("TokenRequestFailed", f"could not get a managed identity token: {exc.message}"),
            )
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "x-ms-client-request-id": str(uuid.uuid4()),  # ARM's support can trace a call by it
        }
        data = None
        if json_body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(json_body)
        started = time.monotonic()
        try:
            response = self._session.request(
                method, url, headers=headers, data=data, timeout=self._timeout, allow_redirects=False
            )
        except requests.Timeout:
            logger.warning("%s timed out", method)
            return ArmAnswer(
                TRANSIENT, error=app_error("Timeout", f"ARM did not answer the {method} within {self._timeout[1]:g} s")
            )
        except requests.RequestException as exc:
            logger.warning("%s failed: %s", method, type(exc).__name__)
            return ArmAnswer(
                TRANSIENT, error=app_error("ConnectionError", f"could not reach ARM: {type(exc).__name__}")
            )
        logger.info(
            "%s %s -> %s in %.0f ms (x-ms-client-request-id %s)",
            method,
            urlsplit(url).path,
            response.status_code,
            (time.monotonic() - started) * 1000,
            headers["x-ms-client-request-id"],
        )
        return response
