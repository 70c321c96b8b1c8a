"""The end of a chaos run: every event read is held against the requests and against the ARM
emulator's truth (which checkpoints really are gone), and the outcome is a table of figures;
those that must be zero make the run fail.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from localdev.chaos.observe import SeenEvent
from localdev.chaos.plan import PlannedRequest

SHOWN = 10  # request ids shown per violation; the JSON holds them all


@dataclass
class Row:
    label: str
    value: object
    must_be_zero: bool = False

    @property
    def violated(self) -> bool:
        return self.must_be_zero and self.value != 0


@dataclass
class Report:
    rows: list[Row]
    violations: dict[str, list[dict]]  # label -> the requests concerned
    info: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(row.violated for row in self.rows)

    def as_json(self) -> dict:
        return {
            "ok": self.ok,
            "table": {row.label: row.value for row in self.rows},
            "must_be_zero": [row.label for row in self.rows if row.must_be_zero],
            "violations": self.violations,
            **self.info,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2, default=str) + "\n", encoding="utf-8")

    def print(self, out) -> None:
        width = max(len(row.label) for row in self.rows) + 2
        print("", file=out)
        for row in self.rows:
            mark = "  <- must be 0" if row.violated else ""
            print(f"{row.label:<{width}} {_show(row.value)}{mark}", file=out)
        for label, cases in self.violations.items():
            if not cases:
                continue
            print(f"\n{label}: {len(cases)}", file=out)
            for case in cases[:SHOWN]:
                print("  " + ", ".join(f"{k}={v}" for k, v in case.items()), file=out)
            if len(cases) > SHOWN:
                print(f"  ... {len(cases) - SHOWN} more in the JSON report", file=out)
        print("\nOK: no violation" if self.ok else "\nFAILED: see the rows marked 'must be 0'", file=out)


def _show(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _time(text: object) -> float | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile (q in 0..100) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _request_of(text: str) -> str | None:
    """The requestId a poison message names (plain or base64 JSON, a plain object or an envelope)."""
    for candidate in (text, _b64(text)):
        try:
            body = json.loads(candidate or "")
        except ValueError:
            continue
        if isinstance(body, dict):
            data = body.get("data") if isinstance(body.get("data"), dict) else body
            return data.get("requestId") or body.get("requestId")
    return None


def _b64(text: str) -> str | None:
    try:
        return base64.b64decode(text, validate=True).decode()
    except (binascii.Error, ValueError):
        return None


def build_report(
    requests: list[PlannedRequest],
    events: list[SeenEvent],
    unreadable: list[str],
    poison_left: list[str],
    checkpoint_exists: Callable[[str, str], bool],
    extra_rows: list[Row],
    info: dict,
) -> Report:
    by_id = {r.request_id: r for r in requests}
    outcomes: dict[str, set[str]] = defaultdict(set)
    first_terminal: dict[str, float] = {}
    terminal_ids: Counter = Counter()
    error_codes: Counter = Counter()
    accepted_ids: set[str] = set()
    unknown: set[str] = set()
    for seen in events:
        rid = seen.request_id
        if rid not in by_id:
            unknown.add(str(rid))
            continue
        if seen.event.get("type") == "ScVmm.CheckpointDelete.Accepted":
            accepted_ids.add(str(seen.event.get("id")))
        if not seen.outcome:
            continue
        terminal_ids[str(seen.event.get("id"))] += 1
        if seen.outcome not in outcomes[rid]:
            error_codes[
                f"{seen.outcome} {((seen.event.get('data') or {}).get('error') or {}).get('code') or ''}".strip()
            ] += 1
        outcomes[rid].add(seen.outcome)
        at = _time(seen.event.get("time")) or seen.read_at
        first_terminal[rid] = min(first_terminal.get(rid, at), at)

    def case(r: PlannedRequest, **more) -> dict:
        return {"requestId": r.request_id, "kind": r.kind, "checkpointId": r.checkpoint_id, **more}

    contradictory = [case(r) for r in requests if len(outcomes.get(r.request_id, ())) > 1]
    lost = [case(r) for r in requests if not outcomes.get(r.request_id)]
    untrue: list[dict] = []
    for r in requests:
        exists = checkpoint_exists(r.resource_uri, r.checkpoint_id) if outcomes.get(r.request_id) else None
        for outcome in sorted(outcomes.get(r.request_id, ())):
            if (outcome == "Succeeded" and exists) or (outcome == "Failed" and exists is False):
                code = _error_code(events, r.request_id, outcome)
                untrue.append(case(r, outcome=outcome, error=code, checkpointExists=exists))
    poison_orphans = [
        {"requestId": rid} for rid in (_request_of(t) for t in poison_left) if not rid or not outcomes.get(rid)
    ]
    latencies = [
        first_terminal[r.request_id] - r.enqueued_at
        for r in requests
        if r.request_id in first_terminal and r.enqueued_at is not None
    ]
    unique_terminal = len(terminal_ids)
    rows = [
        Row("requests", len(requests)),
        Row("terminal events (unique ids)", unique_terminal),
        Row("duplicate terminal events (allowed)", sum(terminal_ids.values()) - unique_terminal),
        Row("contradictory outcomes", len(contradictory), True),
        Row("outcomes that differ from ARM's truth", len(untrue), True),
        Row("lost requests (no terminal event)", len(lost), True),
        Row("poison messages without an event", len(poison_orphans), True),
        Row("unreadable events", len(unreadable), True),
        Row("outcomes", dict(sorted(error_codes.items()))),
        Row("accepted events (unique ids)", len(accepted_ids)),
        Row("events for unknown requests", len(unknown)),
        Row("enqueue to terminal event p50 s", _round(percentile(latencies, 50))),
        Row("enqueue to terminal event p95 s", _round(percentile(latencies, 95))),
        Row("enqueue to terminal event max s", _round(max(latencies) if latencies else None)),
        *extra_rows,
    ]
    violations = {
        "contradictory outcomes": contradictory,
        "outcomes that differ from ARM's truth": untrue,
        "lost requests": lost,
        "poison messages without an event": poison_orphans,
        "unreadable events": [{"text": t} for t in unreadable],
    }
    return Report(rows, violations, info)


def _error_code(events: list[SeenEvent], request_id: str, outcome: str) -> str | None:
    for seen in events:
        if seen.request_id == request_id and seen.outcome == outcome:
            return ((seen.event.get("data") or {}).get("error") or {}).get("code")
    return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
