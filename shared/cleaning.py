"""Text from outside (ARM's errors and headers, the identity endpoint) made safe to store.

A queue message must be valid Unicode without noncharacters, and an event must stay well
under the queue's 64 KiB: every string from outside is cleaned (lone surrogates,
noncharacters and control characters become U+FFFD) and bounded (at most 4 KiB of UTF-8,
cut with a visible marker), and a whole event is kept under 48 KiB.
"""

from __future__ import annotations

import json
import math
import re

MAX_TEXT_BYTES = 4 * 1024
MAX_EVENT_BYTES = 48 * 1024
MAX_DEPTH = 8  # nesting kept of ARM's error details
MAX_ITEMS = 32  # members or list items kept per level
CUT = "…[cut]"

# Lone surrogates, noncharacters (U+FDD0..U+FDEF and the last two code points of every plane),
# and control characters other than tab, newline and carriage return.
_UNSAFE = re.compile(
    "[\ud800-\udfff\ufdd0-\ufdef\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
    + "".join(f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17))
    + "]"
)


def clean_text(value: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """`value` with unsafe characters replaced and, when longer than `max_bytes` of UTF-8, cut with CUT."""
    text = _UNSAFE.sub("\ufffd", value)
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    keep = max_bytes - len(CUT.encode("utf-8"))
    return encoded[:keep].decode("utf-8", errors="ignore") + CUT


def clean_json(value, depth: int = 0):
    """A copy of JSON-like `value` that is safe to store: strings cleaned and bounded, numbers
    finite, nesting and sizes bounded (what is dropped is replaced by CUT)."""
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else clean_text(str(value)[:64])
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_DEPTH:
        return CUT
    if isinstance(value, dict):
        items = list(value.items())
        cleaned = {clean_text(str(k), 256): clean_json(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            cleaned[CUT] = f"{len(items) - MAX_ITEMS} more members"
        return cleaned
    if isinstance(value, list | tuple):
        cleaned = [clean_json(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            cleaned.append(f"{CUT} {len(value) - MAX_ITEMS} more items")
        return cleaned
    return clean_text(repr(value)[:256])


def clean_error(error: dict, depth: int = 0) -> dict:
    """An ARM error (or ErrorDetail) with the contract's members, each cleaned and bounded; members
    of the wrong type become null or empty, nesting deeper than MAX_DEPTH is dropped."""
    details = error.get("details") if depth < MAX_DEPTH else None
    additional = error.get("additionalInfo")
    return {
        "code": _text_or_none(error.get("code")),
        "message": _text_or_none(error.get("message")),
        "target": _text_or_none(error.get("target")),
        "details": [clean_error(d, depth + 1) for d in details[:MAX_ITEMS] if isinstance(d, dict)]
        if isinstance(details, list)
        else [],
        "additionalInfo": [_additional_info(a) for a in additional[:MAX_ITEMS] if isinstance(a, dict)]
        if isinstance(additional, list)
        else [],
    }


def _text_or_none(value) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return clean_text(value if isinstance(value, str) else str(value)[:256])


def _additional_info(item: dict) -> dict:
    info = item.get("info")
    return {
        "type": _text_or_none(item.get("type")) or "",
        "info": clean_json(info, 1) if isinstance(info, dict) else {},
    }


def compact_error(error: dict | None, max_bytes: int = 1024) -> dict | None:
    """An error small enough for a tracking message (at most 64 KiB in all): its code, target and
    the start of its message; details and additional info are left out."""
    if error is None:
        return None
    message = error.get("message")
    return {
        "code": error.get("code"),
        "message": clean_text(message, max_bytes) if isinstance(message, str) else None,
        "target": error.get("target"),
        "details": [],
        "additionalInfo": [],
    }


def event_size(event: dict) -> int:
    return len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def fit_event(event: dict, max_bytes: int = MAX_EVENT_BYTES) -> dict:
    """`event` itself when it is small enough; else a copy whose errors lost their details first,
    then their additional info, then most of their message and target, each cut marked with CUT."""
    if event_size(event) < max_bytes:
        return event
    event = json.loads(json.dumps(event))
    data = event.get("data", {})
    errors = [data[name] for name in ("error", "armError") if isinstance(data.get(name), dict)]
    for member in ("details", "additionalInfo", "message", "target"):
        for error in errors:
            if not error.get(member):
                continue
            if member in ("details", "additionalInfo"):
                error[member] = []
                error["message"] = _with_note(error.get("message") or "", f" {CUT} ({member})")
            else:
                error[member] = clean_text(str(error[member]), 512)
        if event_size(event) < max_bytes:
            return event
    return event


def _with_note(text: str, note: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """`text` followed by `note`, the whole at most `max_bytes` of UTF-8 (`text` is cut to make room)."""
    room = max_bytes - len(note.encode("utf-8"))
    return clean_text(text, room) + note
