"""shared/policy.py (issue 11: retention policies): which checkpoints a policy deletes, and the event
of a policy run.

What is proved here:

- chain_order: a chain comes out root first however it is listed; bad input (no ids, repeated ids, cycles,
  several roots, unknown parents, entries that are no objects) gives the documented order, never an error
  or a loop; for generated lists, every entry a root reaches comes after its parent and before every entry
  no root reaches.
- select: never deletes one of the newest keepLatest (matching) checkpoints, never a non-matching one;
  kept and deleted partition the checkpoints, each in chain order; the result is the one an oracle gives.
- policy_event: what it builds validates against schemas/policy-event.schema.json (#completed, #failed);
  hand-broken events do not.

Reading a policy request and the schemas themselves: test_policy.py.

Hypothesis runs derandomized (fixed examples, no example database) so CI sees the same cases each run.
"""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.arm_answers import arm_error
from shared.errors import app_error
from shared.policy import (
    MAX_KEEP_LATEST,
    Policy,
    Selection,
    chain_order,
    checkpoint_id,
    name_matches,
    policy_event,
    select,
)
from tests.support.derandomized import HYPOTHESIS
from tests.support.policy import EVENT, TRACEPARENT, URI, assert_valid

# --- chain_order -----------------------------------------------------------------------------------


def cp(cid, parent=None, name=None, **more) -> dict:
    entry = {"checkpointID": cid, "name": name if name is not None else f"n-{cid}", "description": ""}
    if parent is not None:
        entry["parentCheckpointID"] = parent
    return entry | more


def chain(n: int, prefix: str = "c") -> list[dict]:
    return [cp(f"{prefix}{i}", f"{prefix}{i - 1}" if i else None) for i in range(n)]


def ids(entries) -> list:
    return [e.get("checkpointID") for e in entries]


def test_a_chain_comes_out_root_first_however_it_is_listed():
    entries = chain(12)
    for seed in range(20):
        listed = entries[:]
        random.Random(seed).shuffle(listed)
        ordered = chain_order(listed)
        assert ids(ordered) == ids(entries)
        assert all(a is b for a, b in zip(ordered, entries, strict=True))  # the entries themselves


def test_a_long_chain_needs_no_recursion():
    entries = chain(50_000)
    started = time.monotonic()
    assert ids(chain_order(entries[::-1])) == ids(entries)
    assert time.monotonic() - started < 2


A, B, C, D = (cp("a"), cp("b", "a"), cp("c", "b"), cp("d", "c"))
BAD_CHAINS = {
    "empty": ([], []),
    "not a list": (None, []),
    "an object, not a list": ({"checkpointID": "a"}, []),
    "text, not a list": ("abc", []),
    "entries that are no objects": ([None, 5, "a", ["a"], D, C, B, A], ["a", "b", "c", "d"]),
    "root with empty-string parent": ([cp("b", "a"), cp("a", "")], ["a", "b"]),
    "root with null parent": ([cp("b", "a"), cp("a", None, parentCheckpointID=None)], ["a", "b"]),
    "no checkpointID, or not a usable one": (
        [D, cp(None, "c"), cp("", "c"), cp(7, "c"), {"name": "x"}, C, B, A],
        ["a", "b", "c", "d"],
    ),
    "an unusable id still links its neighbours": (
        [cp("z", "x" * 257), cp("x" * 257, "a"), A, cp("q", "bad\nid"), cp("bad\nid", "z")],
        ["a", "z", "q"],
    ),
    "the same id twice: the first listed one counts": (
        [A, cp("b", "a", name="first"), cp("b", None, name="second"), C],
        ["a", "b", "c"],
    ),
    "several roots: in listed order, each with its chain": (
        [cp("y", "x"), D, cp("x"), C, B, A],
        ["x", "y", "a", "b", "c", "d"],
    ),
    "the tree of docs/policies.md": ([A, cp("c", "a"), B, cp("d", "c")], ["a", "c", "d", "b"]),
    "a tree: children in listed order, depth first": (
        [A, cp("c2", "a"), B, cp("d2", "c2"), C],
        ["a", "c2", "d2", "b", "c"],
    ),
    "unknown parent: after the rooted ones, as a root of its own": (
        [cp("q", "gone"), cp("r", "q"), B, A],
        ["a", "b", "q", "r"],
    ),
    "parent of another type: as an unknown one": (
        [cp("q", 5), cp("r", {"id": "a"}), cp("s", ["a"]), A],
        ["a", "q", "r", "s"],
    ),
    "a cycle: last, in listed order": (
        [cp("y", "x"), cp("x", "y"), B, A],
        ["a", "b", "y", "x"],
    ),
    "its own parent: last": ([cp("s", "s"), A], ["a", "s"]),
    "hanging off a cycle: last, in listed order": (
        [cp("t", "x"), cp("y", "x"), cp("x", "y"), A],
        ["a", "t", "y", "x"],
    ),
    "only a cycle": ([cp("x", "y"), cp("y", "x")], ["x", "y"]),
}


@pytest.mark.parametrize("case", BAD_CHAINS)
def test_bad_chains_have_the_documented_order(case):
    listed, expected = BAD_CHAINS[case]
    assert ids(chain_order(listed)) == expected


entry_ids = st.sampled_from(["a", "b", "c", "d", "e", "f", "", None, 5, "x" * 300, "bad\nid"])
entries = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "checkpointID": entry_ids,
            "parentCheckpointID": st.one_of(entry_ids, st.just({}), st.just(["a"])),
            "name": st.sampled_from(["n", None]),
        },
    ),
    st.none(),
    st.integers(),
    st.text(max_size=2),
)


def first_entries(listed: list) -> dict:
    found: dict = {}
    for entry in listed:
        if isinstance(entry, dict) and isinstance(entry.get("checkpointID"), str) and entry["checkpointID"]:
            found.setdefault(entry["checkpointID"], entry)
    return found


def rooted(entry: dict, first: dict) -> bool:
    """Whether following parents from `entry` ends (at a root or an unknown parent) without a cycle."""
    seen = set()
    while True:
        if entry["checkpointID"] in seen:
            return False
        seen.add(entry["checkpointID"])
        parent = entry.get("parentCheckpointID")
        if not isinstance(parent, str) or parent not in first:
            return True
        entry = first[parent]


def test_chain_order_properties():
    @settings(max_examples=600, **HYPOTHESIS)
    @given(st.lists(entries, max_size=14))
    def check(listed):
        ordered = chain_order(listed)
        assert chain_order(listed) == ordered  # deterministic
        first = first_entries(listed)
        assert ids(ordered) == [i for i in ids(ordered) if i in first]
        assert sorted(ids(ordered)) == sorted(i for i, e in first.items() if checkpoint_id(e))
        assert all(first[e["checkpointID"]] is e for e in ordered)  # the first listed entry of each id
        position = {e["checkpointID"]: n for n, e in enumerate(ordered)}
        flags = [rooted(e, first) for e in ordered]
        assert flags == sorted(flags, reverse=True)  # what a root reaches, then what none reaches
        for entry, is_rooted in zip(ordered, flags, strict=True):
            parent = entry.get("parentCheckpointID")
            if is_rooted and isinstance(parent, str) and parent in position:
                assert position[parent] < position[entry["checkpointID"]]
        unreached = [e for e, r in zip(ordered, flags, strict=True) if not r]
        assert unreached == [e for e in first.values() if e in unreached]  # in listed order

    check()


# --- select ----------------------------------------------------------------------------------------

NIGHTLY = [
    cp("c0", None, "base"),
    cp("c1", "c0", "nightly-1"),
    cp("c2", "c1", "pre-patch-2026-11"),
    cp("c3", "c2", "Nightly-3"),
    cp("c4", "c3", "NIGHTLY-4"),
    cp("c5", "c4", "pre-patch-2026-12"),
    cp("c6", "c5", "nightly-6"),
]
SELECTIONS = [
    (Policy(keep_latest=3), ["c0", "c1", "c2", "c3"]),
    (Policy(keep_latest=0), ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]),
    (Policy(keep_latest=7), []),
    (Policy(keep_latest=1000), []),
    (Policy(name_pattern="nightly-*"), ["c1", "c3", "c4", "c6"]),
    (Policy(name_pattern="PRE-PATCH-*"), ["c2", "c5"]),
    (Policy(name_pattern="pre-patch-2026-1?"), ["c2", "c5"]),
    (Policy(name_pattern="pre-patch-2026-1[!2]"), ["c2"]),
    (Policy(name_pattern="nightly"), []),  # the whole name
    (Policy(name_pattern="*"), ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]),
    (Policy(keep_latest=1, name_pattern="nightly-*"), ["c1", "c3", "c4"]),
    (Policy(keep_latest=2, name_pattern="pre-patch-*"), []),
    (Policy(keep_latest=2, name_pattern="pre-patch-*", dry_run=True), []),
    (Policy(keep_latest=0, name_pattern="base"), ["c0"]),
    (Policy(), []),  # neither rule (parse_policy never makes it): nothing
]


@pytest.mark.parametrize(("policy", "deleted"), SELECTIONS, ids=[repr(p) for p, _ in SELECTIONS])
def test_select(policy, deleted):
    selection = select(policy, chain_order(NIGHTLY[::-1]))
    assert selection == Selection(delete=deleted, keep=[i for i in ids(NIGHTLY) if i not in deleted])


def test_ten_checkpoints_keep_latest_three():
    selection = select(Policy(keep_latest=3), chain_order(chain(10)[::-1]))
    assert selection.delete == [f"c{i}" for i in range(7)] and selection.keep == ["c7", "c8", "c9"]


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("nightly-*", "NIGHTLY-1", True),
        ("strasse-*", "Straße-1", True),  # casefolded: ß is ss
        ("*", "", True),
        ("*", None, False),  # no name: never matches
        ("*", 5, False),
        ("[", "[", True),  # an unclosed bracket is itself
        ("a/b*", "A/B/c", True),  # no path semantics
        ("*.vhdx", "x.VHDX", True),
        ("?", "ab", False),
        (None, None, True),  # no pattern: every checkpoint
    ],
)
def test_name_matches(pattern, name, matches):
    assert name_matches(pattern, name) is matches


def test_select_skips_entries_without_a_usable_id_and_repeats():
    ordered = [cp("a"), {"name": "x"}, cp("x" * 257, "a"), cp("b", "a"), cp("a"), "junk", cp("c", "b")]
    assert select(Policy(keep_latest=1), ordered) == Selection(delete=["a", "b"], keep=["c"])


def test_a_pathological_pattern_is_fast():
    name = "a" * 4000
    started = time.monotonic()
    assert not name_matches("*a" * 100 + "b", name)
    assert time.monotonic() - started < 1


policies = st.builds(
    Policy,
    keep_latest=st.one_of(st.none(), st.integers(0, 12)),
    name_pattern=st.one_of(st.none(), st.sampled_from(["n*", "N?", "*x*", "[nm]*", "n", "*"])),
    dry_run=st.booleans(),
).filter(lambda p: p.keep_latest is not None or p.name_pattern is not None)
named = st.lists(st.sampled_from(["n", "nx", "N1", "m", "xx", "", None, 3]), max_size=12).map(
    lambda names: [cp(f"c{i}", f"c{i - 1}" if i else None, name=None) | {"name": n} for i, n in enumerate(names)]
)


def test_select_properties():
    @settings(max_examples=600, **HYPOTHESIS)
    @given(policies, named)
    def check(policy, ordered):
        selection = select(policy, ordered)
        every = ids(ordered)
        k = policy.keep_latest or 0
        assert len(selection.delete) <= max(0, len(every) - k)
        assert set(selection.delete).isdisjoint(selection.keep)
        assert sorted(selection.delete + selection.keep) == sorted(every)
        assert selection.delete == [i for i in every if i in selection.delete]  # chain order, oldest first
        assert selection.keep == [i for i in every if i in selection.keep]
        by_id = {e["checkpointID"]: e for e in ordered}
        assert all(name_matches(policy.name_pattern, by_id[i]["name"]) for i in selection.delete)
        matching = [i for i in every if name_matches(policy.name_pattern, by_id[i]["name"])]
        assert not set(matching[len(matching) - k :] if k else []) & set(selection.delete)  # the newest K kept
        assert selection.delete == matching[: max(0, len(matching) - k)]  # the oracle

    check()


# --- policy_event ----------------------------------------------------------------------------------

NOW = 1_795_753_212.345
FACTS = {"requestId": "policy-7", "correlationId": "change-1300", "resourceUri": URI, "traceparent": TRACEPARENT}
ERRORS = [
    arm_error({"error": {"code": "ResourceNotFound", "message": "The Resource 'vm9' was not found."}}),
    arm_error({"error": {"message": "no code"}}),
    app_error("RetriesExhausted", "transient failures did not stop within the retry budget"),
]


def test_completed_event_of_a_run():
    policy = Policy(keep_latest=3)
    selection = select(policy, chain_order(chain(10)))
    event = policy_event("Completed", FACTS, policy, NOW, deleted=selection.delete, kept=selection.keep)
    assert_valid(event, "Completed")
    assert event["type"] == "ScVmm.CheckpointPolicy.Completed" and event["id"] == "policy-7:completed"
    assert event["traceparent"] == TRACEPARENT and event["time"] == "2026-11-27T04:20:12.345Z"
    assert event["data"] == {
        "requestId": "policy-7",
        "correlationId": "change-1300",
        "resourceUri": URI,
        "policy": {"keepLatest": 3},
        "dryRun": False,
        "deleted": [f"c{i}" for i in range(7)],
        "kept": ["c7", "c8", "c9"],
        "failed": [],
        "skipped": [],
    }


def test_dry_run_and_partial_runs():
    policy = Policy(keep_latest=1, name_pattern="nightly-*", dry_run=True)
    selection = select(policy, chain_order(NIGHTLY))
    facts = {"requestId": "p", "resourceUri": URI}
    event = policy_event("Completed", facts, policy, NOW, deleted=selection.delete, kept=selection.keep)
    assert_valid(event, "Completed")
    assert event["data"]["dryRun"] is True and "correlationId" not in event["data"] and "traceparent" not in event
    run = policy_event("Completed", facts, Policy(keep_latest=1), NOW, deleted=["c0"], failed=["c1"], skipped=["c2"])
    assert_valid(run, "Completed")
    dry_with_failures = policy_event("Completed", facts, policy, NOW, deleted=["c0"], failed=["c1"])
    assert not EVENT.is_valid(dry_with_failures)  # a dry run attempts nothing


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: str(e["code"]))
def test_failed_event(error):
    event = policy_event("Failed", FACTS, Policy(name_pattern="n*"), NOW, error=error)
    assert_valid(event, "Failed")
    assert event["data"]["error"] == error and event["data"]["deleted"] == []


def test_policy_event_refuses_misuse():
    with pytest.raises(ValueError):
        policy_event("Failed", FACTS, Policy(keep_latest=1), NOW)
    with pytest.raises(ValueError):
        policy_event("Completed", FACTS, Policy(keep_latest=1), NOW, error=ERRORS[0])
    with pytest.raises(ValueError):
        policy_event("Succeeded", FACTS, Policy(keep_latest=1), NOW)


def test_events_of_generated_runs_validate():
    @settings(max_examples=200, **HYPOTHESIS)
    @given(
        policies, named, st.sampled_from([None, "c-1"]), st.text(st.sampled_from("ab:/é😀 -"), min_size=1, max_size=40)
    )
    def check(policy, ordered, correlation_id, request_id):
        selection = select(policy, chain_order(ordered))
        facts = {"requestId": request_id, "correlationId": correlation_id, "resourceUri": URI}
        completed = policy_event("Completed", facts, policy, NOW, deleted=selection.delete, kept=selection.keep)
        assert_valid(completed, "Completed")
        assert_valid(policy_event("Failed", facts, policy, NOW, error=ERRORS[0]), "Failed")

    check()


def _broken(change) -> dict:
    event = policy_event("Completed", FACTS, Policy(keep_latest=1), NOW, deleted=["c0"], kept=["c1"])
    change(event)
    return event


BROKEN = {
    "Completed with an error": _broken(lambda e: e["data"].update(error=ERRORS[0])),
    "Failed without an error": _broken(lambda e: e.update(type="ScVmm.CheckpointPolicy.Failed", id="policy-7:failed")),
    "id with the wrong suffix": _broken(lambda e: e.update(id="policy-7:failed")),
    "id without a requestId": _broken(lambda e: e.update(id=":completed")),
    "unknown type": _broken(lambda e: e.update(type="ScVmm.CheckpointPolicy.Succeeded")),
    "no kept list": _broken(lambda e: e["data"].pop("kept")),
    "an id twice in a list": _broken(lambda e: e["data"].update(deleted=["c0", "c0"])),
    "an empty id": _broken(lambda e: e["data"].update(kept=[""])),
    "policy with an unknown rule": _broken(lambda e: e["data"]["policy"].update(keepNewest=1)),
    "empty policy": _broken(lambda e: e["data"].update(policy={})),
    "keepLatest out of range": _broken(lambda e: e["data"]["policy"].update(keepLatest=MAX_KEEP_LATEST + 1)),
    "dryRun not a boolean": _broken(lambda e: e["data"].update(dryRun="false")),
    "source not a resource id": _broken(lambda e: e.update(source="vm1")),
    "time not UTC": _broken(lambda e: e.update(time="2026-11-27T04:20:12.345+01:00")),
    "invalid traceparent": _broken(lambda e: e.update(traceparent="00-" + "0" * 32 + "-00f067aa0ba902b7-01")),
}


@pytest.mark.parametrize("name", BROKEN)
def test_broken_events_are_rejected(name):
    assert not EVENT.is_valid(BROKEN[name])
