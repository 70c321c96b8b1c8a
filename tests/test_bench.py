"""The benchmark's own measuring: a small run of scripts/bench's main() (the ideal client and the
app in the local host, each in its own process, against the real stand-ins), and the early-GET
rule on records made up for it."""

from __future__ import annotations

import json

from localdev.arm_records import RecordedRequest
from localdev.bench.__main__ import main
from localdev.bench.measure import early_gets

FIELDS = (
    "deletions",
    "succeeded",
    "failed",
    "wall_s",
    "cpu_s",
    "cpu_ms_per_deletion",
    "cpu_ms_per_call",
    "process_cpu_s",
    "peak_rss_mb",
    "arm_calls",
    "posts",
    "gets",
    "posts_per_deletion",
    "gets_per_deletion",
    "polls_due_per_deletion",
    "operations_off_floor",
    "early_gets",
    "tokens",
    "throttled",
    "connections",
    "seen_late_p50_s",
    "parent_cpu_s",
    "ratio_to_ideal",
)


def test_bench_run_measures_each_contender(tmp_path):
    prefix = tmp_path / "bench"
    argv = ["--count", "20", "--contenders", "ideal,app", "--duration", "2", "--retry-after", "1"]
    argv += ["--subscriptions", "4", "--output", str(prefix), "--no-chart", "--timeout", "45"]

    assert main(argv) == 0

    document = json.loads((tmp_path / "bench.json").read_text())
    assert document["workload"]["polls_due"] == 2
    results = document["contenders"]
    assert set(results) == {"ideal", "app"}
    for name, result in results.items():
        missing = [f for f in FIELDS if result.get(f) is None]
        assert not missing, f"{name} lacks {missing}"
        assert result["succeeded"] == 20 and result["failed"] == 0, name
        assert result["posts"] == 20, name
        assert result["cpu_s"] > 0 and result["peak_rss_mb"] > 0, name
        assert set(result["ratio_to_ideal"]) >= {"cpu_ms_per_deletion", "gets_per_deletion", "wall_s"}

    ideal = results["ideal"]
    assert ideal["gets"] == 20 * 2  # exactly one status GET per poll due ...
    assert ideal["operations_off_floor"] == 0  # ... for every operation
    assert ideal["early_gets"] == 0
    assert ideal["tokens"] == 1
    assert ideal["ratio_to_ideal"]["cpu_ms_per_deletion"] == 1.0


def _call(kind: str, at: float, status: int, opid: str = "0" * 8 + "-0000-0000-0000-" + "0" * 12) -> RecordedRequest:
    path = "/subscriptions/x/deleteCheckpoint" if kind == "submit" else f"/providers/p/operationResults/{opid}"
    record = RecordedRequest("POST" if kind == "submit" else "GET", path, {}, {}, None, 1, at, kind=kind, status=status)
    record.operation_id = opid
    return record


def test_a_status_get_before_the_retry_after_has_passed_is_early():
    on_time = [_call("submit", 10.0, 202), _call("status", 11.01, 202), _call("status", 12.02, 200)]
    assert early_gets(on_time, retry_after=1) == (0, {"0" * 8 + "-0000-0000-0000-" + "0" * 12: 2})

    # a GET right after the POST, one before that GET's Retry-After, one before a 429's (1 s) has passed
    hasty = [_call("submit", 10.0, 202), _call("status", 10.01, 202), _call("status", 10.5, 429)]
    hasty += [_call("status", 11.2, 202), _call("status", 12.3, 200)]
    assert early_gets(hasty, retry_after=1)[0] == 3
