"""The ARM emulator's VM instances (the truth deletions change), lost answers and chaos, driven over
HTTPS with plain requests."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import requests

from localdev.arm_emulator import ArmEmulator, Chaos, Deletion, Fault, Scenario
from localdev.arm_spec import load_record

ARM = "https://management.azure.com"
SUB = "00000000-0000-0000-0000-0000000000a1"
VM = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm1"
VM2 = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm2"
T = 10  # client timeout, seconds


@pytest.fixture(autouse=True)
def _fresh(no_proxies, arm):
    arm.reset()
    yield
    arm.reset()  # the emulator is shared by the session: leave no chaos behind


@pytest.fixture
def session(identity, arm):
    s = requests.Session()
    s.trust_env = False  # the emulator's CA, whatever REQUESTS_CA_BUNDLE says
    s.headers["Authorization"] = "Bearer " + identity.mint(ARM)
    s.verify = arm.ca_bundle_path
    yield s
    s.close()


def _error(resp: requests.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"}
    assert {"code", "message", "target", "details", "additionalInfo"} <= set(body["error"])
    return body["error"]


def _instance(session, arm, uri=VM) -> requests.Response:
    r = session.get(arm.instance_url_for(uri), timeout=T)
    assert r.headers.get("x-ms-request-id"), "every answer carries x-ms-request-id"
    return r


def _chain(resp: requests.Response) -> list[tuple[str, str | None]]:
    assert resp.status_code == 200, resp.text
    cps = resp.json()["properties"]["infrastructureProfile"]["checkpoints"]
    return [(c["checkpointID"], c.get("parentCheckpointID")) for c in cps]


def _post(session, arm, checkpoint_id: str | None, uri=VM) -> requests.Response:
    return session.post(arm.url_for(uri), json={} if checkpoint_id is None else {"id": checkpoint_id}, timeout=T)


# ---------------------------------------------------------------------------------------------
# The instance GET
# ---------------------------------------------------------------------------------------------
def test_undefined_instance_answers_resource_not_found(arm, session):
    r = _instance(session, arm)
    assert r.status_code == 404 and _error(r)["code"] == "ResourceNotFound"
    assert arm.checkpoints(VM) == [] and not arm.checkpoint_exists(VM, "cp-1")
    (rec,) = arm.requests(kind="instance")
    assert rec.method == "GET" and rec.status == 404
    assert arm.violations == []  # reading an instance nobody defined is not the caller's fault


def test_defined_instance_answers_its_checkpoint_chain(arm, session):
    arm.set_checkpoints(
        VM,
        ["root", {"checkpointID": "mid", "name": "before patch", "description": "weekly"}, {"checkpointID": "tip"}],
    )
    assert arm.checkpoints(VM) == ["root", "mid", "tip"]
    assert arm.checkpoint_exists(VM.upper() + "/", "mid") and not arm.checkpoint_exists(VM, "nope")
    r = _instance(session, arm, VM.lower())  # resourceUri keys ignore case
    body = r.json()
    assert body["id"] == VM + "/providers/Microsoft.ScVmm/virtualMachineInstances/default"
    assert body["name"] == "default" and body["type"] == "Microsoft.ScVmm/virtualMachineInstances"
    assert body["extendedLocation"]["type"] == "customLocation"
    assert body["properties"]["provisioningState"] == "Succeeded"
    cps = body["properties"]["infrastructureProfile"]["checkpoints"]
    assert cps[0] == {"checkpointID": "root", "name": "root", "description": ""}  # the root has no parent
    assert cps[1] == {
        "checkpointID": "mid",
        "name": "before patch",
        "description": "weekly",
        "parentCheckpointID": "root",
    }
    assert _chain(r) == [("root", None), ("mid", "root"), ("tip", "mid")]

    arm.set_checkpoints(VM, ["other"])  # replaces the list
    assert _chain(_instance(session, arm)) == [("other", None)]
    assert arm.requests(kind="instance")[-1].status == 200 and arm.violations == []


def test_set_checkpoints_rejects_malformed_chains(arm):
    for bad in (["a", "a"], [{"name": "no id"}], [{"checkpointID": "a", "colour": "red"}], [""], [3]):
        with pytest.raises((ValueError, TypeError)):
            arm.set_checkpoints(VM, bad)
    with pytest.raises(ValueError):
        arm.set_checkpoints("/subscriptions//x", ["a"])
    assert arm.checkpoints(VM) == []


def test_instance_get_is_checked_like_other_calls(arm, session):
    arm.set_checkpoints(VM, ["a"])
    url = arm.instance_url_for(VM)
    assert requests.get(url, verify=arm.ca_bundle_path, timeout=T).status_code == 401
    assert session.get(url.split("?")[0], timeout=T).status_code == 400
    assert session.get(url.replace("2024-06-01", "2023-10-07"), timeout=T).status_code == 400
    assert session.post(url, json={}, timeout=T).status_code == 405
    assert len(arm.violations) == 4
    assert all(r.kind == "instance" for r in arm.requests())


def test_instance_body_matches_the_spec(arm, session):
    record = load_record()  # our record of the operation (test_spec_drift.py compares it with the spec)
    get = record["instanceGet"]
    assert arm.rules.instance_path_template == get["path"]
    arm.set_checkpoints(VM, ["a", {"checkpointID": "b", "name": "n", "description": "d"}])
    body = _instance(session, arm).json()
    arm.rules.validator_for(get["responses"]["200"]["definition"]).validate(body)
    # the schemas allow any extra member: check that every member sent is one the record declares
    defs = record["definitions"]
    assert set(body) <= set(defs["VirtualMachineInstance"]["properties"])
    assert set(body["properties"]) <= set(defs["VirtualMachineInstanceProperties"]["properties"])
    infra = body["properties"]["infrastructureProfile"]
    assert set(infra) <= set(defs["InfrastructureProfile"]["properties"])
    assert all(set(c) <= set(defs["Checkpoint"]["properties"]) for c in infra["checkpoints"])
    assert set(body["extendedLocation"]) <= set(defs["ExtendedLocation"]["properties"])
    r = _instance(session, arm, VM2)
    arm.rules.validator_for(get["responses"]["default"]["definition"]).validate(r.json())


# ---------------------------------------------------------------------------------------------
# Truth rules
# ---------------------------------------------------------------------------------------------
def test_accepted_deletion_removes_the_checkpoint_only_once_completed(arm, session):
    arm.set_checkpoints(VM, ["a", "b", "c"])
    arm.default = Scenario(done_after_polls=2)
    r = _post(session, arm, "b")
    assert r.status_code == 202
    loc = r.headers["Location"]
    for _ in range(2):
        assert session.get(loc, timeout=T).status_code == 202
        assert arm.checkpoint_exists(VM, "b")
        assert "b" in [c for c, _ in _chain(_instance(session, arm))]
    assert arm.deletions == []
    assert session.get(loc, timeout=T).status_code == 200
    assert _chain(_instance(session, arm)) == [("a", None), ("c", "a")]  # c now descends from a
    (op,) = arm.operations
    (d,) = arm.deletions
    assert isinstance(d, Deletion)
    assert (d.resource_uri, d.checkpoint_id, d.operation_id) == (VM, "b", op.id) and d.time == op.completed_at
    assert session.get(loc, timeout=T).status_code == 200 and len(arm.deletions) == 1
    assert arm.violations == []


def test_operation_completes_by_time_with_nobody_polling(arm, session):
    arm.set_checkpoints(VM, ["a"])
    arm.default = Scenario(submit="accepted_async", done_after_seconds=0.3)
    r = _post(session, arm, "a")
    assert r.status_code == 202
    assert _chain(_instance(session, arm)) == [("a", None)]
    time.sleep(0.35)
    assert _chain(_instance(session, arm)) == []  # the instance GET settled the due operation
    (op,) = arm.operations
    assert op.polls == 0 and op.done and op.completed_at == pytest.approx(op.created + 0.3)
    assert arm.deletions[0].time == pytest.approx(op.created + 0.3)
    status = session.get(r.headers["Azure-AsyncOperation"], timeout=T).json()
    assert status["status"] == "Succeeded"


def test_post_settles_due_operations_and_answers_404_for_a_gone_checkpoint(arm, session):
    arm.set_checkpoints(VM, ["a", "b"])
    arm.default = Scenario(done_after_seconds=0.2)
    assert _post(session, arm, "a").status_code == 202
    assert _post(session, arm, "a").status_code == 202  # still there: a second deletion may start
    time.sleep(0.25)
    r = _post(session, arm, "a")  # no GET in between: the POST itself settles the VM first
    err = _error(r)
    assert r.status_code == 404 and err["code"] == "NotFound" and "'a'" in err["message"]
    assert len(arm.operations) == 2 and arm.checkpoints(VM) == ["b"]
    assert [d.checkpoint_id for d in arm.deletions] == ["a"]  # removed once, by the first to complete
    assert arm.violations == []
    arm.rules.validator_for("ErrorResponse").validate(r.json())


def test_post_for_an_absent_checkpoint_starts_nothing_and_empty_body_deletes_nothing(arm, session):
    arm.set_checkpoints(VM, ["a"])
    r = _post(session, arm, "zzz")
    assert r.status_code == 404 and "zzz" in _error(r)["message"] and r.headers.get("x-ms-request-id")
    assert arm.operations == []
    loc = _post(session, arm, None).headers["Location"]
    assert session.get(loc, timeout=T).status_code == 200
    assert arm.checkpoints(VM) == ["a"] and arm.deletions == []
    # an undefined instance keeps the plain behaviour: any checkpoint is accepted
    assert _post(session, arm, "zzz", VM2).status_code == 202


@pytest.mark.parametrize("final", ["Failed", "Canceled", Fault(status=500)])
def test_failed_operations_leave_the_checkpoint(arm, session, final):
    arm.set_checkpoints(VM, ["a"])
    arm.default = Scenario(final=final)
    loc = _post(session, arm, "a").headers["Location"]
    assert session.get(loc, timeout=T).status_code >= 400
    assert arm.operations[0].done
    assert arm.checkpoints(VM) == ["a"] and arm.deletions == []


@pytest.mark.parametrize(("answer", "status"), [("done_200", 200), ("done_204", 204)])
def test_done_at_once_removes_at_once(arm, session, answer, status):
    arm.set_checkpoints(VM, ["a", "b"])
    arm.default = Scenario(submit=answer)
    assert _post(session, arm, "b").status_code == status
    assert arm.checkpoints(VM) == ["a"] and arm.operations == []
    (d,) = arm.deletions
    assert d.checkpoint_id == "b" and d.operation_id is None


def test_one_job_per_vm(arm, session):
    arm.set_checkpoints(VM, ["a", "b"])
    arm.default = Scenario(done_after_polls=1)
    assert _post(session, arm, "a").status_code == 202
    assert _post(session, arm, "b").status_code == 202  # off by default
    arm.reset()
    arm.set_checkpoints(VM, ["a", "b"])
    arm.default = Scenario(done_after_polls=1)
    arm.one_job_per_vm = True
    r = _post(session, arm, "a")
    assert r.status_code == 202
    busy = _post(session, arm, "b")
    err = _error(busy)
    assert busy.status_code == 409 and err["code"] == "Conflict" and "busy with another job" in err["message"]
    assert _post(session, arm, None).status_code == 409  # any POST on that VM
    assert _post(session, arm, "x", VM2).status_code == 202  # another VM is not busy
    assert len(arm.operations) == 2
    assert session.get(r.headers["Location"], timeout=T).status_code == 202
    assert session.get(r.headers["Location"], timeout=T).status_code == 200
    assert _post(session, arm, "b").status_code == 202
    assert arm.checkpoints(VM) == ["b"] and arm.violations == []


def test_one_job_per_vm_admits_one_of_many_concurrent_posts(identity, arm):
    arm.set_checkpoints(VM, [f"cp-{i}" for i in range(8)])
    arm.one_job_per_vm = True
    arm.default = Scenario(done_after_polls=1)
    token = identity.mint(ARM)
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def client(i: int) -> None:
        with requests.Session() as s:
            s.trust_env = False
            barrier.wait()
            r = s.post(
                arm.url_for(VM),
                json={"id": f"cp-{i}"},
                headers={"Authorization": f"Bearer {token}"},
                verify=arm.ca_bundle_path,
                timeout=T,
            )
            statuses.append(r.status_code)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [202] + [409] * 7 and len(arm.operations) == 1


def test_one_job_per_vm_is_freed_by_time(arm, session):
    arm.set_checkpoints(VM, ["a", "b"])
    arm.one_job_per_vm = True
    arm.default = Scenario(done_after_seconds=0.2)
    assert _post(session, arm, "a").status_code == 202
    assert _post(session, arm, "b").status_code == 409
    time.sleep(0.25)
    assert _post(session, arm, "b").status_code == 202  # the POST settled the first operation
    assert [d.checkpoint_id for d in arm.deletions] == ["a"]


def test_instance_faults(arm, session):
    arm.set_checkpoints(VM, ["a"])
    arm.script(
        VM,
        Scenario(
            instance_faults=[Fault.throttled(2), Fault(status=500), Fault.dropped(), Fault.lost(), Fault.slow(0.2)]
        ),
    )
    a = _instance(session, arm)
    assert a.status_code == 429 and a.headers["Retry-After"] == "2" and _error(a)["code"] == "TooManyRequests"
    b = _instance(session, arm)
    assert b.status_code == 500 and b.content == b""
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            session.get(arm.instance_url_for(VM), timeout=T)
    t0 = time.monotonic()
    assert _instance(session, arm).status_code == 200 and time.monotonic() - t0 >= 0.2
    assert _instance(session, arm).status_code == 200
    assert [r.dropped for r in arm.requests(kind="instance")] == [False, False, True, True, False, False]
    other = _instance(session, arm, VM2)  # faults are per resourceUri; VM2 gets the default scenario
    assert other.status_code == 404 and arm.violations == []


# ---------------------------------------------------------------------------------------------
# Lost answers
# ---------------------------------------------------------------------------------------------
def test_fault_lost_is_a_drop_after_processing():
    assert Fault.lost() == Fault(drop_after_processing=True) and Fault.lost(0.5).delay == 0.5
    for bad in ({"status": 500}, {"drop": True}):
        with pytest.raises(ValueError):
            Fault(drop_after_processing=True, **bad)


def test_lost_answer_starts_the_operation(arm, session):
    arm.set_checkpoints(VM, ["a", "b"])
    arm.script("a", Scenario(submit_faults=[Fault.lost()], poll_faults=[Fault.lost()], done_after_polls=1))
    arm.script("b", Scenario(submit="done_204", submit_faults=[Fault.lost()]))
    with pytest.raises(requests.ConnectionError):
        _post(session, arm, "a")
    (op,) = arm.operations
    (rec,) = arm.requests(kind="submit")
    assert rec.dropped and rec.status is None and rec.operation_id == op.id
    with pytest.raises(requests.ConnectionError):
        session.get(op.location_url, timeout=T)
    assert op.running_answers == 1  # the lost status GET counted ...
    assert session.get(op.location_url, timeout=T).status_code == 200  # ... so this one is done
    assert arm.checkpoints(VM) == ["b"]
    with pytest.raises(requests.ConnectionError):
        _post(session, arm, "b")
    assert arm.checkpoints(VM) == []  # done at once, answer lost: deleted all the same
    assert [d.checkpoint_id for d in arm.deletions] == ["a", "b"] and arm.violations == []


# ---------------------------------------------------------------------------------------------
# Throttling headers
# ---------------------------------------------------------------------------------------------
def test_instance_get_counts_against_the_reads_bucket(ca, identity, arm):
    with (
        ArmEmulator(ca, identity, throttle={"writes": (5, 0.001), "reads": (3, 0.001)}) as emu,
        requests.Session() as s,
    ):
        s.headers["Authorization"] = "Bearer " + identity.mint(ARM)
        s.trust_env = False
        s.verify = emu.ca_bundle_path
        emu.set_checkpoints(VM, ["a"])
        emu.default = Scenario(done_after_polls=5)
        post = s.post(emu.url_for(VM), json={"id": "a"}, timeout=T)
        assert post.status_code == 202 and post.headers["x-ms-ratelimit-remaining-subscription-writes"] == "4"
        assert "x-ms-ratelimit-remaining-subscription-reads" not in post.headers
        remaining = []
        for url in (emu.instance_url_for(VM), post.headers["Location"], emu.instance_url_for(VM)):
            g = s.get(url, timeout=T)
            assert g.status_code in (200, 202) and "x-ms-ratelimit-remaining-subscription-writes" not in g.headers
            remaining.append(g.headers["x-ms-ratelimit-remaining-subscription-reads"])
        assert remaining == ["2", "1", "0"]
        over = s.get(emu.instance_url_for(VM), timeout=T)
        assert over.status_code == 429 and _error(over)["code"] == "TooManyRequests"
        assert (
            int(over.headers["Retry-After"]) >= 1 and over.headers["x-ms-ratelimit-remaining-subscription-reads"] == "0"
        )
        assert emu.throttled == 1 and emu.violations == []
        assert [r.ratelimit_remaining for r in emu.requests(kind="instance")] == [2, 0, 0]
    # throttling off: no rate-limit headers
    with requests.Session() as s:
        s.headers["Authorization"] = "Bearer " + identity.mint(ARM)
        r = s.post(arm.url_for(VM), json={}, verify=arm.ca_bundle_path, timeout=T)
        assert r.status_code == 202 and not any(h.startswith("x-ms-ratelimit") for h in r.headers)


# ---------------------------------------------------------------------------------------------
# Chaos
# ---------------------------------------------------------------------------------------------
def test_chaos_rejects_bad_rates():
    with pytest.raises(ValueError):
        Chaos(error_rate=0.6, reset_rate=0.5)
    with pytest.raises(ValueError):
        Chaos(lost_rate=-0.1)
    assert Chaos().error_rate == 0.10 and Chaos().throttle_burst_seconds == 5.0


def test_chaos_injects_every_kind_and_no_violation(arm, session):
    arm.set_checkpoints(VM, ["a", "b"])
    status_url = _post(session, arm, None).headers["Location"]
    arm.chaos = Chaos(
        seed=11,
        error_rate=0.3,
        throttle_rate=0.05,
        throttle_burst_seconds=0.02,
        slow_rate=0.1,
        slow_seconds=0.01,
        reset_rate=0.1,
        lost_rate=0.1,
    )
    answers = []
    for i in range(300):
        try:
            if i % 3 == 0:
                r = _post(session, arm, None)
            elif i % 3 == 1:
                r = session.get(status_url, timeout=T)
            else:
                r = session.get(arm.instance_url_for(VM), timeout=T)
        except requests.ConnectionError:
            continue
        answers.append(r)
    counts = arm.chaos_counts
    assert set(counts) == {"error", "throttle", "slow", "reset", "lost"}
    assert all(n > 0 for n in counts.values()), counts
    records = arm.requests()
    assert arm.violations == [] and all(r.violation is None for r in records)
    assert sum(counts.values()) == sum(r.chaos is not None for r in records)
    for r in records:  # each kind did what it says
        if r.chaos == "error":
            assert r.status in (500, 502, 503, 504)
        elif r.chaos == "throttle":
            assert r.status == 429
        elif r.chaos == "reset":
            assert r.dropped and r.operation_id is None
        elif r.chaos == "lost":
            assert r.dropped and (r.kind == "instance" or r.operation_id is not None)
        elif r.chaos == "slow":
            assert r.status in (200, 202)
    assert {(r.status_code, bool(r.content)) for r in answers if r.status_code >= 500} == {
        (500, False),
        (500, True),
        (502, False),
        (503, True),
        (504, True),
    }
    for r in answers:
        assert r.headers.get("x-ms-request-id")
        if r.status_code == 429 or (r.status_code in (500, 503) and r.content):
            assert 1 <= int(r.headers["Retry-After"]) <= 3
        if r.status_code == 429:
            assert _error(r)["code"] == "TooManyRequests"
    lost_posts = [r for r in records if r.kind == "submit" and r.chaos == "lost"]
    assert {r.operation_id for r in lost_posts} <= {op.id for op in arm.operations}
    assert arm.checkpoints(VM) == ["a", "b"]  # {} bodies delete nothing, chaos or not

    arm.clear()  # forgets the counts, keeps the configuration and the instance
    assert arm.chaos_counts == dict.fromkeys(counts, 0) and arm.chaos is not None and arm.checkpoints(VM) == ["a", "b"]
    arm.chaos = None
    assert all(_post(session, arm, None).status_code == 202 for _ in range(20))
    assert sum(arm.chaos_counts.values()) == 0


def test_chaos_is_reproducible_with_a_seed(arm, session):
    def run() -> list[str | None]:
        arm.clear()
        arm.chaos = Chaos(seed=5, error_rate=0.3, throttle_rate=0.1, throttle_burst_seconds=0.0, slow_rate=0.0)
        for _ in range(40):
            with contextlib.suppress(requests.ConnectionError):
                _instance(session, arm, VM2)
        return [r.chaos for r in arm.requests()]

    first = run()
    assert first == run() and any(first) and not all(first)


def test_chaos_throttle_burst_holds_the_subscription(arm, session):
    other_sub = VM.replace(SUB, "00000000-0000-0000-0000-0000000000b2")
    arm.chaos = Chaos(
        seed=3,
        error_rate=0.0,
        throttle_rate=0.5,
        throttle_burst_seconds=2.0,
        slow_rate=0.0,
        reset_rate=0.0,
        lost_rate=0.0,
    )
    for _ in range(30):  # until a draw starts a burst
        if _instance(session, arm).status_code == 429:
            break
    else:
        raise AssertionError("no throttle burst started")
    started = arm.chaos_counts["throttle"]
    held = [_instance(session, arm) for _ in range(10)]
    assert all(r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 3 for r in held)  # every call
    assert arm.chaos_counts["throttle"] == started + 10
    # another subscription is not held: it draws for itself (with this seed, its draw injects nothing)
    assert _instance(session, arm, other_sub).status_code == 404
    assert _instance(session, arm).status_code == 429  # while the first one still is


# ---------------------------------------------------------------------------------------------
# clear / reset
# ---------------------------------------------------------------------------------------------
def test_clear_keeps_instances_and_reset_forgets_them(arm, session):
    arm.set_checkpoints(VM, ["a", "b"])
    arm.default = Scenario(submit="done_200")
    assert _post(session, arm, "a").status_code == 200
    arm.one_job_per_vm = True
    arm.chaos = Chaos(seed=1, error_rate=0.0)
    assert len(arm.deletions) == 1
    arm.clear()
    assert arm.deletions == [] and arm.checkpoints(VM) == ["b"]
    assert arm.one_job_per_vm and arm.chaos == Chaos(seed=1, error_rate=0.0)
    arm.reset()
    assert arm.checkpoints(VM) == [] and arm.chaos is None and not arm.one_job_per_vm
    assert _instance(session, arm).status_code == 404
