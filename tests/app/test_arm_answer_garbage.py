"""Whatever ARM answers, reading it never raises: garbage is a transient failure or a failure, never a
crash of the function (a crash in submit ends in the poison queue; in poll, the failure window would
never apply and the operation would end only at OperationTimedOut)."""

from __future__ import annotations

import json

import pytest
import requests

from shared.arm_answers import AnswerState, instance_answer, parse_retry_after, status_answer, submit_answer

DEEP = b"[" * 100_000


def answer(status: int, body: bytes = b"", headers: dict | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers.update(headers or {})
    response.encoding = "utf-8"
    return response


@pytest.mark.parametrize(
    "body",
    [b'{"properties": null}', b'{"properties": []}', b'{"properties": {"infrastructureProfile": null}}', DEEP, b"\xff"],
)
def test_an_unreadable_instance_is_a_transient_failure(body):
    assert instance_answer(answer(200, body)).state == AnswerState.TRANSIENT


def test_checkpoint_ids_that_are_no_strings_are_not_checkpoints():
    listed = [{"checkpointID": ["a"]}, {"checkpointID": {"b": 1}}, {"checkpointID": 7}, {"checkpointID": "cp-1"}]
    body = json.dumps({"properties": {"infrastructureProfile": {"checkpoints": listed}}}).encode()
    read = instance_answer(answer(200, body))
    assert (read.state, read.checkpoints) == (AnswerState.SUCCEEDED, frozenset({"cp-1"}))


@pytest.mark.parametrize("read", [lambda r: status_answer(r, is_async=False), submit_answer, instance_answer])
def test_a_5xx_nested_past_the_parser_s_depth_is_transient(read):
    assert read(answer(500, DEEP)).state == AnswerState.TRANSIENT


def test_a_status_url_nested_past_the_parser_s_depth_is_read_as_unreadable():
    assert status_answer(answer(200, DEEP), is_async=True).state in (AnswerState.TRANSIENT, AnswerState.FAILED)


@pytest.mark.parametrize("value", ["²", "³", "١٢", "12²"])  # digits to str.isdigit(), not to int()
def test_a_retry_after_of_digits_int_refuses_is_no_retry_after(value):
    assert parse_retry_after(value) is None
    assert submit_answer(answer(429, b"", {"Retry-After": value})).state == AnswerState.TRANSIENT
