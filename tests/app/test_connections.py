"""The app's HTTP sessions take the environment's CA bundle and proxies once, when built, and do
not read the environment again on each call (requests does when a session trusts it)."""

from __future__ import annotations

import socket
import threading

import pytest
from azure.identity import ManagedIdentityCredential

from shared.arm_answers import AnswerState
from shared.arm_client import ArmClient
from shared.queues import open_queue
from shared.settings import StorageConnection
from tests.support.app_harness import new_resource_uri

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


class RecordingProxy:
    """A loopback "proxy" that records the first line of each request and answers 502."""

    def __init__(self):
        self.lines: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.lines.append(conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1"))
                    conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def close(self):
        self._listener.close()


@pytest.fixture
def proxy(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    recording = RecordingProxy()
    yield recording
    recording.close()


@pytest.fixture
def arm_env(monkeypatch, arm, identity):
    for name, value in identity.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", arm.ca_bundle_path)
    arm.reset()


def _client(arm) -> ArmClient:
    return ArmClient(ManagedIdentityCredential(), arm.endpoint, "2024-06-01", timeout=(2.0, 1.5))


def test_the_ca_bundle_is_read_when_the_client_is_built_and_not_on_each_call(arm_env, arm, monkeypatch, no_proxies):
    client = _client(arm)
    try:
        assert client.read_instance(new_resource_uri()).status_code == 404  # trusted through REQUESTS_CA_BUNDLE
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca-bundle.pem")
        answer = client.read_instance(new_resource_uri())
        assert (answer.state, answer.status_code) == (AnswerState.FAILED, 404), answer.error
    finally:
        client.close()


def test_the_proxy_for_arm_is_the_one_the_environment_named_when_built(arm_env, arm, monkeypatch, proxy):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    client = _client(arm)
    try:
        monkeypatch.delenv("HTTPS_PROXY")  # read once: the client keeps the proxy it was built with
        answer = client.read_instance(new_resource_uri())
        assert answer.state == AnswerState.TRANSIENT  # the recording proxy does not tunnel
        host_port = arm.endpoint.removeprefix("https://")
        assert proxy.lines and proxy.lines[0].startswith(f"CONNECT {host_port} ")
    finally:
        client.close()


def test_no_proxy_at_build_time_keeps_arm_calls_direct(arm_env, arm, monkeypatch, proxy):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = _client(arm)
    try:
        monkeypatch.delenv("NO_PROXY")  # read once: calls stay direct
        assert client.read_instance(new_resource_uri()).status_code == 404
        assert proxy.lines == []
    finally:
        client.close()


def test_storage_calls_use_the_proxy_named_when_the_queue_client_was_built(azurite, monkeypatch, proxy):
    storage = StorageConnection(connection_string=azurite.connection_string)
    queue = open_queue(storage, "connections-direct", pool_size=2)  # built with no proxy: direct
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    queue.send_message("still direct")  # the variable set after the build changes nothing
    assert proxy.lines == []
    with pytest.raises(Exception):  # noqa: B017 (the recording proxy answers 502 to whatever comes)
        open_queue(storage, "connections-proxied", pool_size=2)
    assert proxy.lines and proxy.lines[0].startswith("PUT http://127.0.0.1:")
