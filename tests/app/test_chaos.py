"""The chaos run: its plan, its judgement of the events it read, and a CI-sized run of the app
through every fault (120 requests, shorter fault windows)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from localdev.chaos.observe import SeenEvent
from localdev.chaos.plan import make_plan
from localdev.chaos.report import build_report, percentile
from tests.support.paths import ROOT

TYPE = "ScVmm.CheckpointDelete."


def event(request_id: str, outcome: str, at: str = "2026-01-01T00:00:10Z", code: str | None = None) -> SeenEvent:
    data = {"requestId": request_id, "status": outcome}
    if code:
        data["error"] = {"code": code}
    return SeenEvent({"id": f"{request_id}:{outcome.lower()}", "type": TYPE + outcome, "time": at, "data": data}, 0.0)


# -- the plan ---------------------------------------------------------------------------------------
def test_the_plan_spreads_kinds_vms_and_subscriptions_and_repeats_by_seed():
    plan = make_plan(2000, seed=5)
    again = make_plan(2000, seed=5)
    assert [(r.request_id, r.checkpoint_id) for r in plan.requests] == [
        (r.request_id, r.checkpoint_id) for r in again.requests
    ]
    assert [r.request_id for r in make_plan(2000, seed=6).requests] != [r.request_id for r in plan.requests]
    kinds = plan.kind_counts()
    assert sum(kinds.values()) == 2000 == len({r.request_id for r in plan.requests})
    assert 20 <= kinds["gone"] <= 60 and 60 <= kinds["fails"] <= 150
    assert len(plan.subscriptions) == 4 and len(plan.instances) > 1500
    assert 40 <= plan.vms_with_several_requests() <= 200
    for r in plan.requests:
        chain = plan.instances[r.resource_uri]
        assert (r.checkpoint_id in chain) == (r.kind != "gone")
        if r.kind != "gone":
            assert plan.scenarios[r.checkpoint_id].succeeds == (r.kind == "succeeds")
            assert plan.scenarios[r.checkpoint_id].retry_after == 1


def test_messages_are_the_request_as_json_or_its_base64():
    plan = make_plan(4, seed=1)
    texts = {r.request_id: r.message() for r in plan.requests}
    plain = [r for r in plan.requests if not r.base64][0]
    assert json.loads(texts[plain.request_id])["checkpointId"] == plain.checkpoint_id
    encoded = [r for r in plan.requests if r.base64][0]
    assert not texts[encoded.request_id].startswith("{")


# -- the judgement ----------------------------------------------------------------------------------
def test_the_report_finds_each_kind_of_violation():
    plan = make_plan(6, seed=3)
    r = {req.request_id: req for req in plan.requests}
    ids = sorted(r)
    for req in plan.requests:
        req.enqueued_at = 1767225600.0  # 2026-01-01T00:00:00Z
    gone = {ids[1], ids[2], ids[3]}  # ARM's truth: these checkpoints are gone
    events = [
        event(ids[0], "Succeeded"),  # but its checkpoint still exists
        event(ids[1], "Succeeded"),
        event(ids[1], "Succeeded"),  # a duplicate: allowed
        event(ids[2], "Succeeded"),
        event(ids[2], "Failed", code="RetriesExhausted"),  # contradictory, and the Failed is untrue
        event(ids[3], "Failed", code="Conflict"),  # its checkpoint is gone
        event(ids[4], "Failed", at="2026-01-01T00:01:40Z", code="CheckpointDeleteFailed"),  # true
        # ids[5]: no terminal event at all
    ]
    poison = [json.dumps({"requestId": ids[5]}), json.dumps({"requestId": ids[4]})]
    report = build_report(
        plan.requests,
        events,
        ["not json"],
        poison,
        lambda uri, checkpoint: not any(r[i].checkpoint_id == checkpoint for i in gone),
        [],
        {},
    )
    table = report.as_json()["table"]
    assert table["terminal events (unique ids)"] == 6
    assert table["duplicate terminal events (allowed)"] == 1
    assert table["contradictory outcomes"] == 1
    assert {c["requestId"] for c in report.violations["contradictory outcomes"]} == {ids[2]}
    untrue = {(c["requestId"], c["outcome"]) for c in report.violations["outcomes that differ from ARM's truth"]}
    assert untrue == {(ids[0], "Succeeded"), (ids[2], "Failed"), (ids[3], "Failed")}
    assert [c["requestId"] for c in report.violations["lost requests"]] == [ids[5]]
    assert [c["requestId"] for c in report.violations["poison messages without an event"]] == [ids[5]]
    assert table["unreadable events"] == 1
    assert table["enqueue to terminal event max s"] == 100.0
    assert not report.ok


def test_a_clean_run_is_ok():
    plan = make_plan(3, seed=4)
    for req in plan.requests:
        req.enqueued_at = 1767225600.0
    events = [event(req.request_id, "Succeeded") for req in plan.requests]
    report = build_report(plan.requests, events, [], [], lambda uri, checkpoint: False, [], {})
    assert report.ok
    assert report.as_json()["table"]["enqueue to terminal event p50 s"] == 10.0


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (50.0, 95.0, 100.0)
    assert percentile([], 50) is None


# -- a CI-sized run -----------------------------------------------------------------------------------
def test_a_ci_sized_chaos_run_ends_every_request_in_one_true_outcome(tmp_path):
    report_path = tmp_path / "chaos.json"
    command = [
        sys.executable,
        "-m",
        "localdev.chaos",
        "--count=120",
        "--seed=11",
        "--enqueue-over=20",
        "--kill-every=12",
        "--identity-garbage=4",
        "--identity-hang=6",
        "--eventgrid-down=10",
        "--azurite-down=3",
        "--settle=20",
        # typically done in about three minutes. A status URL that meets transient failures in a row
        # waits out the app's backoff (15 s, doubling): after five in a row the sixth read comes
        # 15 + 30 + 60 + 120 + 240 = 465 s after the first failure, which a limit of 330 s did not
        # leave room for (it took one request of a run of 120 past it)
        "--time-limit=540",
        f"--run-dir={tmp_path / 'run'}",
        f"--json={report_path}",
    ]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=660)
    output = done.stdout[-6000:] + done.stderr[-3000:]
    assert report_path.exists(), output
    report = json.loads(report_path.read_text())
    table = report["table"]
    for label in report["must_be_zero"]:
        detail = {"arm_violations": report["arm_violations"], "cases": report["violations"].get(label)}
        assert table[label] == 0, f"{label}: {table[label]}\n{json.dumps(detail)[:4000]}\n{output}"
    assert table["requests"] == 120 and table["terminal events (unique ids)"] == 120, output
    assert table["all requests terminal before the time limit"] is True, output
    assert done.returncode == 0, output
    # the faults did happen
    assert table["faults: host kills (SIGKILL)"] >= 3
    assert table["faults: Azurite restarts (stopped, started again)"] == 1
    assert sum(table["faults: ARM chaos"].values()) > 0
    assert sum(table["faults: Event Grid publishes met by a fault"].values()) > 0
    assert report["fault_problems"] == []
    assert time.monotonic() - started < 640
