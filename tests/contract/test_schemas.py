"""The machine-readable contracts in schemas/ against the app's own code.

What is proved here:

- Requests: for generated request objects (valid ARM resource ids and their mutations: empty and dot
  segments, forbidden characters, wrong literal segments, subscription ids that are not GUIDs, odd segment
  counts, over-long ids, wrong types, empty, over-long and non-printable text fields), schemas/deletion-request.schema.json accepts exactly
  what `shared.request.decode_request(json.dumps(obj), "msg-id")` accepts.
- "Printable": the app uses Python's str.isprintable(); the schema's pattern names what a regular
  expression can name without Unicode property escapes. The generators (tests/support/request_strategies.py)
  draw text characters from the common ground only: every character except unassigned code points (Cn,
  other than the noncharacters) and supplementary-plane private-use and format characters (Co, Cf above
  U+FFFF), which the app rejects and the schema lets through.
  test_printable_pattern_matches_isprintable_on_every_code_point checks all 1,114,112 code points and
  asserts that these categories are the only difference.
- The patterns mean the same in ECMA-262 (node, 'u' flag) as in Python's re (which jsonschema uses).

The events the app writes are checked in test_event_schema.py, examples/ in test_examples.py and
test_logic_apps.py.

Hypothesis runs derandomized (fixed examples, no example database) so CI sees the same cases each run.
"""

from __future__ import annotations

import json
import re
import subprocess
import unicodedata
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from shared.request import InvalidRequest, decode_request, resource_uri_problem
from tests.support.contract import EVENT_SCHEMA, EXAMPLES, REQUEST, REQUEST_SCHEMA, SUB, SUBS, TRACEPARENT, URI, ref
from tests.support.derandomized import HYPOTHESIS
from tests.support.request_strategies import (
    APP_URI_FORBIDDEN,
    NONCHARACTER_CODE_POINTS,
    UNCARRIABLE_URI_CHARS,
    in_common_ground,
    mutated_resource_ids,
    request_objects,
    resource_ids,
)
from tests.support.schemas import SCHEMA_DOCS

RESOURCE_URI = ref(REQUEST_SCHEMA["$id"] + "#/$defs/resourceUri")


def schema_accepts(checker: Draft202012Validator, instance) -> bool:
    return checker.is_valid(instance)


def app_accepts(obj) -> bool:
    try:
        decode_request(json.dumps(obj), "msg-id")
    except InvalidRequest:
        return False
    return True


def assert_same_verdict(obj, schema_ok: bool, app_ok: bool) -> None:
    assert schema_ok == app_ok, (
        f"schema {'accepts' if schema_ok else 'rejects'}, app {'accepts' if app_ok else 'rejects'}: {obj!r}"
    )


# --- requests: schema against the app -------------------------------------------------------------


def test_schemas_are_valid_2020_12_with_ids_and_descriptions():
    for schema in SCHEMA_DOCS.values():
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"].startswith("https://") and schema["$id"].endswith(".schema.json")
        assert len(schema["description"]) > 100


def test_resource_uri_rule_agrees_with_the_app():
    verdicts: Counter = Counter()

    @settings(max_examples=300, **HYPOTHESIS)
    @given(st.one_of(resource_ids(), mutated_resource_ids(), mutated_resource_ids()))
    def check(uri):
        schema_ok = schema_accepts(RESOURCE_URI, uri)
        app_ok = resource_uri_problem(uri) is None
        assert_same_verdict({"resourceUri": uri}, schema_ok, app_ok)
        verdicts[schema_ok, app_ok] += 1

    check()
    assert verdicts[True, True] >= 50 and verdicts[False, False] >= 50, verdicts


def test_request_schema_agrees_with_decode_request(quiet_app_logs):
    verdicts: Counter = Counter()

    @settings(max_examples=400, **HYPOTHESIS)
    @given(request_objects())
    def check(obj):
        schema_ok = schema_accepts(REQUEST, obj)
        app_ok = app_accepts(obj)
        assert_same_verdict(obj, schema_ok, app_ok)
        verdicts[schema_ok, app_ok] += 1

    check()
    assert verdicts[True, True] >= 50 and verdicts[False, False] >= 50, verdicts


LONG = SUBS + "/resourceGroups/r/providers/P/t/"
CASES = [  # (request, both accept?) — each row is also checked by node's ECMA-262 engine
    ({"resourceUri": URI}, True),
    ({"resourceUri": URI.upper().replace("/SUBSCRIPTIONS/", "/subscriptions/")}, True),
    ({"resourceUri": "/SUBSCRIPTIONS/" + SUB.upper() + "/RESOURCEGROUPS/r/PROVIDERS/p/t/n/c/d"}, True),
    ({"resourceUri": SUBS + "/resourceGroups/r/providers/p/t/n/c"}, False),  # odd segment count
    ({"resourceUri": SUBS + "/resourceGroups/r/providers/p/t"}, False),  # too few segments
    ({"resourceUri": "/subscription/" + SUB + "/resourceGroups/r/providers/p/t/n"}, False),
    ({"resourceUri": SUBS + "/resourcegroup/r/providers/p/t/n"}, False),
    ({"resourceUri": SUBS + "/resourceGroups/r/provider/p/t/n"}, False),
    ({"resourceUri": "/ſubscriptions/" + SUB + "/resourceGroups/r/providers/p/t/n"}, False),  # ſ.lower() is not s
    ({"resourceUri": SUBS[1:] + "/resourceGroups/r/providers/p/t/n"}, False),
    ({"resourceUri": "/subscriptions//resourceGroups/r/providers/p/t/n"}, False),
    ({"resourceUri": URI + "/"}, False),
    ({"resourceUri": SUBS + "/resourceGroups/./providers/p/t/n"}, False),
    ({"resourceUri": SUBS + "/resourceGroups/r/providers/p/t/.."}, False),
    ({"resourceUri": SUBS + "/resourceGroups/r/providers/p/t/..."}, True),
    ({"resourceUri": SUBS + "/resourceGroups/r/providers/p/t/.n"}, True),
    ({"resourceUri": URI + "?api-version=1"}, False),
    ({"resourceUri": URI + "#x"}, False),
    ({"resourceUri": URI + "%2F"}, False),
    ({"resourceUri": URI.replace("rg1", "rg\\1")}, False),
    ({"resourceUri": URI.replace("rg1", "rg 1")}, False),
    ({"resourceUri": URI + "\n"}, False),  # Python's $ would match before this newline
    ({"resourceUri": URI.replace("rg1", "rg\u00a01")}, False),
    ({"resourceUri": URI.replace("rg1", "rg\u3000")}, False),
    ({"resourceUri": URI.replace("rg1", "rg\x85")}, False),
    ({"resourceUri": URI.replace("rg1", "rg\x7f")}, False),
    ({"resourceUri": URI.replace("rg1", "rg\u200b")}, True),  # a format character, not whitespace
    ({"resourceUri": URI.replace("vm1", "vm\U0001f600")}, True),
    ({"resourceUri": LONG + "n" * (1024 - len(LONG))}, True),
    ({"resourceUri": LONG + "n" * (1025 - len(LONG))}, False),
    ({"resourceUri": URI.replace(SUB, "s")}, False),  # the subscription id must be a GUID
    ({"resourceUri": URI.replace(SUB, "{" + SUB + "}")}, False),
    ({"resourceUri": URI.replace(SUB, SUB.replace("-", ""))}, False),
    ({"resourceUri": URI.replace(SUB, SUB[:-1] + "\u0661")}, False),  # a digit, but not an ASCII one
    ({"resourceUri": URI.replace(SUB, SUB + "0")}, False),
    ({"resourceUri": URI.replace(SUB, "4BF92F35-77B3-4DA6-A3CE-929D0e0e4736")}, True),
    ({"resourceUri": URI.replace("vm1", "vm\ufdd0")}, False),  # noncharacters
    ({"resourceUri": URI.replace("vm1", "vm\U0010fffe")}, False),
    ({"resourceUri": URI.replace("vm1", "vm\U0010fffd")}, True),  # private use, next to them
    ({"resourceUri": 5}, False),
    ({"resourceUri": None}, False),
    ({}, False),
    ({"resourceUri": URI, "checkpointId": None, "requestId": None, "correlationId": None}, True),
    ({"resourceUri": URI, "checkpointId": ""}, False),
    ({"resourceUri": URI, "requestId": "r" * 256}, True),
    ({"resourceUri": URI, "requestId": "r" * 257}, False),
    ({"resourceUri": URI, "correlationId": "a b"}, True),
    ({"resourceUri": URI, "correlationId": "a\tb"}, False),
    ({"resourceUri": URI, "correlationId": "a\u2028b"}, False),
    ({"resourceUri": URI, "correlationId": "a\u00adb"}, False),
    ({"resourceUri": URI, "correlationId": "a\ue000b"}, False),
    ({"resourceUri": URI, "correlationId": "ab\n"}, False),
    ({"resourceUri": URI, "checkpointId": "\U0001f600"}, True),
    ({"resourceUri": URI, "checkpointId": 7}, False),
    ({"resourceUri": URI, "requestId": True}, False),
    ({"resourceUri": URI, "traceparent": "nonsense"}, True),
    ({"resourceUri": URI, "traceparent": 12}, True),
    ({"resourceUri": URI, "unknown": {"x": 1}}, True),
    ({"resourceUri": URI, "specversion": "1.0"}, True),  # a plain request: envelopes carry it in their data
    ({"resourceUri": URI, "eventType": "X", "data": {}}, True),
    ({"resourceUri": URI, "eventType": "X"}, True),
]


@pytest.mark.parametrize(("request_object", "accepted"), CASES, ids=[repr(c[0])[:70] for c in CASES])
def test_request_cases(request_object, accepted):
    assert schema_accepts(REQUEST, request_object) is accepted
    assert app_accepts(request_object) is accepted


@pytest.mark.parametrize("char", list(UNCARRIABLE_URI_CHARS), ids=lambda c: f"U+{ord(c):04X}")
def test_characters_a_queue_cannot_carry_are_rejected_by_both(char):
    obj = {"resourceUri": URI.replace("vm1", "vm" + char)}
    assert not schema_accepts(REQUEST, obj)
    assert not app_accepts(obj)


def test_top_level_non_objects():
    for document in ("x", 5, None, [], ["x"], [URI], [{"resourceUri": URI}]):  # not even an array of one request
        assert not schema_accepts(REQUEST, document) and not app_accepts(document)
    assert schema_accepts(REQUEST, {"resourceUri": URI}) and app_accepts({"resourceUri": URI})


def _class_after(pattern: str, opening: str) -> str:
    start = pattern.index(opening) + len(opening)
    return pattern[start : pattern.index("]", start)]


TEXT_CLASS = _class_after(REQUEST_SCHEMA["$defs"]["printableText"]["pattern"], "^[^")
SEGMENT_CLASS = "/" + _class_after(REQUEST_SCHEMA["$defs"]["resourceUri"]["pattern"], "[^/")
ALL_CODE_POINTS = "a".join(chr(c) for c in range(0x110000))  # separated, so that surrogates stay lone


def excluded_by(char_class: str) -> set[int]:
    return {ord(c) for c in re.findall("[" + char_class + "]", ALL_CODE_POINTS)}


def test_printable_pattern_matches_isprintable_on_every_code_point():
    excluded = excluded_by(TEXT_CLASS)
    not_printable = {c for c in range(0x110000) if not chr(c).isprintable()}
    assert excluded <= not_printable  # the schema never rejects a printable character
    uncovered = Counter(
        "BMP Cn" if c <= 0xFFFF else f"astral {unicodedata.category(chr(c))}" for c in not_printable - excluded
    )
    assert set(uncovered) <= {"BMP Cn", "astral Cn", "astral Co", "astral Cf"}, uncovered
    assert all(in_common_ground(c) for c in excluded)
    assert not any(in_common_ground(c) for c in not_printable - excluded)


def test_resource_uri_class_is_the_apps():
    expected = {ord(c) for c in APP_URI_FORBIDDEN} | {ord("/")} | set(NONCHARACTER_CODE_POINTS)
    expected |= set(range(0xD800, 0xE000))
    assert excluded_by(SEGMENT_CLASS) == expected


def _patterns(node, found=None) -> list[str]:
    found = [] if found is None else found
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                found.append(value)
            else:
                _patterns(value, found)
    elif isinstance(node, list):
        for value in node:
            _patterns(value, found)
    return found


NODE_CHECK = r"""
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const all = [];
for (let c = 0; c < 0x110000; c++) all.push(String.fromCodePoint(c));
const everyCodePoint = all.join("a");
const out = {classes: {}, verdicts: []};
for (const [name, cls] of Object.entries(input.classes)) {
  const found = everyCodePoint.match(new RegExp("[" + cls + "]", "gu")) || [];
  out.classes[name] = found.map((s) => s.codePointAt(0));
}
for (const [pattern, text] of input.checks) out.verdicts.push(new RegExp(pattern, "u").test(text));
process.stdout.write(JSON.stringify(out));
"""


def test_patterns_mean_the_same_in_ecma262():
    """node runs every pattern with the 'u' flag, as JSON Schema 2020-12 asks; Python's re must agree."""
    uri_pattern = REQUEST_SCHEMA["$defs"]["resourceUri"]["pattern"]
    texts = [c[0]["resourceUri"] for c in CASES if isinstance(c[0].get("resourceUri"), str)]
    texts += [URI.replace("vm1", "vm" + c) for c in UNCARRIABLE_URI_CHARS]
    checks = [(uri_pattern, t) for t in texts]
    checks += [
        (REQUEST_SCHEMA["$defs"]["printableText"]["pattern"], v)
        for c in CASES
        for v in c[0].values()
        if isinstance(v, str) and v != URI
    ]
    checks += [
        (REQUEST_SCHEMA["$defs"]["w3cTraceparent"]["pattern"], t)
        for t in (
            TRACEPARENT,
            "ff" + TRACEPARENT[2:],
            TRACEPARENT + "\n",
            TRACEPARENT.upper(),
            "00-" + "0" * 32 + TRACEPARENT[35:],
        )
    ]
    for example in sorted(EXAMPLES.glob("event-*.json")):
        event = json.loads(example.read_text(encoding="utf-8"))
        checks.append((EVENT_SCHEMA["$defs"]["cloudEvent"]["properties"]["time"]["pattern"], event["time"]))
        status = event["data"]["status"]
        checks.append((EVENT_SCHEMA["$defs"][status.lower()]["properties"]["id"]["pattern"], event["id"]))
    every_pattern = _patterns(REQUEST_SCHEMA) + _patterns(EVENT_SCHEMA)
    checks += [(p, "") for p in every_pattern]  # each compiles with the 'u' flag
    payload = {"classes": {"text": TEXT_CLASS, "segment": SEGMENT_CLASS}, "checks": checks}
    run = subprocess.run(
        ["node", "-e", NODE_CHECK], input=json.dumps(payload), capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    node = json.loads(run.stdout)
    assert set(node["classes"]["text"]) == excluded_by(TEXT_CLASS)
    assert set(node["classes"]["segment"]) == excluded_by(SEGMENT_CLASS)
    python = [re.search(pattern, text) is not None for pattern, text in checks]
    assert node["verdicts"] == python
