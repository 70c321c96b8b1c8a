"""The fault modes of the local stand-ins, seen by plain HTTP clients: the identity endpoint's
hang and garbage windows, the Event Grid topic's downtime and rejected ids, and Azurite keeping
its queues on disk across a restart."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import uuid

import pytest
import requests
from azure.storage.queue import QueueServiceClient

from localdev.arm_emulator import ArmEmulator
from localdev.azurite import Azurite
from localdev.eventgrid_endpoint import AUDIENCE, EventGridEndpoint
from localdev.identity_endpoint import IdentityEndpoint

ARM = "https://management.azure.com"
RESOURCE = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.ScVmm/virtualMachines/vm1"


@pytest.fixture
def idp():
    with IdentityEndpoint() as endpoint:
        yield endpoint


@pytest.fixture
def topic(ca, idp):
    with EventGridEndpoint(ca, idp) as endpoint:
        yield endpoint


def ask_token(idp: IdentityEndpoint, timeout: float = 10.0) -> requests.Response:
    return requests.get(
        idp.endpoint,
        params={"api-version": "2019-08-01", "resource": ARM},
        headers={"X-IDENTITY-HEADER": idp.header_secret, "Metadata": "true"},
        timeout=timeout,
    )


def publish(topic: EventGridEndpoint, ids: list[str], idp: IdentityEndpoint, timeout: float = 10.0):
    batch = [{"specversion": "1.0", "id": i, "source": "/test", "type": "Test.Event", "data": {}} for i in ids]
    return requests.post(
        topic.endpoint + "?api-version=2018-01-01",
        data=json.dumps(batch),
        headers={
            "Authorization": f"Bearer {idp.mint(AUDIENCE)}",
            "Content-Type": "application/cloudevents-batch+json; charset=utf-8",
        },
        verify=topic.ca_bundle_path,
        timeout=timeout,
    )


# -- identity endpoint ------------------------------------------------------------------------------
def test_a_hung_token_request_gets_no_answer_until_the_window_ends(idp):
    idp.hang_for(1.0)
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        ask_token(idp)
    assert time.monotonic() - started >= 0.9
    assert idp.faults_served == 1 and idp.tokens_issued == 0
    token = ask_token(idp)  # the window is over
    assert token.status_code == 200 and idp.verify(token.json()["access_token"], ARM)
    assert idp.faults_served == 1


def test_a_hung_token_request_is_held_past_the_client_read_timeout(idp):
    idp.hang_for(3.0)
    with pytest.raises(requests.ReadTimeout):
        ask_token(idp, timeout=0.5)


def test_reset_counts_ends_a_hang_window_and_lets_held_requests_go(idp):
    idp.hang_for(30.0)
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(_try(lambda: ask_token(idp))))
    started = time.monotonic()
    worker.start()
    time.sleep(0.3)
    idp.reset_counts()
    worker.join(5)
    assert not worker.is_alive() and time.monotonic() - started < 5
    assert isinstance(outcome[0], requests.ConnectionError)  # let go unanswered
    assert idp.faults_served == 0  # zeroed
    assert ask_token(idp).status_code == 200


def _try(call):
    try:
        return call()
    except requests.RequestException as exc:
        return exc


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [("html502", 502, "text/html"), ("bad_expires_on", 200, "application/json"), ("not_json", 200, "text/plain")],
)
def test_garbage_answers_of_each_kind(idp, kind, status, content_type):
    idp.garbage_for(30.0, kind)
    answer = ask_token(idp)
    assert answer.status_code == status
    assert answer.headers["Content-Type"].startswith(content_type)
    if kind == "html502":
        assert answer.text.startswith("<html>")
    elif kind == "bad_expires_on":
        body = answer.json()
        assert body["expires_on"] == "soon" and idp.verify(body["access_token"], ARM)
    else:
        with pytest.raises(ValueError):
            answer.json()
    assert idp.faults_served == 1 and idp.tokens_issued == 0
    idp.reset_counts()  # ends the window
    normal = ask_token(idp)
    assert normal.status_code == 200 and normal.json()["expires_on"].isdigit()


def test_a_garbage_window_ends_by_itself(idp):
    idp.garbage_for(0.5, "html502")
    assert ask_token(idp).status_code == 502
    time.sleep(0.6)
    assert ask_token(idp).status_code == 200
    assert idp.faults_served == 1


def test_an_unknown_garbage_kind_is_refused(idp):
    with pytest.raises(ValueError, match="kind"):
        idp.garbage_for(1.0, "teapot")


# -- Event Grid topic -------------------------------------------------------------------------------
def test_a_hanging_topic_holds_a_publish_until_the_window_ends_then_drops_it(topic, idp):
    topic.down_for(1.0, "hang")
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        publish(topic, ["e1"], idp)
    assert time.monotonic() - started >= 0.9
    assert topic.events == [] and topic.faults_served == {"hang": 1}
    assert publish(topic, ["e2"], idp).status_code == 200
    assert [e["id"] for e in topic.events] == ["e2"]


def test_a_refusing_topic_closes_connections_at_once(topic, idp):
    topic.down_for(30.0, "refuse")
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        publish(topic, ["e1"], idp)
    assert time.monotonic() - started < 2.0
    assert topic.events == [] and topic.faults_served.get("refuse", 0) >= 1


def test_a_topic_down_with_503_and_the_outage_flag(topic, idp):
    topic.down_for(30.0, "503")
    answer = publish(topic, ["e1"], idp)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "ServiceUnavailable"
    topic.clear()
    topic.outage = True  # the older switch still works
    assert publish(topic, ["e2"], idp).status_code == 503
    assert topic.refused_during_outage == 1 and topic.faults_served == {"503": 1}
    topic.outage = False
    assert publish(topic, ["e3"], idp).status_code == 200


def test_clear_ends_a_down_window_and_the_rejections(topic, idp):
    topic.down_for(60.0, "hang")
    topic.reject_ids(["bad"])
    topic.clear()
    started = time.monotonic()
    assert publish(topic, ["bad"], idp).status_code == 200
    assert time.monotonic() - started < 2.0


def test_one_rejected_id_refuses_the_whole_batch_naming_it(topic, idp):
    topic.reject_ids(["evt-bad"])
    answer = publish(topic, ["evt-ok", "evt-bad", "evt-ok-2"], idp)
    assert answer.status_code == 400
    assert "evt-bad" in answer.json()["error"]["message"]
    assert topic.events == [] and topic.faults_served == {"rejected": 1}
    assert publish(topic, ["evt-ok", "evt-ok-2"], idp).status_code == 200
    assert [e["id"] for e in topic.events] == ["evt-ok", "evt-ok-2"]


def test_an_unknown_down_mode_is_refused(topic):
    with pytest.raises(ValueError, match="mode"):
        topic.down_for(1.0, "sleep")


# -- ARM emulator: a client that goes away mid-request -------------------------------------------------
def _send_and_go_away(arm: ArmEmulator, token: str, framing: str, body_part: bytes) -> None:
    """Send a POST's headers and the start of its body, then close: what the app's host does when
    it is killed between urllib3's write of the headers and its write of the body."""
    host, port = arm.endpoint.removeprefix("https://").split(":")
    path = arm.url_for(RESOURCE).removeprefix(arm.endpoint)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n"
    ).encode()
    context = ssl.create_default_context(cafile=arm.ca_bundle_path)
    raw = socket.create_connection((host, int(port)), timeout=10)
    with context.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(head + body_part)


@pytest.mark.parametrize(
    ("framing", "body_part"),
    [("Content-Length: 40", b""), ("Content-Length: 40", b'{"id": "c'), ("Transfer-Encoding: chunked", b'20\r\n{"id"')],
    ids=["headers-only", "part-of-the-body", "chunked"],
)
def test_a_request_whose_body_never_came_whole_is_recorded_but_neither_judged_nor_answered(
    ca, identity, framing, body_part
):
    with ArmEmulator(ca, identity) as arm:
        _send_and_go_away(arm, identity.mint(ARM), framing, body_part)
        deadline = time.monotonic() + 10
        while not arm.requests(kind="cut-short") and time.monotonic() < deadline:
            time.sleep(0.02)
        (rec,) = arm.requests(kind="cut-short")
        assert rec.method == "POST" and rec.status is None
        assert arm.violations == [], "a request ARM never received whole is no breach of its rules"
        assert arm.operations == []
        whole = requests.post(
            arm.url_for(RESOURCE),
            json={"id": "cp"},
            headers={"Authorization": "Bearer " + identity.mint(ARM)},
            verify=arm.ca_bundle_path,
            timeout=10,
        )
        assert whole.status_code == 202 and arm.violations == []


# -- Azurite on disk --------------------------------------------------------------------------------
def _fill(azurite: Azurite, count: int) -> tuple[str, set[str]]:
    name = "q" + uuid.uuid4().hex[:12]
    queue = QueueServiceClient.from_connection_string(azurite.connection_string).get_queue_client(name)
    queue.create_queue()
    texts = {f"message-{i}" for i in range(count)}
    for text in texts:
        queue.send_message(text)
    return name, texts


def _drain(connection_string: str, name: str) -> set[str]:
    queue = QueueServiceClient.from_connection_string(connection_string).get_queue_client(name)
    found: set[str] = set()
    while batch := list(queue.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=60)):
        found.update(m.content for m in batch)
    return found


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_messages_survive_a_restart_on_the_same_port(tmp_path, kill):
    azurite = Azurite(persist_dir=tmp_path / "azurite").start()
    try:
        name, texts = _fill(azurite, 40)
        connection_string, pid = azurite.connection_string, azurite.pid
        azurite.restart(kill=kill, durable=kill)
        assert azurite.pid != pid
        assert azurite.connection_string == connection_string  # same port: clients keep going
        assert _drain(connection_string, name) == texts
    finally:
        azurite.stop()
    assert (tmp_path / "azurite").is_dir()  # the folder is the caller's: kept


def test_a_new_azurite_on_the_same_folder_finds_the_queues(tmp_path):
    with Azurite(persist_dir=tmp_path) as first:
        name, texts = _fill(first, 10)
    with Azurite(persist_dir=tmp_path) as second:
        assert _drain(second.connection_string, name) == texts


def test_without_a_folder_a_restart_forgets_the_queues():
    with Azurite() as azurite:
        name, _ = _fill(azurite, 1)
        azurite.restart()
        client = QueueServiceClient.from_connection_string(azurite.connection_string)
        assert name not in {q.name for q in client.list_queues()}
