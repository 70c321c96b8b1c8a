"""The benchmark's own measuring: a small run of scripts/bench's main() (the ideal client and the
app in the local host, each in its own process, against the real stand-ins), and on made-up
figures: the early-GET rule, several app processes measured as one, and the figures of
localdev.bench.inflight_report."""

from __future__ import annotations

import json
from types import SimpleNamespace

from localdev.arm_records import RecordedRequest
from localdev.bench import hosting, inflight_report, noop_app
from localdev.bench.__main__ import main
from localdev.bench.children import combine
from localdev.bench.measure import app_result, early_gets, per_process
from localdev.bench.report import process_lines
from localdev.functions_host import LocalHost

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


def test_several_processes_are_measured_as_one_contender():
    reports = [
        {"ended": 10.0, "cpu_user": 1.0, "cpu_system": 0.5, "outcomes": {}},
        {"ended": 12.0, "cpu_user": 2.0, "cpu_system": 0.25, "outcomes": {}},
    ]
    rusages = [
        {"cpu_user": 3.0, "cpu_system": 1.0, "max_rss_kb": 60_000, "exit_code": 0},
        {"cpu_user": 4.0, "cpu_system": 1.0, "max_rss_kb": 70_000, "exit_code": -9},
    ]
    report, usage = combine(reports, rusages)
    assert (report["cpu_user"], report["cpu_system"], report["ended"]) == (3.0, 0.75, 12.0)
    assert usage["max_rss_kb"] == 130_000 and usage["max_rss_kb_max"] == 70_000
    assert usage["cpu_user"] == 7.0 and usage["exit_code"] == -9
    assert hosting.label("app", 3) == "app×3" and hosting.label("app", 1) == "app"
    assert app_result({"ideal": {"n": 0}, "app×3": {"n": 3}}) == {"n": 3}


def test_only_the_first_app_process_runs_the_poll_timer():
    stand = SimpleNamespace(
        azurite=SimpleNamespace(connection_string="UseDevelopmentStorage=true"),
        arm=SimpleNamespace(endpoint="https://127.0.0.1:1", ca_bundle_path="/ca.pem"),
    )
    queues = {"CHECKPOINT_REQUESTS_QUEUE": "b-requests", "CHECKPOINT_TRACKING_QUEUE": "b-tracking"}
    queues["CHECKPOINT_EVENTS_QUEUE"] = "b-events"
    first = LocalHost(noop_app.app, hosting.app_settings(stand, queues))
    others = LocalHost(noop_app.app, hosting.app_settings(stand, queues, poll_timer=False))
    assert list(first.timer_functions) == [hosting.POLL_FUNCTION]
    assert not others.timer_functions
    assert (
        set(others.queue_functions)
        == set(first.queue_functions)
        == {
            "submit_checkpoint_deletion",
            "report_poisoned_requests",
        }
    )


def test_calls_are_told_apart_by_the_token_of_each_process():
    calls = [_call("submit", 1.0, 202), _call("submit", 1.1, 429), _call("status", 2.0, 202)]
    calls[0].token_fingerprint, calls[1].token_fingerprint, calls[2].token_fingerprint = "a", "b", "a"
    assert per_process(calls) == [
        {"posts": 1, "gets": 1, "throttled": 0},
        {"posts": 1, "gets": 0, "throttled": 1},
    ]
    result = {"processes": 2, "peak_rss_mb": 130.0, "peak_rss_mb_max_process": 70.0, "tokens": 2}
    lines = process_lines("app×2", {**result, "per_process": per_process(calls)})
    assert "the largest process 70 MB" in lines[0] and "POSTs 1/1, GETs 1/0, 429s 0/1" in lines[1]
    assert process_lines("app", {**result, "processes": 1}) == []


def test_inflight_rates_count_from_when_the_poller_comes_round_again():
    # 4 operations: a, b read at 0.2 and 0.4 s, c and d at 1.5 s; a read again at 3.1 s, then 2 a second
    reads = [(0.2, "a"), (0.4, "b"), (1.5, "c"), (1.5, "d"), (3.1, "a"), (3.6, "b")]
    reads += [(t + 0.5, op) for t in range(4, 10) for op in ("c", "d")]
    rates = inflight_report.read_rates(reads, operations=4, seconds=10)
    assert rates["per_second"] == [2, 2, 0, 2, 2, 2, 2, 2, 2, 2]
    assert rates["first_reread_s"] == 3.1 and rates["all_read_s"] == 1.5
    assert rates["cycling_from_s"] == 3.1 and rates["steady_seconds"] == 6
    assert rates["reads_per_s_median"] == 2 and rates["reads_per_s_p10"] == 2
    # never came round: no steady figures
    assert inflight_report.read_rates([(0.5, "a")], operations=2, seconds=3)["reads_per_s_median"] is None


def test_inflight_memory_and_bounds():
    samples = [{"t": float(t), "rss_mb": 50.0 + min(t, 20) * 0.5} for t in range(0, 61)]
    rss = inflight_report.rss_figures(samples)
    assert (rss["rss_start_mb"], rss["rss_30s_mb"], rss["rss_end_mb"], rss["rss_flat"]) == (50.0, 60.0, 60.0, True)
    samples[-1]["rss_mb"] = 70.0
    assert inflight_report.rss_figures(samples)["rss_flat"] is False

    def at(t, app, emulator, azurite, busy):
        return {
            "t": t,
            "app_cpu_s": app,
            "emulator_cpu_s": emulator,
            "azurite_cpu_s": azurite,
            "machine_busy_s": busy,
            "machine_total_s": 2 * t,
        }

    util = inflight_report.utilisation([at(0, 0, 0, 0, 0), at(5, 1, 1, 1, 3), at(15, 9, 3, 2, 13)], since=5)
    assert util["app"] == 0.8 and util["emulator"] == 0.2 and util["azurite"] == 0.1
    assert util["machine"] == 0.5 and abs(util["other_cpus"] - 0.0) < 1e-9
    assert inflight_report.bounds(util) == ["app"]
    # the sample at k+1 s covers second k: seconds 1 and 2 had tracking-queue traffic (5 calls each)
    ticks = [{"t": float(t), "storage_calls": {"reschedule": calls}} for t, calls in enumerate([0, 0, 5, 10, 10])]
    phases = inflight_report.storage_phases(ticks, [9, 300, 100, 120], since=1)
    assert phases["busy_seconds"] == 2 and phases["reads_per_s_median_busy"] == 200
    assert phases["quiet_seconds"] == 1 and phases["reads_per_s_median_quiet"] == 120
    assert inflight_report.bounds({"app": 0.5, "azurite": 0.95, "machine": 0.85}) == ["azurite", "machine"]
