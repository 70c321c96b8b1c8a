"""shared/policy.py (issue 11: retention policies): reading a policy request, its schemas, and their
agreement.

What is proved here:

- parse_policy: every rule of docs/policies.md on requests as shared.request's decoder reads them (numbers
  kept as their JSON text), with the field at fault as target; any JSON value raises PolicyInvalid or
  returns, nothing else; schemas/policy-request.schema.json accepts exactly the policy requests the app
  accepts (decode_request for the shared fields, then parse_policy), but for the one documented difference
  (3.0 counts as an integer in JSON Schema).
- The JSON samples of docs/policies.md are the examples' and valid. The schemas' patterns mean the
  same in ECMA-262 (node, 'u' flag) as in Python.

chain_order, select and policy_event: test_policy_selection.py.

Hypothesis runs derandomized (fixed examples, no example database) so CI sees the same cases each run.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from shared.policy import Policy, PolicyInvalid, parse_policy
from shared.request import _DECODER, InvalidRequest, decode_request
from tests.support.derandomized import HYPOTHESIS
from tests.support.paths import ROOT
from tests.support.policy import EVENT_SCHEMA, REQUEST, REQUEST_SCHEMA, URI, assert_valid
from tests.support.schemas import SCHEMA_DOCS


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
