"""The figures of one contender, from its child's report and rusage and from what the ARM
emulator recorded of its calls (every request with the time it arrived, its answer and the
operation it belongs to)."""

from __future__ import annotations

import math
import re
from collections import defaultdict

from localdev.arm_records import Operation, RecordedRequest
from localdev.bench.plan import ARM_READS, ARM_WRITES, FLOOR, Workload
from localdev.bench.runner import Raw

# the emulator's 429 from its buckets says Retry-After: ceil(time to the next token), at least 1 s
THROTTLED_RETRY_AFTER = 1.0
_STATUS_PATH = re.compile(r"/operation(?:Results|Statuses)/([0-9a-fA-F-]{36})")

# fields shown as a ratio to the floor's
RATIO_FIELDS = (
    "wall_s",
    "cpu_ms_per_deletion",
    "cpu_ms_per_call",
    "peak_rss_mb",
    "posts_per_deletion",
    "gets_per_deletion",
    "early_gets",
    "tokens",
    "throttled",
    "connections",
)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def operation_of(record: RecordedRequest) -> str | None:
    """The operation a call belongs to: the one a POST started, or the one a status URL names."""
    if record.kind == "status":
        match = _STATUS_PATH.search(record.path)
        return match.group(1).lower() if match else record.operation_id
    return record.operation_id if record.kind == "submit" else None


def early_gets(records: list[RecordedRequest], retry_after: float) -> tuple[int, dict[str, int]]:
    """Status GETs that arrived before the Retry-After of the answer before them on the same
    operation had passed (the POST's 202, or the previous GET's 202 or 429). The time of each call
    is when the emulator received it, so a GET that waits out Retry-After from the moment the
    answer arrives is never counted; a GET sent before has no such slack. Also returns the GETs
    made for each operation."""
    by_op: dict[str, list[RecordedRequest]] = defaultdict(list)
    for record in records:
        opid = operation_of(record)
        if opid is not None:
            by_op[opid].append(record)
    early = 0
    gets: dict[str, int] = {}
    for opid, calls in by_op.items():
        calls.sort(key=lambda r: r.time)
        gets[opid] = sum(1 for r in calls if r.kind == "status")
        for prev, call in zip(calls, calls[1:], strict=False):
            if call.kind != "status":
                continue
            wait = retry_after if prev.status == 202 else THROTTLED_RETRY_AFTER if prev.status == 429 else 0.0
            if call.time < prev.time + wait:
                early += 1
    return early, gets


def sustained_post_rate(records: list[RecordedRequest]) -> dict:
    """Accepted POSTs per second once ARM's initial burst is over: from the accepted POST half way
    through the run (or the capacity-th, ARM's burst, whichever is later) to the last one."""
    capacity = int(ARM_WRITES[0])
    accepted = sorted(r.time for r in records if r.kind == "submit" and r.status == 202)
    out: dict = {"accepted_posts": len(accepted), "sustained_post_rate": None, "fraction_of_refill": None}
    start = max(capacity, len(accepted) // 2)
    if len(accepted) > start + 1:
        span = accepted[-1] - accepted[start - 1]
        if span > 0:
            out["sustained_post_rate"] = (len(accepted) - start) / span
            out["fraction_of_refill"] = out["sustained_post_rate"] / ARM_WRITES[1]
    if accepted:
        out["accepted_post_offsets"] = [round(t - accepted[0], 3) for t in accepted]
    return out


def seen_late(operations: list[Operation], duration: float) -> list[float]:
    """For each operation that was seen done: how long after it ended (D after its POST) a status
    GET first saw it done."""
    return [op.completed_at - (op.created + duration) for op in operations if op.completed_at is not None]


def per_process(records: list[RecordedRequest]) -> list[dict]:
    """The calls of each process of a contender, told apart by the token each sent (every process
    fetches its own from the identity endpoint), in the order of their first call."""
    by_token: dict[str, dict] = {}
    for record in sorted(records, key=lambda r: r.time):
        calls = by_token.setdefault(record.token_fingerprint or "-", {"posts": 0, "gets": 0, "throttled": 0})
        calls["posts" if record.kind == "submit" else "gets"] += 1
        calls["throttled"] += int(record.status == 429)
    return list(by_token.values())


def figures(raw: Raw, workload: Workload) -> dict:
    n = workload.count
    records = raw.records
    posts = sum(1 for r in records if r.kind == "submit")
    gets = sum(1 for r in records if r.kind == "status")
    instance_gets = sum(1 for r in records if r.kind == "instance")
    calls = len(records)
    early, gets_by_op = early_gets(records, workload.retry_after)
    cpu = raw.child.get("cpu_user", math.nan) + raw.child.get("cpu_system", math.nan)
    wall = raw.ended - raw.started
    late = seen_late(raw.operations, workload.duration)
    out = {
        "contender": raw.contender,
        "deletions": n,
        "succeeded": raw.outcomes.get("succeeded", 0),
        "failed": raw.outcomes.get("failed", 0),
        "errors": raw.outcomes.get("errors", []),
        "timed_out": raw.timed_out,
        "wall_s": wall,
        "deletions_per_s": n / wall if wall > 0 else None,
        "cpu_s": cpu,
        "cpu_user_s": raw.child.get("cpu_user"),
        "cpu_system_s": raw.child.get("cpu_system"),
        "cpu_ms_per_deletion": cpu * 1000 / n,
        "cpu_ms_per_call": cpu * 1000 / calls if calls else None,
        "process_cpu_s": raw.rusage["cpu_user"] + raw.rusage["cpu_system"],
        "processes": raw.processes,
        "peak_rss_mb": raw.rusage["max_rss_kb"] / 1024,  # of several processes: the sum of theirs
        "peak_rss_mb_max_process": raw.rusage.get("max_rss_kb_max", raw.rusage["max_rss_kb"]) / 1024,
        "arm_calls": calls,
        "posts": posts,
        "gets": gets,
        "instance_gets": instance_gets,
        "posts_per_deletion": posts / n,
        "gets_per_deletion": gets / n,
        "polls_due_per_deletion": workload.polls_due,
        "operations": len(gets_by_op),
        "operations_off_floor": sum(1 for g in gets_by_op.values() if g != workload.polls_due),
        "early_gets": early,
        "tokens": raw.tokens,
        "throttled": sum(1 for r in records if r.status == 429),
        "throttled_fraction": (sum(1 for r in records if r.status == 429) / calls) if calls else 0.0,
        "connections": raw.connections,
        "violations": len(raw.violations),
        "violation_samples": raw.violations[:3],
        "seen_late_p50_s": percentile(late, 0.5),
        "seen_late_p95_s": percentile(late, 0.95),
        "parent_cpu_s": raw.parent_cpu_s,
        "azurite_cpu_s": raw.azurite_cpu_s,
        "child_exit_code": raw.rusage["exit_code"],
    }
    if workload.throttle:
        out.update(sustained_post_rate(records))
    if raw.processes > 1:
        out["per_process"] = per_process(records)
    if raw.profile:
        out["profile"] = raw.profile
    return out


def add_ratios(results: dict[str, dict]) -> None:
    """Each contender's RATIO_FIELDS divided by the floor's (None where the floor's is 0 or absent)."""
    floor = results.get(FLOOR)
    for result in results.values():
        ratios = {}
        for key in RATIO_FIELDS:
            base, value = (floor or {}).get(key), result.get(key)
            ratios[key] = value / base if base and value is not None and not math.isnan(base) else None
        result["ratio_to_ideal"] = ratios


def app_result(results: dict[str, dict]) -> dict | None:
    """The app contender's figures, whether it ran as one process (``app``) or K (``app×K``)."""
    return next((r for name, r in results.items() if name.split("×")[0] == "app"), None)


def derived(results: dict[str, dict], workload: Workload) -> dict:
    """Figures across contenders: the app's own CPU (app less the no-op host), ARM's limit for
    one subscription with this workload."""
    out: dict = {}
    app, noop = app_result(results), results.get("noop-host")
    if app and noop:
        own = app["cpu_ms_per_deletion"] - noop["cpu_ms_per_deletion"]
        out["app_own_cpu_ms_per_deletion"] = own
        aio = results.get("sdk-aio")
        if aio:
            out["app_own_cpu_vs_sdk_aio"] = own / aio["cpu_ms_per_deletion"]
    reads_rate, writes_rate = ARM_READS[1], ARM_WRITES[1]
    out["arm_sustainable_deletions_per_s_one_subscription"] = min(writes_rate, reads_rate / workload.polls_due)
    return out
