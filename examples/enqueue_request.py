"""Put one checkpoint-deletion request on the app's requests queue (a producer's side, in Python).

Needs only azure-storage-queue and azure-identity (pip install azure-storage-queue azure-identity);
it does not import the app. Two ways to reach the queue:

    # Microsoft Entra ID (az login, a managed identity, or AZURE_* variables): DefaultAzureCredential.
    # The signed-in principal needs "Storage Queue Data Message Sender" (or Contributor) on the queue.
    python examples/enqueue_request.py --account-url https://<account>.queue.core.windows.net \\
        --resource-uri /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.HybridCompute/machines/<vm> \\
        --checkpoint-id <checkpoint id> --correlation-id change-1234

    # A connection string (Azurite: UseDevelopmentStorage=true); the deployed account accepts no keys.
    python examples/enqueue_request.py --connection-string UseDevelopmentStorage=true --resource-uri ...

It prints the requestId; the outcome events (examples/event-*.json) carry it as data.requestId and
as their id '<requestId>:accepted|succeeded|failed'. The message is the request's JSON as plain
text: QueueClient sends text as is unless a message_encode_policy is set (the app also takes base64).
"""

from __future__ import annotations

import argparse
import json
import os
import uuid

REQUESTS_QUEUE = os.environ.get("CHECKPOINT_REQUESTS_QUEUE", "checkpoint-delete-requests")


def build_request(
    resource_uri: str,
    checkpoint_id: str | None = None,
    *,
    request_id: str | None = None,
    correlation_id: str | None = None,
    traceparent: str | None = None,
) -> dict:
    """The request object of schemas/deletion-request.schema.json; requestId defaults to a new UUID."""
    request = {"resourceUri": resource_uri, "requestId": request_id or str(uuid.uuid4())}
    if checkpoint_id is not None:  # without one, the app deletes with the body {}
        request["checkpointId"] = checkpoint_id
    if correlation_id is not None:
        request["correlationId"] = correlation_id
    if traceparent is not None:  # W3C traceparent, copied into every event
        request["traceparent"] = traceparent
    return request


def message_text(request: dict) -> str:
    """The queue message: compact JSON, ASCII only (any other character travels as a JSON escape)."""
    return json.dumps(request, separators=(",", ":"), ensure_ascii=True)


def send(queue_client, request: dict) -> str:
    """Send the request with an azure.storage.queue.QueueClient; returns the queue message id."""
    return queue_client.send_message(message_text(request)).id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Put one checkpoint-deletion request on the requests queue.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--account-url", help="https://<account>.queue.core.windows.net (DefaultAzureCredential)")
    where.add_argument("--connection-string", help="storage connection string, e.g. UseDevelopmentStorage=true")
    parser.add_argument("--queue", default=REQUESTS_QUEUE, help=f"default: {REQUESTS_QUEUE}")
    parser.add_argument("--resource-uri", required=True, help="ARM resource id of the machine")
    parser.add_argument("--checkpoint-id", help="checkpoint to delete")
    parser.add_argument("--request-id", help="default: a new UUID")
    parser.add_argument("--correlation-id", help="echoed into every event")
    parser.add_argument("--traceparent", help="W3C traceparent carried into every event")
    args = parser.parse_args(argv)

    request = build_request(
        args.resource_uri,
        args.checkpoint_id,
        request_id=args.request_id,
        correlation_id=args.correlation_id,
        traceparent=args.traceparent,
    )

    from azure.storage.queue import QueueClient

    if args.connection_string:
        with QueueClient.from_connection_string(args.connection_string, args.queue) as client:
            send(client, request)
    else:
        from azure.identity import DefaultAzureCredential

        with (
            DefaultAzureCredential() as credential,
            QueueClient(args.account_url, args.queue, credential=credential) as client,
        ):
            send(client, request)
    print(request["requestId"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
