"""The ARM client against the ARM emulator: how each answer is read, and where a token may go."""

from __future__ import annotations

import email.utils
import time

import pytest
from azure.identity import ManagedIdentityCredential

from localdev.arm_emulator import Fault, Scenario
from shared.arm_answers import AnswerState, parse_retry_after
from shared.arm_client import ArmClient, arm_scope
from shared.request import DeletionRequest
from tests.support.app_harness import new_resource_uri


@pytest.fixture
def client(monkeypatch, arm, identity):
    for name, value in identity.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", arm.ca_bundle_path)
    arm.reset()
    made = ArmClient(ManagedIdentityCredential(), arm.endpoint, "2024-06-01", timeout=(2.0, 1.5))
    yield made
    made.close()


def _request(checkpoint_id: str | None = "cp") -> DeletionRequest:
    return DeletionRequest(resource_uri=new_resource_uri(), request_id="r", checkpoint_id=checkpoint_id)


def test_accepted_with_location_and_retry_after(client, arm):
    arm.default = Scenario(retry_after=7)
    answer = client.delete_checkpoint(_request())
    assert (answer.state, answer.status_code, answer.retry_after, answer.async_url) == (
        AnswerState.ACCEPTED,
        202,
        7,
        None,
    )
    assert client.is_trusted(answer.location)


def test_retry_after_as_an_http_date(client, arm):
    arm.default = Scenario(retry_after=30, retry_after_http_date=True)
    answer = client.delete_checkpoint(_request())
    assert 25 <= answer.retry_after <= 31


def test_accepted_with_only_an_azure_async_operation_header(client, arm):
    url = arm.endpoint + "/providers/Microsoft.ScVmm/locations/local/operationStatuses/x?api-version=2024-06-01"
    arm.default = Scenario(submit=Fault(status=202, headers={"Azure-AsyncOperation": url}))
    answer = client.delete_checkpoint(_request())
    assert (answer.state, answer.location, answer.async_url) == (AnswerState.ACCEPTED, url, url)


def test_accepted_without_any_status_url_is_a_failure(client, arm):
    arm.default = Scenario(submit=Fault(status=202))
    answer = client.delete_checkpoint(_request())
    assert (answer.state, answer.error["code"]) == (AnswerState.FAILED, "OperationFailed")


def test_a_redirect_on_submit_is_a_failure_and_not_followed(client, arm):
    arm.default = Scenario(submit=Fault(status=307, location=arm.other_host_endpoint + "/x"))
    answer = client.delete_checkpoint(_request())
    assert (answer.state, answer.status_code) == (AnswerState.FAILED, 307)
    assert arm.other_host_received == []


@pytest.mark.parametrize(
    ("fault", "state"),
    [
        (Fault.throttled(3), AnswerState.TRANSIENT),
        (Fault(status=408), AnswerState.TRANSIENT),
        (Fault(status=502), AnswerState.TRANSIENT),
        (Fault.arm_error(503, "ServerBusy"), AnswerState.TRANSIENT),  # on submit, any 5xx is transient
        (Fault.arm_error(403, "AuthorizationFailed"), AnswerState.FAILED),
        (Fault(status=404), AnswerState.FAILED),
    ],
)
def test_submit_answers(client, arm, fault, state):
    arm.default = Scenario(submit=fault)
    answer = client.delete_checkpoint(_request())
    assert answer.state == state
    assert answer.error["code"]
    if fault.retry_after:
        assert answer.retry_after == 3


def test_status_answers_on_the_location_and_the_async_url(client, arm):
    arm.default = Scenario(submit="accepted_async", done_after_polls=1, final="Succeeded")
    accepted = client.delete_checkpoint(_request())
    running = client.operation_status(accepted.async_url, is_async=True)
    done = client.operation_status(accepted.async_url, is_async=True)
    assert (running.state, done.state) == (AnswerState.RUNNING, AnswerState.SUCCEEDED)


def test_a_slow_answer_is_a_timeout(client, arm):
    arm.default = Scenario(submit_faults=[Fault.slow(3.0)])
    started = time.monotonic()
    answer = client.delete_checkpoint(_request())
    assert (answer.state, answer.error["code"]) == (AnswerState.TRANSIENT, "Timeout")
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(
    "url",
    [
        "http://{host}/providers/x",  # not https
        "https://{host}.evil.example/providers/x",  # another host
        "https://user:pw@{host}/providers/x",  # credentials in the URL
        "/providers/x",  # relative
        "",
        None,
    ],
)
def test_untrusted_status_urls_get_no_request(client, arm, url):
    host = arm.endpoint.split("://", 1)[1]
    url = url.format(host=host) if url else url
    assert not client.is_trusted(url)
    if url:
        answer = client.operation_status(url, is_async=False)
        assert answer.error["code"] == "UntrustedOperationUrl"
    assert arm.received == []


def test_another_port_on_the_same_host_is_untrusted(client, arm):
    assert not client.is_trusted(arm.endpoint.rsplit(":", 1)[0] + ":1/providers/x")
    assert client.is_trusted(arm.endpoint + "/providers/x")
    assert not client.is_trusted(arm.other_host_endpoint + "/providers/x")


def test_retry_after_parsing():
    now = time.time()
    assert parse_retry_after("12") == 12
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert 59 <= parse_retry_after(email.utils.formatdate(now + 60, usegmt=True), now=now) <= 60
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0


def test_token_scope_per_cloud():
    assert arm_scope("https://management.azure.com") == "https://management.azure.com/.default"
    assert arm_scope("https://127.0.0.1:8443") == "https://management.azure.com/.default"
    assert arm_scope("https://management.usgovcloudapi.net") == "https://management.usgovcloudapi.net/.default"
    assert arm_scope("https://management.chinacloudapi.cn") == "https://management.chinacloudapi.cn/.default"


def test_rate_limit_headers_of_such_digits_do_not_crash_the_call(client, arm):
    odd = {"x-ms-ratelimit-remaining-subscription-writes": "³"}
    arm.default = Scenario(submit_faults=[Fault(status=429, retry_after="²", headers=odd)])
    assert client.delete_checkpoint(_request()).state == AnswerState.TRANSIENT
