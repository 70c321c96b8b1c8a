"""shared/policy.py (issue 11: retention policies), its schemas, and their agreement.

What is proved here:

- parse_policy: every rule of docs/policies.md on requests as shared.request's decoder reads them (numbers
  kept as their JSON text), with the field at fault as target; any JSON value raises PolicyInvalid or
  returns, nothing else; schemas/policy-request.schema.json accepts exactly the policy requests the app
  accepts (decode_request for the shared fields, then parse_policy), but for the one documented difference
  (3.0 counts as an integer in JSON Schema).
- chain_order: a chain comes out root first however it is listed; bad input (no ids, repeated ids, cycles,
  several roots, unknown parents, entries that are no objects) gives the documented order, never an error
  or a loop; for generated lists, every entry a root reaches comes after its parent and before every entry
  no root reaches.
- select: never deletes one of the newest keepLatest (matching) checkpoints, never a non-matching one;
  kept and deleted partition the checkpoints, each in chain order; the result is the one an oracle gives.
- policy_event: what it builds validates against schemas/policy-event.schema.json (#completed, #failed);
  hand-broken events do not. The schemas' patterns mean the same in ECMA-262 (node, 'u' flag) as in Python.

Hypothesis runs derandomized (fixed examples, no example database) so CI sees the same cases each run.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from conftest import ROOT, SCHEMA_DOCS, schema_validator
from shared.arm_answers import arm_error
from shared.errors import app_error
from shared.policy import (
    MAX_KEEP_LATEST,
    Policy,
    PolicyInvalid,
    Selection,
    chain_order,
    checkpoint_id,
    name_matches,
    parse_policy,
    policy_event,
    select,
)
from shared.request import _DECODER, InvalidRequest, decode_request

HYPOTHESIS = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}
URI = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm1"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
REQUEST_SCHEMA = SCHEMA_DOCS["policy-request.schema.json"]
EVENT_SCHEMA = SCHEMA_DOCS["policy-event.schema.json"]
REQUEST = schema_validator(REQUEST_SCHEMA)
EVENT = schema_validator(EVENT_SCHEMA)
EVENT_OF = {
    o: schema_validator({"$schema": EVENT_SCHEMA["$schema"], "$ref": EVENT_SCHEMA["$id"] + "#" + o.lower()})
    for o in ("Completed", "Failed")
}


def parsed(text: str) -> Policy | None:
    """parse_policy on a request's JSON text, read as the app reads it (shared.request's decoder)."""
    return parse_policy(_DECODER.decode(text))


def refusal(text: str) -> PolicyInvalid:
    with pytest.raises(PolicyInvalid) as caught:
        parsed(text)
    return caught.value


def request_text(members: str) -> str:
    return '{"resourceUri": "' + URI + '", ' + members + "}"


# --- parse_policy ----------------------------------------------------------------------------------

VALID = [
    ('"checkpointId": "cp-1"', None),
    ('"requestId": "r"', None),
    ('"policy": null', None),
    ('"policy": null, "dryRun": false', None),
    ('"policy": null, "dryRun": null', None),
    ('"policy": {"keepLatest": 3}', Policy(keep_latest=3)),
    ('"policy": {"keepLatest": 0}', Policy(keep_latest=0)),
    ('"policy": {"keepLatest": 1000}', Policy(keep_latest=1000)),
    ('"policy": {"keepLatest": -0}', Policy(keep_latest=0)),
    ('"policy": {"namePattern": "pre-patch-*"}', Policy(name_pattern="pre-patch-*")),
    ('"policy": {"namePattern": "a b"}', Policy(name_pattern="a b")),
    ('"policy": {"namePattern": "%s"}' % ("x" * 256), Policy(name_pattern="x" * 256)),
    ('"policy": {"keepLatest": 1, "namePattern": "nightly-*"}, "dryRun": true', Policy(1, "nightly-*", True)),
    ('"policy": {"keepLatest": 2}, "dryRun": false', Policy(keep_latest=2)),
    ('"policy": {"keepLatest": 2}, "dryRun": null', Policy(keep_latest=2)),
    ('"policy": {"keepLatest": null, "namePattern": "n*"}', Policy(name_pattern="n*")),
    ('"policy": {"keepLatest": 2, "namePattern": null}', Policy(keep_latest=2)),
    ('"policy": {"keepLatest": 2}, "checkpointId": null', Policy(keep_latest=2)),
    ('"policy": {"keepLatest": 2}, "unknown": [1, {"x": 2}]', Policy(keep_latest=2)),  # the request's: ignored
]

INVALID = [  # (members, target, words of the message)
    ('"policy": 3', "policy", "JSON object"),
    ('"policy": "keepLatest=3"', "policy", "JSON object"),
    ('"policy": [{"keepLatest": 3}]', "policy", "JSON object"),
    ('"policy": {}', "policy", "needs keepLatest, namePattern or both"),
    ('"policy": {"keepLatest": null, "namePattern": null}', "policy", "needs"),
    ('"policy": {"keepLatest": -1}', "policy.keepLatest", "0 to 1000"),
    ('"policy": {"keepLatest": 1001}', "policy.keepLatest", "0 to 1000"),
    ('"policy": {"keepLatest": 3.0}', "policy.keepLatest", "without fraction or exponent"),
    ('"policy": {"keepLatest": 3e0}', "policy.keepLatest", "integer"),
    ('"policy": {"keepLatest": 1E2}', "policy.keepLatest", "integer"),
    ('"policy": {"keepLatest": 2.5}', "policy.keepLatest", "integer"),
    ('"policy": {"keepLatest": true}', "policy.keepLatest", "integer"),
    ('"policy": {"keepLatest": "3"}', "policy.keepLatest", "integer"),
    ('"policy": {"keepLatest": [3]}', "policy.keepLatest", "integer"),
    ('"policy": {"keepLatest": %s}' % ("9" * 60000), "policy.keepLatest", "integer"),
    ('"policy": {"keepLatest": 1e999999}', "policy.keepLatest", "integer"),
    ('"policy": {"namePattern": ""}', "policy.namePattern", "1 to 256"),
    ('"policy": {"namePattern": "%s"}' % ("x" * 257), "policy.namePattern", "1 to 256"),
    ('"policy": {"namePattern": "a\\tb"}', "policy.namePattern", "printable"),
    ('"policy": {"namePattern": "a\\u200bb"}', "policy.namePattern", "printable"),
    ('"policy": {"namePattern": "\\ud800"}', "policy.namePattern", "printable"),
    ('"policy": {"namePattern": 5}', "policy.namePattern", "string"),
    ('"policy": {"keepLatest": 3}, "dryRun": "true"', "dryRun", "true or false"),
    ('"policy": {"keepLatest": 3}, "dryRun": 1', "dryRun", "true or false"),
    ('"dryRun": true', "dryRun", "policy requests only"),
    ('"checkpointId": "cp-1", "dryRun": true', "dryRun", "policy requests only"),
    ('"policy": null, "dryRun": "yes"', "dryRun", "true or false"),
    ('"policy": {"keepLatest": 3}, "checkpointId": "cp-1"', "policy", "not both"),
    ('"policy": {"keepLatest": 3, "dryRun": true}', "policy", "beside policy"),
    ('"policy": {"keeplatest": 3, "namePattern": "n*"}', "policy", "no member 'keeplatest'"),
    ('"policy": {"keepLatest": 1, "keepLatest": 5}', "policy.keepLatest", "more than one member"),
    ('"policy": {"namePattern": "a", "namePattern": "*"}', "policy.namePattern", "more than one member"),
    ('"policy": {"keepLatest": 1}, "policy": {"keepLatest": 5}', "policy", "more than one member named policy"),
    ('"policy": {"keepLatest": 1}, "dryRun": true, "dryRun": false', "dryRun", "more than one member named dryRun"),
]


@pytest.mark.parametrize(("members", "expected"), VALID, ids=[m[:60] for m, _ in VALID])
def test_valid_requests(members, expected):
    assert parsed(request_text(members)) == expected


@pytest.mark.parametrize(("members", "target", "words"), INVALID, ids=[m[:60] for m, _, _ in INVALID])
def test_invalid_requests_name_the_field(members, target, words):
    started = time.monotonic()
    invalid = refusal(request_text(members))
    assert time.monotonic() - started < 0.5  # 60,000 digits are never converted
    assert invalid.target == target
    assert words in invalid.message and str(invalid) == invalid.message
    assert invalid.message.isprintable() and len(invalid.message) < 1000  # it goes into an event as is


def test_every_problem_is_named_the_first_is_the_target():
    invalid = refusal(request_text('"policy": {"keepLatest": -1, "namePattern": ""}, "dryRun": 0'))
    assert invalid.target == "dryRun"
    for words in ("dryRun must be", "policy.keepLatest must be", "policy.namePattern must be"):
        assert words in invalid.message


def test_unknown_policy_members_are_named_once_and_counted():
    members = ", ".join(f'"k{i}\\u0000{i}": {i}' for i in range(2000))
    invalid = refusal(request_text('"policy": {"keepLatest": 1, ' + members + "}"))
    assert invalid.target == "policy"
    assert "'k0\\x000'" in invalid.message and "1999 more unknown member(s)" in invalid.message
    assert invalid.message.isprintable() and len(invalid.message) < 300


def test_plain_python_values_are_read_too():
    assert parse_policy({"policy": {"keepLatest": 4}, "dryRun": True}) == Policy(4, None, True)
    with pytest.raises(PolicyInvalid):
        parse_policy({"policy": {"keepLatest": 4.0}})
    with pytest.raises(PolicyInvalid):
        parse_policy({"policy": {"keepLatest": False}})
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy(["not", "an", "object"])
    assert caught.value.target == "message"


def test_policy_as_json_holds_the_rules_given():
    assert Policy(keep_latest=0).as_json() == {"keepLatest": 0}
    assert Policy(name_pattern="n*", dry_run=True).as_json() == {"namePattern": "n*"}
    assert Policy(3, "n*").as_json() == {"keepLatest": 3, "namePattern": "n*"}


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=12), inner, max_size=3)),
    max_leaves=8,
)


def test_any_json_value_gives_a_policy_none_or_policy_invalid():
    @settings(max_examples=400, **HYPOTHESIS)
    @given(
        st.fixed_dictionaries(
            {},
            optional={
                "policy": st.one_of(
                    json_values,
                    st.fixed_dictionaries({}, optional={"keepLatest": json_values, "namePattern": json_values}),
                ),
                "dryRun": json_values,
                "checkpointId": json_values,
            },
        )
    )
    def check(obj):
        text = json.dumps(obj).replace("Infinity", "1e999")
        try:
            result = parsed(text)
        except PolicyInvalid as invalid:
            assert invalid.message.isprintable() and invalid.target
            return
        assert result is None or isinstance(result, Policy)
        if result is not None:
            assert result.keep_latest is not None or result.name_pattern is not None

    check()


# --- the request schema against the app -----------------------------------------------------------

good_texts = st.text(st.sampled_from(list("abcXYZ-_*?[]! é.😀")), min_size=1, max_size=12)
bad_texts = st.sampled_from(["", "a\tb", "\u200b", "x" * 257, "ab\n", "\x7f", "\ue000"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),  # see below
    st.text(max_size=4),
)
keep_values = st.one_of(st.integers(0, 1000), st.integers(-3, 1003), st.sampled_from([0, 1000, 1001, -1]), scalars)
pattern_values = st.one_of(good_texts, good_texts, bad_texts, scalars)
good_policies = st.one_of(
    st.fixed_dictionaries({"keepLatest": st.integers(0, 1000)}, optional={"namePattern": good_texts}),
    st.fixed_dictionaries({"namePattern": good_texts}, optional={"keepLatest": st.integers(0, 1000)}),
)
policy_values = st.one_of(
    st.fixed_dictionaries({}, optional={"keepLatest": keep_values, "namePattern": pattern_values}),
    st.fixed_dictionaries(
        {}, optional={"keepLatest": keep_values, "dryRun": st.booleans(), "keepNewest": scalars, "": scalars}
    ),
    scalars,
    st.lists(scalars, max_size=2),
)


@st.composite
def policy_requests(draw) -> dict:
    """Mostly valid but for one member; sometimes anything."""
    obj = {"resourceUri": draw(st.sampled_from([URI] * 7 + [URI + "/"]))}
    kind = draw(st.integers(0, 9))
    if kind:
        obj["policy"] = draw(good_policies if kind > 4 else policy_values)
    optional = {
        "dryRun": st.one_of(st.booleans(), st.booleans(), st.booleans(), scalars),
        "checkpointId": st.sampled_from([None, None, None, "cp-1", ""]),
        "requestId": st.sampled_from(["policy-1", "policy-1", "", None]),
        "correlationId": st.sampled_from(["c-1", "c-1", "c-1", "a\tb"]),
        "other": scalars,
    }
    for name, values in optional.items():
        if not draw(st.integers(0, 2)):
            obj[name] = draw(values)
    return obj


def shared_fields(obj: dict) -> str:
    """The request without its policy members: what decode_request validates of every request (it
    refuses the policy members themselves until the submit step runs policies)."""
    return json.dumps({name: value for name, value in obj.items() if name not in ("policy", "dryRun")})


def app_accepts(obj) -> bool:
    text = json.dumps(obj)
    try:
        decode_request(shared_fields(obj), "msg-id")  # the fields every request shares
        return parsed(text) is not None
    except (InvalidRequest, PolicyInvalid):
        return False


def test_request_schema_agrees_with_the_app(caplog):
    caplog.set_level("CRITICAL", logger="shared")
    verdicts: Counter = Counter()

    @settings(max_examples=500, **HYPOTHESIS)
    @given(policy_requests())
    def check(obj):
        schema_ok, app_ok = REQUEST.is_valid(obj), app_accepts(obj)
        assert schema_ok == app_ok, (schema_ok, app_ok, obj)
        verdicts[schema_ok] += 1

    check()
    assert verdicts[True] >= 50 and verdicts[False] >= 50, verdicts


@pytest.mark.parametrize(("members", "expected"), VALID, ids=[m[:60] for m, _ in VALID])
def test_request_schema_on_the_valid_cases(members, expected):
    obj = json.loads(request_text(members))
    assert REQUEST.is_valid(obj) is (expected is not None)  # None: no policy, so no policy request


# What JSON Schema cannot say (its descriptions do): integral numbers written with a fraction or an
# exponent, and members given twice (a JSON parser keeps the last one).
SCHEMA_ACCEPTS = {
    '"policy": {"keepLatest": 3.0}',
    '"policy": {"keepLatest": 3e0}',
    '"policy": {"keepLatest": 1E2}',
    '"policy": {"keepLatest": 1, "keepLatest": 5}',
    '"policy": {"namePattern": "a", "namePattern": "*"}',
    '"policy": {"keepLatest": 1}, "policy": {"keepLatest": 5}',
    '"policy": {"keepLatest": 1}, "dryRun": true, "dryRun": false',
}
JSON_READABLE = [c for c in INVALID if "9" * 5000 not in c[0]]  # Python's json refuses 60,000 digits


@pytest.mark.parametrize(("members", "target", "words"), JSON_READABLE, ids=[m[:60] for m, _, _ in JSON_READABLE])
def test_request_schema_on_the_invalid_cases(members, target, words):
    assert REQUEST.is_valid(json.loads(request_text(members))) is (members in SCHEMA_ACCEPTS)
    assert {c[0] for c in INVALID} >= SCHEMA_ACCEPTS


def test_the_documented_difference_integral_floats():
    obj = {"resourceUri": URI, "policy": {"keepLatest": 3.0}}
    assert REQUEST.is_valid(obj) and not app_accepts(obj)


def test_request_schema_examples():
    for example in REQUEST_SCHEMA["examples"]:
        assert REQUEST.is_valid(example) and app_accepts(example)


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


def assert_valid(event: dict, outcome: str) -> None:
    assert not [e.message for e in EVENT.iter_errors(event)], event
    assert EVENT_OF[outcome].is_valid(event)
    assert not EVENT_OF["Failed" if outcome == "Completed" else "Completed"].is_valid(event)
    # What the schema cannot say:
    assert event["id"] == f"{event['data']['requestId']}:{outcome.lower()}"
    assert event["source"] == event["data"]["resourceUri"]
    lists = [i for name in ("deleted", "kept", "failed", "skipped") for i in event["data"][name]]
    assert len(lists) == len(set(lists))


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


def test_the_json_of_docs_policies_md():
    text = (ROOT / "docs" / "policies.md").read_text(encoding="utf-8")
    blocks = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.DOTALL)]
    requests = [b for b in blocks if "type" not in b]
    events = [b for b in blocks if "type" in b]
    assert len(requests) == 2 and len(events) == 2
    for request in requests:
        assert REQUEST.is_valid(request) and app_accepts(request)
    for event, outcome in zip(events, ("Completed", "Failed"), strict=True):
        assert_valid(event, outcome)
        assert event == json.loads((ROOT / "examples" / f"policy-event-{outcome.lower()}.json").read_text())
    for request, name in zip(requests, ("policy-request.json", "policy-request-dry-run.json"), strict=True):
        assert request == json.loads((ROOT / "examples" / name).read_text(encoding="utf-8"))


# --- the schemas' patterns in ECMA-262 -------------------------------------------------------------

NODE_CHECK = r"""
const checks = JSON.parse(require("fs").readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(checks.map(([p, t]) => new RegExp(p, "u").test(t))));
"""


def patterns(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [p for key, value in node.items() if key != "pattern" for p in patterns(value)]
    if isinstance(node, list):
        return [p for value in node for p in patterns(value)]
    return []


def test_patterns_mean_the_same_in_ecma262():
    every = patterns(REQUEST_SCHEMA) + patterns(EVENT_SCHEMA)
    assert len(every) == 2  # the two event ids; the rest are $refs to the tested schemas
    texts = ["policy-7:completed", "policy-7:failed", ":completed", "p:completed\n", "a\u200b:failed", "é😀:failed"]
    texts += ["x" * 256 + ":completed", "x" * 257 + ":completed", "p:completed:failed", "\ue000:failed"]
    checks = [(p, t) for p in every for t in texts]
    run = subprocess.run(
        ["node", "-e", NODE_CHECK], input=json.dumps(checks), capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [re.search(p, t) is not None for p, t in checks]
    assert sum(json.loads(run.stdout)) == 5  # two ids end in :completed, three in :failed


def test_schemas_are_valid_2020_12_with_ids_and_descriptions():
    for name in ("policy-request.schema.json", "policy-event.schema.json"):
        schema = SCHEMA_DOCS[name]
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == "https://scvmm-checkpoint-delete.example/schemas/" + name
        assert len(schema["description"]) > 100
