"""The ARM client: the deleteCheckpoint POST, the operation's status GETs and the VM instance read.

One `requests.Session` and one token cache serve every call. A bearer token is only ever sent
over https to the host and port of ARM_ENDPOINT, and redirects are never followed. Each call is
bounded: its pacing wait, its wait for a token and its timeouts fit the caller's deadline.
Each call ends in an `ArmAnswer` (see `arm_answers`) that says what the answer means.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit

import requests
import urllib3

from . import telemetry
from .arm_answers import (
    MAX_URL,
    AnswerState,
    ArmAnswer,
    instance_answer,
    parse_retry_after,
    status_answer,
    submit_answer,
    transient,
)
from .budgets import ARM_TIMEOUT, DEFAULT_BUDGETS, Budgets, Deadline
from .connections import endpoint_session
from .errors import ErrorCode, untrusted_operation_url
from .logs import get_logger
from .pacing import ArmPacer
from .request import DeletionRequest
from .tokens import TokenCache, TokenUnavailable

logger = get_logger(__name__)

INSTANCE_PATH = "/providers/Microsoft.ScVmm/virtualMachineInstances/default"
OPERATION_PATH = f"{INSTANCE_PATH}/deleteCheckpoint"
PUBLIC_CLOUD_SCOPE = "https://management.azure.com/.default"
SOVEREIGN_SUFFIXES = (".usgovcloudapi.net", ".chinacloudapi.cn")
MIN_CALL_SECONDS = 1.0  # a call with less time left than this is not made
MAX_ANSWER_BYTES = 1024 * 1024  # more of an answer's body is not read
BUCKETS = {"submit": "writes", "status": "reads", "instance": "reads"}  # ARM's rate-limit bucket of each call


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
        timeout=ARM_TIMEOUT,
        budgets: Budgets = DEFAULT_BUDGETS,
        pool_size=32,
        pacer: ArmPacer | None = None,
    ):
        self._endpoint = arm_endpoint.rstrip("/")
        endpoint = urlsplit(self._endpoint)
        self._trusted_origin = (endpoint.hostname.lower(), endpoint.port or 443)
        self._api_version = api_version
        self._tokens = TokenCache(credential, arm_scope(arm_endpoint))
        self._timeout = timeout
        self._budgets = budgets
        self._pacer = pacer if pacer is not None else ArmPacer()
        self._session = endpoint_session(self._endpoint, pool_size)  # environment read once, not per call

    def close(self) -> None:
        self._session.close()

    def is_trusted(self, url: str | None) -> bool:
        """True when `url` may be sent a token: absolute https on ARM_ENDPOINT's host and port."""
        if not url or len(url) >= MAX_URL or not url.isprintable():
            return False
        try:
            parts = urlsplit(url)
            origin = ((parts.hostname or "").lower(), parts.port or 443)
        except ValueError:
            return False
        return parts.scheme == "https" and not parts.username and not parts.password and origin == self._trusted_origin

    def operation_url(self, resource_uri: str) -> str:
        return f"{self._endpoint}{resource_uri}{OPERATION_PATH}?api-version={self._api_version}"

    def instance_url(self, resource_uri: str) -> str:
        return f"{self._endpoint}{resource_uri}{INSTANCE_PATH}?api-version={self._api_version}"

    def delete_checkpoint(self, request: DeletionRequest, deadline: Deadline | None = None) -> ArmAnswer:
        body = {"id": request.checkpoint_id} if request.checkpoint_id is not None else {}
        url = self.operation_url(request.resource_uri)
        response = self._call("POST", url, "submit", request.resource_uri, deadline, body)
        return response if isinstance(response, ArmAnswer) else submit_answer(response)

    def operation_status(
        self, url: str, *, is_async: bool, resource_uri: str | None = None, deadline: Deadline | None = None
    ) -> ArmAnswer:
        """GET a status URL (Location, or Azure-AsyncOperation when `is_async`) of an operation on `resource_uri`."""
        if not self.is_trusted(url):
            return ArmAnswer(AnswerState.FAILED, error=untrusted_operation_url(url))
        response = self._call("GET", url, "status", resource_uri, deadline)
        return response if isinstance(response, ArmAnswer) else status_answer(response, is_async=is_async)

    def read_instance(self, resource_uri: str, deadline: Deadline | None = None) -> ArmAnswer:
        """GET the VM instance: SUCCEEDED with the checkpoint ids it lists, FAILED, or TRANSIENT."""
        response = self._call("GET", self.instance_url(resource_uri), "instance", resource_uri, deadline)
        return response if isinstance(response, ArmAnswer) else instance_answer(response)

    def _call(
        self,
        method: str,
        url: str,
        call: str,
        resource_uri: str | None,
        deadline: Deadline | None,
        body=None,
    ) -> requests.Response | ArmAnswer:
        """Pace, take a token and send, all within `deadline`; a failure on the way is a transient answer.

        `call` says what the call is (submit, status, instance), and so which of ARM's rate-limit
        buckets it draws on (BUCKETS)."""
        connect, _ = self._timeout
        if deadline is not None and deadline.remaining() < connect + MIN_CALL_SECONDS:
            return transient(ErrorCode.OUT_OF_TIME, f"no time was left for the {method} within this step's budget")
        tel = telemetry.current()
        with tel.arm_span(call, method, url) as span:
            response = self._paced_call(method, url, BUCKETS[call], resource_uri, deadline, body, tel)
            tel.arm_answered(span, call, response)
        return response

    def _paced_call(self, method, url, kind, resource_uri, deadline, body, tel) -> requests.Response | ArmAnswer:
        connect, read = self._timeout
        waited = self._pacer.wait(kind, resource_uri, max_wait=self._within(deadline, self._budgets.pacing_wait))
        tel.arm_paced(kind, waited)
        if waited:
            logger.info("waited %.1f s to stay within ARM's %s limit for the subscription", waited, kind)
        try:
            token = self._tokens.token(self._within(deadline, self._budgets.token_wait))
        except TokenUnavailable as exc:
            logger.warning("token request failed: %s", exc)
            return transient(ErrorCode.TOKEN_REQUEST_FAILED, f"could not get a managed identity token: {exc}")
        read = self._within(deadline, read, keep=connect)
        if read < MIN_CALL_SECONDS:
            return transient(ErrorCode.OUT_OF_TIME, f"no time was left for the {method} within this step's budget")
        response = self._send(method, url, token, body, (connect, read))
        if not isinstance(response, ArmAnswer):
            self._learn(kind, resource_uri, response)
        return response

    def _learn(self, kind: str, resource_uri: str | None, response: requests.Response) -> None:
        """Tell the pacer what ARM said of its rate-limit bucket (shared with other instances)."""
        remaining = response.headers.get(f"x-ms-ratelimit-remaining-subscription-{kind}", "")
        pause = None
        if response.status_code == 429:
            pause = parse_retry_after(response.headers.get("Retry-After"))
            pause = min(60.0, pause) if pause is not None else 1.0
        left = float(int(remaining[:9])) if remaining.isascii() and remaining.isdigit() else None
        self._pacer.observe(kind, resource_uri, left, pause)

    @staticmethod
    def _within(deadline: Deadline | None, seconds: float, keep: float = 0.0) -> float:
        """`seconds`, or less when the deadline (less `keep` seconds) comes sooner."""
        return seconds if deadline is None else max(0.0, min(seconds, deadline.remaining() - keep))

    def _send(self, method: str, url: str, token: str, body, timeout: tuple[float, float]):
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "x-ms-client-request-id": str(uuid.uuid4()),  # ARM's support can trace a call by it
        }
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        try:
            response = self._session.request(
                method, url, headers=headers, data=data, timeout=timeout, allow_redirects=False, stream=True
            )
            _read_bounded(response)
        except (requests.Timeout, urllib3.exceptions.TimeoutError):
            logger.warning("%s timed out", method)
            return transient(ErrorCode.TIMEOUT, f"ARM did not answer the {method} within {timeout[1]:g} s")
        except Exception as exc:  # requests', and urllib3's while the body is read
            logger.warning("%s failed: %s", method, type(exc).__name__)
            return transient(ErrorCode.CONNECTION_ERROR, f"could not reach ARM: {type(exc).__name__}")
        logger.info(
            "%s %s -> %s in %.0f ms (x-ms-client-request-id %s, x-ms-request-id %s)",
            method,
            urlsplit(url).path,
            response.status_code,
            response.elapsed.total_seconds() * 1000,
            headers["x-ms-client-request-id"],
            (response.headers.get("x-ms-request-id") or "")[:64],
        )
        return response


def _read_bounded(response: requests.Response) -> None:
    """Read at most MAX_ANSWER_BYTES of the body; a longer one is cut and its connection dropped."""
    try:
        content = response.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True) or b""
    except Exception:
        response.raw.close()
        raise
    if len(content) > MAX_ANSWER_BYTES:
        response.raw.close()  # the rest is never read: the connection cannot be reused
        content = b""  # a cut body is not JSON; the answer counts as one without a body
    response._content = content
    response._content_consumed = True
    response.close()  # hands a fully read connection back to the pool
