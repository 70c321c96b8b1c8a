"""Reading outcome events off the events queue, and showing them to a person: the deletion events
(contract section 4, `ScVmm.CheckpointDelete.*`) and a retention policy's closing events
(`ScVmm.CheckpointPolicy.Completed` / `.Failed`, docs/policies.md)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from shared import policy as policies
from shared.events import EVENT_TYPE_PREFIX, EventStatus

TERMINAL = (EventStatus.SUCCEEDED, EventStatus.FAILED)
POLICY_EVENT_TYPE_PREFIX = policies.EVENT_TYPE_PREFIX
POLICY_TERMINAL = (policies.COMPLETED, policies.FAILED)
POLICY_LISTS = ("deleted", "kept", "failed", "skipped")
DELETION = "deletion"
POLICY = "policy"
_PREFIXES = {DELETION: EVENT_TYPE_PREFIX, POLICY: POLICY_EVENT_TYPE_PREFIX}


@dataclass(frozen=True)
class Event:
    """One events-queue message: one of the app's events (`document` set; `kind` says whether a deletion's
    or a policy's) or something else (`raw` only)."""

    message_id: str
    raw: str
    document: dict | None = None  # the CloudEvent, when the message is one of the app's events
    kind: str | None = None  # DELETION (ScVmm.CheckpointDelete.*) or POLICY (ScVmm.CheckpointPolicy.*)

    @property
    def status(self) -> str | None:
        """The type's short name: Accepted/Succeeded/Failed for a deletion, Completed/Failed for a policy."""
        if self.document is None or self.kind is None:
            return None
        return self.document["type"][len(_PREFIXES[self.kind]) :]

    @property
    def is_deletion(self) -> bool:
        return self.kind == DELETION

    @property
    def is_policy(self) -> bool:
        return self.kind == POLICY

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
        """A deletion's Succeeded or Failed event (the one a deletion request ends with)."""
        return self.is_deletion and self.status in TERMINAL

    @property
    def policy_terminal(self) -> bool:
        """A policy's closing event: Completed or Failed."""
        return self.is_policy and self.status in POLICY_TERMINAL

    @property
    def failed_deletions(self) -> int:
        """How many checkpoints a policy event lists under `failed` (0 when it lists none)."""
        failed = self.data.get("failed")
        return len(failed) if isinstance(failed, list) else 0

    @property
    def ended_well(self) -> bool:
        """A closing event that says the request did what it was asked: a deletion's Succeeded, a policy's
        Completed with no failed deletion."""
        if self.terminal:
            return self.status == EventStatus.SUCCEEDED
        return self.policy_terminal and self.status == policies.COMPLETED and self.failed_deletions == 0


def parse_event(message_id: str, content) -> Event:
    """Never raises: a message that is not one of the app's events comes back with `document` None."""
    if isinstance(content, bytes | bytearray):
        content = bytes(content).decode("utf-8", errors="replace")
    text = "" if content is None else str(content)
    document = _json_or_base64_json(text)
    if isinstance(document, dict) and isinstance(document.get("type"), str) and isinstance(document.get("data"), dict):
        for kind, prefix in _PREFIXES.items():
            if document["type"].startswith(prefix):
                return Event(message_id, text, document, kind)
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
    if event.is_policy:
        return _policy_line(event)
    data = event.data
    parts = _line_head(event)
    if data.get("checkpointId") is not None:
        parts.append(f"checkpoint={printable(data['checkpointId'])}")
    if event.status == EventStatus.FAILED:
        parts.append(_error_text(data))
    return "  ".join(parts)


def _line_head(event: Event) -> list[str]:
    """What every event's line starts with: time, outcome, requestId, resourceUri."""
    return [
        printable(event.document.get("time") or "-"),
        f"{printable(event.status):<9}",
        printable(event.request_id or "-"),
        printable(event.data.get("resourceUri") or event.document.get("source") or "-"),
    ]


def _error_text(data: dict) -> str:
    error = data.get("error")
    if isinstance(error, dict):
        return f"error {printable(error.get('code') or '?')}: {printable(error.get('message') or '')}"
    return "error (none given)"


def _policy_line(event: Event) -> str:
    """time, Completed/Failed, requestId, resourceUri, the policy, what became of its checkpoints (and on
    Failed the error): `... Completed  policy-7  /subscriptions/...  keepLatest=2  deleted 3, kept 2, failed 0, skipped 0`."""
    data = event.data
    parts = _line_head(event)
    rules = data.get("policy")
    if isinstance(rules, dict) and rules:
        parts.append(" ".join(f"{printable(name)}={printable(value)}" for name, value in rules.items()))
    counts = {name: data.get(name) for name in POLICY_LISTS}
    counted = ", ".join(f"{name} {len(v) if isinstance(v, list) else '?'}" for name, v in counts.items())
    dry_run = data.get("dryRun") is True
    if event.status == policies.FAILED:
        if any(isinstance(v, list) and v for v in counts.values()):
            parts.append(counted)
        parts.append(_error_text(data))
    else:
        parts.append(f"dry run: would have {counted}" if dry_run else counted)
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
