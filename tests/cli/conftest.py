"""Fixtures of the checkpointctl tests: a private Azurite for each test file, unique queue names per test."""

from __future__ import annotations

import uuid

import pytest
from azure.storage.queue import QueueClient

from localdev.azurite import Azurite


@pytest.fixture(scope="module")
def cli_azurite():
    with Azurite() as running:
        yield running


@pytest.fixture
def queues(cli_azurite):
    """Unique queue names for one test, the flags that select them, and clients for them."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    names = {"requests": f"{prefix}-req", "events": f"{prefix}-evt", "tracking": f"{prefix}-trk"}
    names["poison"] = f"{names['requests']}-poison"
    names["outbox"] = f"{names['events']}-outbox"
    names["deadletter"] = f"{names['events']}-deadletter"

    class Queues:
        flags = [
            "--connection-string",
            cli_azurite.connection_string,
            "--requests-queue",
            names["requests"],
            "--events-queue",
            names["events"],
            "--tracking-queue",
            names["tracking"],
        ]

        @staticmethod
        def client(role: str) -> QueueClient:
            return QueueClient.from_connection_string(cli_azurite.connection_string, names[role])

        @staticmethod
        def created(role: str) -> QueueClient:
            client = Queues.client(role)
            client.create_queue()
            return client

        @staticmethod
        def messages(role: str) -> list:
            """Every message on the queue (received and deleted); [] when the queue does not exist."""
            client = Queues.client(role)
            try:
                found = list(client.receive_messages(messages_per_page=32, max_messages=32))
            except Exception as exc:  # QueueNotFound
                assert "QueueNotFound" in str(exc) or "does not exist" in str(exc)
                return []
            for message in found:
                client.delete_message(message)
            return found

        @staticmethod
        def count(role: str) -> int:
            return Queues.client(role).get_queue_properties().approximate_message_count

    Queues.names = names
    return Queues
