"""What the end-to-end tests assert about the events of one request, and how they run one."""

from __future__ import annotations

import re

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def assert_event_shape(event: dict, request: dict, status: str) -> None:
    """The contract's section 4, field by field."""
    assert event["specversion"] == "1.0"
    assert event["type"] == f"ScVmm.CheckpointDelete.{status}"
    assert event["source"] == request["resourceUri"]
    assert event["id"] == f"{event['data']['requestId']}:{status.lower()}"
    assert RFC3339.match(event["time"]), event["time"]
    assert event["datacontenttype"] == "application/json"
    if request.get("checkpointId") is not None:
        assert event["subject"] == request["checkpointId"]
    else:
        assert "subject" not in event
    if request.get("traceparent"):
        assert event["traceparent"] == request["traceparent"]
    else:
        assert "traceparent" not in event
    data = event["data"]
    assert data["status"] == status
    assert data["resourceUri"] == request["resourceUri"]
    assert data.get("checkpointId") == request.get("checkpointId")
    assert data.get("correlationId") == request.get("correlationId")
    for stamp in ("submittedAt", "completedAt"):
        if stamp in data:
            assert RFC3339.match(data[stamp])
    assert isinstance(data["pollCount"], int)
    if status == "Failed":
        assert set(data["error"]) >= {"code", "message", "target", "details", "additionalInfo"}
    else:
        assert "error" not in data


def one_request(app, request: dict, encoding: str = "plain", timeout: float = 20.0) -> list[dict]:
    message_id = app.send(request, encoding)
    request_id = request.get("requestId") or message_id
    return app.run([request_id], timeout=timeout)[request_id]


def types(events: list[dict]) -> list[str]:
    return [e["type"].rsplit(".", 1)[1] for e in events]
