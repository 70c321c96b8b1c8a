"""The benchmark's table (plain text for a terminal, or Markdown for the README) and its JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from localdev.bench.plan import FLOOR

# (heading, field, format); the ratio to the floor is shown beside each field that has one
COLUMNS = (
    ("wall s", "wall_s", "{:.1f}"),
    ("CPU ms/del", "cpu_ms_per_deletion", "{:.2f}"),
    ("CPU ms/call", "cpu_ms_per_call", "{:.2f}"),
    ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
    ("POST/del", "posts_per_deletion", "{:.2f}"),
    ("GET/del", "gets_per_deletion", "{:.2f}"),
    ("early GETs", "early_gets", "{:d}"),
    ("tokens", "tokens", "{:d}"),
    ("429s", "throttled", "{:d}"),
    ("TLS conns", "connections", "{:d}"),
    ("seen late p50/p95 s", None, None),
)


def _number(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def _cell(result: dict, field: str | None, fmt: str | None) -> str:
    if field is None:
        p50, p95 = result.get("seen_late_p50_s"), result.get("seen_late_p95_s")
        return "-" if p50 is None else f"{p50:.2f}/{p95:.2f}"
    text = _number(result.get(field), fmt or "{}")
    ratio = (result.get("ratio_to_ideal") or {}).get(field)
    if result["contender"] != FLOOR and ratio is not None:
        text += f" ({ratio:.1f}x)"
    return text


def rows(results: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    heads = ["contender", "done ok/failed", *(c[0] for c in COLUMNS)]
    body = []
    for name, result in results.items():
        done = f"{result['succeeded']}/{result['failed']}" + (" TIMEOUT" if result.get("timed_out") else "")
        body.append([name, done, *(_cell(result, f, fmt) for _, f, fmt in COLUMNS)])
    return heads, body


def text_table(results: dict[str, dict]) -> str:
    heads, body = rows(results)
    widths = [max(len(r[i]) for r in [heads, *body]) for i in range(len(heads))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(heads), line(["-" * w for w in widths]), *(line(r) for r in body)])


def markdown_table(results: dict[str, dict]) -> str:
    heads, body = rows(results)
    out = ["| " + " | ".join(heads) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(heads) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(out)


def process_lines(name: str, result: dict) -> list[str]:
    """A contender of several processes: what the sum hides (the largest RSS, each one's calls)."""
    k = result.get("processes", 1)
    if k <= 1:
        return []
    out = [
        f"{name}: {k} processes on the same queues (the first runs the poll timer, the others submit and "
        f"poison only); CPU and peak RSS are their sums: RSS {result['peak_rss_mb']:.0f} MB, the largest "
        f"process {result['peak_rss_mb_max_process']:.0f} MB; tokens {result['tokens']} (one per process)"
    ]
    calls = result.get("per_process") or []
    if calls:
        columns = (("POSTs", "posts"), ("GETs", "gets"), ("429s", "throttled"))
        shares = ", ".join(f"{head} " + "/".join(str(p[key]) for p in calls) for head, key in columns)
        out.append(f"{name}: ARM calls of each process (told apart by its token): {shares}")
    return out


def throttle_lines(results: dict[str, dict], workload: dict, derived: dict) -> list[str]:
    if not workload.get("throttle"):
        return []
    limit = derived["arm_sustainable_deletions_per_s_one_subscription"]
    out = [
        f"ARM throttling on, {workload['subscription_count']} subscription(s): writes 200 + 10/s, reads 250 + 25/s; "
        f"with {workload['polls_due']} status GETs per deletion the reads allow {limit:.2f} deletions/s sustained",
    ]
    for name, r in results.items():
        if r.get("posts", 0) == 0:
            continue
        rate, frac = r.get("sustained_post_rate"), r.get("fraction_of_refill")
        sustained = "-" if rate is None else f"{rate:.2f}/s = {frac:.1%} of the refill (10/s)"
        out.append(
            f"  {name:10} sustained POST rate after the burst {sustained}; 429s {r['throttled']} "
            f"({r['throttled_fraction']:.1%} of {r['arm_calls']} calls); deletions failed or given up "
            f"{r['failed']}, without an outcome {r['deletions'] - r['succeeded'] - r['failed']}"
        )
    return out


def summary_lines(results: dict[str, dict], workload: dict, derived: dict) -> list[str]:
    out = [
        f"N={workload['count']} deletions over {workload['subscription_count']} subscription(s); "
        f"operation {workload['duration']:g} s, Retry-After {workload['retry_after']} s, latency {workload['latency'] * 1000:g} ms; "
        f"status GETs due per deletion: {workload['polls_due']}. Ratios in brackets: to ideal."
    ]
    own = derived.get("app_own_cpu_ms_per_deletion")
    if own is not None:
        line = f"app's own CPU per deletion (app less noop-host): {own:.2f} ms"
        if "app_own_cpu_vs_sdk_aio" in derived:
            line += f" = {derived['app_own_cpu_vs_sdk_aio']:.2f}x sdk-aio's {results['sdk-aio']['cpu_ms_per_deletion']:.2f} ms"
        out.append(line)
    for name, r in results.items():
        out += process_lines(name, r)
        if r.get("violations"):
            out.append(
                f"{name}: {r['violations']} call(s) the emulator found against the spec, e.g. {r['violation_samples'][0]}"
            )
        if r.get("errors"):
            out.append(f"{name}: errors, e.g. {' '.join(r['errors'][0].split())[:200]}")
    return out + throttle_lines(results, workload, derived)


def write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
