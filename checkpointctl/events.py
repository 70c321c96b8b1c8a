"""Reading outcome events (contract section 4) off the events queue, and showing them to a person."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from shared.events import EVENT_TYPE_PREFIX, EventStatus

TERMINAL = (EventStatus.SUCCEEDED, EventStatus.FAILED)


@dataclass(frozen=True)
class Event:
    """One events-queue message: a contract event (`document` set) or something else (`raw` only)."""

    message_id: str
    raw: str
    document: dict | None = None  # the CloudEvent, when the message is one of the app's events

    @property
    def status(self) -> str | None:
        if self.document is None:
            return None
        return self.document["type"][len(EVENT_TYPE_PREFIX) :]

    @property
    def data(self) -> dict:
        return self.document["data"] if self.document else {}

    @property
    def event_id(self) -> str | None:
        value = self.document.get("id") if self.document else None
        return value if isinstance(value, str) else None

    @property
    def request_id(self) -> str | None:
        value = self.data.get("requestId")
        if isinstance(value, str):
            return value
        if self.event_id and ":" in self.event_id:
            return self.event_id.rsplit(":", 1)[0]
        return None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def parse_event(message_id: str, content) -> Event:
    """Never raises: a message that is not one of the app's events comes back with `document` None."""
    if isinstance(content, bytes | bytearray):
        content = bytes(content).decode("utf-8", errors="replace")
    text = "" if content is None else str(content)
    document = _json_or_base64_json(text)
    if (
        isinstance(document, dict)
        and isinstance(document.get("type"), str)
        and document["type"].startswith(EVENT_TYPE_PREFIX)
        and isinstance(document.get("data"), dict)
    ):
        return Event(message_id, text, document)
    return Event(message_id, text)


def _json_or_base64_json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return json.loads(base64.b64decode("".join(text.split()), validate=True).decode("utf-8"))
    except (binascii.Error, ValueError):
        return None


def printable(value) -> str:
    """`value` as one line of text with control characters escaped (queue content is not trusted)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def human_line(event: Event) -> str:
    if event.document is None:
        return f"raw message {printable(event.message_id)}: {printable(event.raw)}"
    data = event.data
    parts = [
        printable(event.document.get("time") or "-"),
        f"{printable(event.status):<9}",
        printable(event.request_id or "-"),
        printable(data.get("resourceUri") or event.document.get("source") or "-"),
    ]
    if data.get("checkpointId") is not None:
        parts.append(f"checkpoint={printable(data['checkpointId'])}")
    if event.status == EventStatus.FAILED:
        error = data.get("error")
        if isinstance(error, dict):
            parts.append(f"error {printable(error.get('code') or '?')}: {printable(error.get('message') or '')}")
        else:
            parts.append("error (none given)")
    return "  ".join(parts)


def json_line(event: Event) -> str:
    if event.document is not None:
        return compact_json(event.document)
    try:  # JSON that is not one of the app's events is passed through as it is
        return compact_json(json.loads(event.raw))
    except ValueError:
        return compact_json({"messageId": event.message_id, "raw": event.raw})


def compact_json(document) -> str:
    """`document` as JSON on one line, non-ASCII kept as it is when it can be written as UTF-8."""
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (from a JSON escape) cannot be written as UTF-8
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=True)
    return text
