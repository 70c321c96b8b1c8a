"""The turns of VMs (shared/vm_turns.py) and the ids of policy deletions, on Azurite's tables and queues."""

from __future__ import annotations

import json
import uuid

import pytest
from azure.data.tables import TableTransactionError
from azure.storage.queue import QueueClient

from shared.policy_runs import child_request_id
from shared.request import MAX_TEXT_FIELD, decode_request
from shared.settings import Settings, StorageConnection
from shared.tables import open_table
from shared.turn_rows import TURN, vm_key
from shared.vm_turns import VmTurns
from tests.support.app_harness import new_resource_uri


@pytest.fixture
def turns(azurite):
    storage = StorageConnection(connection_string=azurite.connection_string)
    name = "t" + uuid.uuid4().hex[:12]
    table = open_table(storage, name + "turns")
    requests = QueueClient.from_connection_string(azurite.connection_string, name + "-requests")
    requests.create_queue()
    vm_turns = VmTurns(table, requests)
    yield vm_turns, table, requests
    table.delete_table()
    requests.delete_queue()


def facts(uri: str, request_id: str) -> dict:
    return {"resourceUri": uri, "requestId": request_id, "checkpointId": f"cp-{request_id}"}


def handed(requests) -> list[str]:
    return [json.loads(m.content)["requestId"] for m in requests.receive_messages(max_messages=32)]


def test_the_first_request_takes_the_vm_the_next_waits_and_gets_it_on_the_queue_when_it_is_given_back(turns):
    vm_turns, table, requests = turns
    uri = new_resource_uri()
    first = vm_turns.take(facts(uri, "a"))
    assert first is not None and first.tag
    assert vm_turns.take(facts(uri, "b")) is None  # waits
    assert vm_turns.take(facts(uri.upper().replace("/SUBSCRIPTIONS/", "/subscriptions/"), "c")) is None  # same VM
    assert vm_turns.take(facts(uri, "a"), redelivered=True) is not None  # a redelivery of the holder goes on
    assert vm_turns.take(facts(uri, "a")) is None  # a second copy of its message does not
    vm_turns.give_back(uri, "a", "succeeded", first.tag)
    assert handed(requests) == ["b"]
    assert table.get_entity(vm_key(uri), TURN)["holder"] == "b"
    vm_turns.give_back(uri, "a", "succeeded", first.tag)  # again: nothing happens
    assert table.get_entity(vm_key(uri), TURN)["holder"] == "b"
    vm_turns.give_back(uri, "b", "succeeded")
    vm_turns.give_back(uri, "c", "succeeded")
    assert list(table.query_entities("PartitionKey eq @pk", parameters={"pk": vm_key(uri)})) == []  # free


def test_a_request_handed_the_vm_decodes_as_it_arrived(turns):
    vm_turns, _, requests = turns
    uri = new_resource_uri()
    first = vm_turns.take(facts(uri, "a"))
    waiting = {**facts(uri, "b"), "correlationId": "c-1", "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    vm_turns.take(waiting)
    vm_turns.give_back(uri, "a", "failed", first.tag)
    (message,) = requests.receive_messages(max_messages=32)
    request = decode_request(message.content, message.id)
    assert (request.request_id, request.checkpoint_id, request.correlation_id) == ("b", "cp-b", "c-1")
    assert request.traceparent == waiting["traceparent"]


def test_a_request_delivered_twice_while_it_waits_is_handed_the_vm_once(turns):
    vm_turns, _, requests = turns
    uri = new_resource_uri()
    first = vm_turns.take(facts(uri, "a"))
    assert vm_turns.take(facts(uri, "b")) is None
    assert vm_turns.take(facts(uri, "b")) is None
    vm_turns.give_back(uri, "a", "succeeded", first.tag)
    vm_turns.give_back(uri, "b", "succeeded")
    assert handed(requests) == ["b"]


def test_the_next_holder_is_named_in_the_table_before_its_request_is_sent(turns, monkeypatch):
    # Before: the request was sent first; delivered before the table named it, it found itself still
    # waiting, its message was consumed, and the VM stayed held by a request that would never run.
    vm_turns, table, requests = turns
    uri = new_resource_uri()
    first = vm_turns.take(facts(uri, "a"))
    vm_turns.take(facts(uri, "b"))
    real, holders = requests.send_message, []

    def send_message(text, **kwargs):
        holders.append(table.get_entity(vm_key(uri), TURN)["holder"])
        assert vm_turns.take(json.loads(text)) is not None  # delivered at once: it runs
        return real(text, **kwargs)

    monkeypatch.setattr(requests, "send_message", send_message)
    vm_turns.give_back(uri, "a", "succeeded", first.tag)
    assert holders == ["b"]
    assert vm_turns.take(facts(uri, "b")) is None  # a second copy of the message (a send retried) is dropped


def test_a_crash_in_the_handover_is_mended_when_the_one_that_handed_it_on_comes_again(turns, monkeypatch):
    vm_turns, table, requests = turns
    uri = new_resource_uri()
    first = vm_turns.take(facts(uri, "a"))
    vm_turns.take(facts(uri, "b"))
    real = requests.send_message

    def crash(text, **kwargs):
        raise ConnectionError("the process died before b's request was sent")

    monkeypatch.setattr(requests, "send_message", crash)
    with pytest.raises(ConnectionError):
        vm_turns.give_back(uri, "a", "succeeded", first.tag)
    assert table.get_entity(vm_key(uri), TURN)["holder"] == "b"  # named, never sent
    monkeypatch.setattr(requests, "send_message", real)
    vm_turns.give_back(uri, "a", "succeeded", first.tag)  # a's tracking message comes again
    assert handed(requests) == ["b"]
    assert vm_turns.take(facts(uri, "a"), redelivered=True) is None  # or a's request message: the same
    assert handed(requests) == ["b"]
    assert vm_turns.take(facts(uri, "b")) is not None  # b arrives
    assert vm_turns.take(facts(uri, "a"), redelivered=True) is None  # now nothing is sent again
    assert vm_turns.take(facts(uri, "a")) is None  # nor for a copy of a's request
    assert handed(requests) == []


def test_conflicting_writes_are_retried_not_lost(turns, monkeypatch):
    vm_turns, table, _ = turns
    uri = new_resource_uri()
    vm_turns.take(facts(uri, "a"))
    real, calls = table.submit_transaction, []

    def another_instance_first(ops, **kwargs):
        calls.append(len(ops))
        if len(calls) == 1:  # another instance appends in between: the first transaction meets a changed ETag
            real_turns = VmTurns(table, None)
            assert real_turns.take(facts(uri, "x")) is None
        return real(ops, **kwargs)

    monkeypatch.setattr(table, "submit_transaction", another_instance_first)
    assert vm_turns.take(facts(uri, "b")) is None
    waiting = [
        e["requestId"]
        for e in table.query_entities(
            "PartitionKey eq @pk and RowKey ge 'w' and RowKey lt 'x'", parameters={"pk": vm_key(uri)}
        )
    ]
    assert waiting == ["x", "b"]  # both wait, in the order they got in


def test_a_transaction_error_other_than_a_conflict_is_raised(turns, monkeypatch):
    vm_turns, table, _ = turns
    uri = new_resource_uri()
    vm_turns.take(facts(uri, "a"))

    def refused(ops, **kwargs):
        raise TableTransactionError(message="InternalError", response=None)

    monkeypatch.setattr(table, "submit_transaction", refused)
    with pytest.raises(TableTransactionError):
        vm_turns.take(facts(uri, "b"))


@pytest.mark.parametrize(
    ("policy_id", "checkpoint_id"),
    [("p", "cp-1"), ("p" * 200, "c" * 56), ("p" * 200, "c" * 57), ("p" * 256, "c"), ("p" * 239, "c" * 256)],
)
def test_a_policy_deletion_s_request_id_is_the_policy_s_and_the_checkpoint_s_and_fits(policy_id, checkpoint_id):
    rid = child_request_id(policy_id, checkpoint_id)
    assert 1 <= len(rid) <= MAX_TEXT_FIELD and rid.isprintable()
    if len(policy_id) + 1 + len(checkpoint_id) <= MAX_TEXT_FIELD:
        assert rid == f"{policy_id}/{checkpoint_id}"
    else:
        assert rid != child_request_id(policy_id, checkpoint_id + "x")  # still one id per checkpoint
        assert rid.startswith(policy_id[:200])


@pytest.mark.parametrize(
    ("storage", "tables"),
    [
        ("UseDevelopmentStorage=true", True),
        ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=a2V5;EndpointSuffix=core.windows.net", True),
        ("AccountName=a;AccountKey=a2V5;QueueEndpoint=http://127.0.0.1:1/a;TableEndpoint=http://127.0.0.1:2/a", True),
        ("AccountName=a;AccountKey=a2V5;QueueEndpoint=http://127.0.0.1:1/a", False),  # no table service named
    ],
)
def test_a_connection_string_names_a_table_service_or_not(storage, tables):
    settings = Settings.from_env({"AzureWebJobsStorage": storage})
    assert settings.storage.has_tables is tables


def test_an_identity_connection_finds_the_table_service_of_the_same_account():
    env = {"AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net"}
    assert Settings.from_env(env).storage.table_service_uri == "https://acct.table.core.windows.net"
    env |= {"AzureWebJobsStorage__tableServiceUri": "https://other.table.example/"}
    assert Settings.from_env(env).storage.table_service_uri == "https://other.table.example"
    assert not Settings.from_env({"AzureWebJobsStorage__queueServiceUri": "https://127.0.0.1:1/a"}).storage.has_tables


def test_a_sweep_sends_again_a_request_handed_the_vm_that_never_came(turns, monkeypatch):
    vm_turns, table, requests = turns
    uri = new_resource_uri()
    first = vm_turns.take(facts(uri, "a"))
    vm_turns.take(facts(uri, "b"))
    monkeypatch.setattr(requests, "send_message", lambda *a, **k: None)  # b's request is lost on the way
    vm_turns.give_back(uri, "a", "succeeded", first.tag)
    monkeypatch.undo()
    assert vm_turns.sweep(stale_after=3600, resend_after=60) == 0  # not yet
    assert handed(requests) == []
    assert vm_turns.sweep(stale_after=3600, resend_after=0) == 1
    assert handed(requests) == ["b"]
    assert vm_turns.take(facts(uri, "b")) is not None  # it arrives
    assert vm_turns.sweep(stale_after=3600, resend_after=0) == 0  # and is not sent again


def test_a_sweep_passes_over_a_holder_older_than_any_operation_and_hands_the_vm_on(turns):
    vm_turns, table, requests = turns
    uri = new_resource_uri()
    vm_turns.take(facts(uri, "gone"))  # its message and tracking record are lost (a defect)
    vm_turns.take(facts(uri, "next"))
    assert vm_turns.sweep(stale_after=3600, resend_after=0) == 0  # held, but not for long
    assert vm_turns.sweep(stale_after=0, resend_after=0) == 1
    assert handed(requests) == ["next"]
    assert table.get_entity(vm_key(uri), TURN)["holder"] == "next"
