"""A poison message as the operator sees it: the request the app reads from it, or why it cannot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from shared.request import DeletionRequest, InvalidRequest, decode_request

from .events import printable

MAX_TEXT_SHOWN = 200  # characters of an undecodable message shown by the human-readable output


@dataclass(frozen=True)
class Poisoned:
    """One poison message and the request the app reads from it (or why it cannot)."""

    message: object  # the SDK's peeked or received message
    text: str
    request: DeletionRequest | None
    problem: str | None

    @property
    def message_id(self) -> str:
        return self.message.id

    def request_id_after_move(self, new_message_id: str | None) -> str | None:
        """The requestId the app will read once the text is on the requests queue: a request that names
        none (no requestId, no envelope id) takes its queue message's id, which a move changes."""
        if self.request is None:
            return None
        if self.request.request_id == self.message_id and new_message_id is not None:
            return new_message_id
        return self.request.request_id


def read_poisoned(message) -> Poisoned:
    content = message.content
    if isinstance(content, bytes | bytearray):
        content = bytes(content).decode("utf-8", errors="replace")
    text = "" if content is None else str(content)
    try:
        return Poisoned(message, text, decode_request(text, message.id), None)
    except InvalidRequest as invalid:  # decode_request raises nothing else, whatever the text
        return Poisoned(message, text, None, f"{invalid.target}: {invalid.message}")


def _time(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z") if moment else "-"


def request_text(item: Poisoned) -> str:
    request = item.request
    parts = [printable(request.request_id) + (" (the message id)" if request.request_id == item.message_id else "")]
    parts.append(printable(request.resource_uri))
    if request.checkpoint_id is not None:
        parts.append(f"checkpoint={printable(request.checkpoint_id)}")
    if request.correlation_id is not None:
        parts.append(f"correlation={printable(request.correlation_id)}")
    return "  ".join(parts)


def _undecodable_text(item: Poisoned) -> str:
    shown = item.text if len(item.text) <= MAX_TEXT_SHOWN else item.text[:MAX_TEXT_SHOWN] + "..."
    return f"undecodable ({printable(item.problem)}): {printable(shown)}"


def human_line(item: Poisoned) -> str:
    message = item.message
    head = f"{printable(item.message_id)}  inserted {_time(message.inserted_on)}  dequeue count {message.dequeue_count}"
    return f"{head}  {request_text(item) if item.request else _undecodable_text(item)}"


def json_line(item: Poisoned) -> str:
    request = item.request
    record = {
        "messageId": item.message_id,
        "insertedOn": _time(item.message.inserted_on),
        "dequeueCount": item.message.dequeue_count,
        "request": None
        if request is None
        else {
            "requestId": request.request_id,
            "resourceUri": request.resource_uri,
            "checkpointId": request.checkpoint_id,
            "correlationId": request.correlation_id,
            "traceparent": request.traceparent,
        },
        "problem": item.problem,
        "text": item.text,
    }
    return json.dumps(record, ensure_ascii=True)  # ASCII: a lone surrogate in queue text cannot break stdout
