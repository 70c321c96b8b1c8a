"""The machine-readable contracts in schemas/ against the app's own code, and examples/ against the contracts.

What is proved here:

- Requests: for generated request objects (valid ARM resource ids and their mutations: empty and dot
  segments, forbidden characters, wrong literal segments, subscription ids that are not GUIDs, odd segment
  counts, over-long ids, wrong types, empty, over-long and non-printable text fields), schemas/deletion-request.schema.json accepts exactly
  what `shared.request.decode_request(json.dumps(obj), "msg-id")` accepts.
- "Printable": the app uses Python's str.isprintable(); the schema's pattern names what a regular
  expression can name without Unicode property escapes. The generators draw text characters from the
  common ground only: every character except unassigned code points (Cn, other than the noncharacters)
  and supplementary-plane private-use and format characters (Co, Cf above U+FFFF), which the app rejects
  and the schema lets through. test_printable_pattern_matches_isprintable_on_every_code_point checks all
  1,114,112 code points and asserts that these categories are the only difference.
- The patterns mean the same in ECMA-262 (node, 'u' flag) as in Python's re (which jsonschema uses).
- Events: every event the app's own submit, poll and poison steps write (with and without optional
  fields, with the app's error codes and with ARM's errors) validates against schemas/event.schema.json
  and its per-type schema (#accepted, #succeeded, #failed); hand-broken events do not.
- Examples: every request and event in examples/ (JSON samples, the Logic Apps workflows, the Python
  snippet, the shell script's dry run) validates and, for requests, decodes with decode_request; the
  retention policy samples (examples/policy-*.json) against schemas/policy-request.schema.json and
  schemas/policy-event.schema.json, the requests also through shared.policy.parse_policy.

Hypothesis runs derandomized (fixed examples, no example database) so CI sees the same cases each run.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import logging
import os
import re
import string
import subprocess
import sys
import unicodedata
import uuid
from collections import Counter

import pytest
from azure.storage.queue import QueueClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator, Draft202012Validator

from conftest import ROOT, SCHEMA_DOCS, schema_validator
from shared.arm_answers import arm_error
from shared.errors import app_error, retries_exhausted
from shared.events import outcome_event
from shared.policy import parse_policy
from shared.request import InvalidRequest, decode_request, resource_uri_problem, valid_traceparent
from shared.tracking import Operation

SCHEMAS = ROOT / "schemas"
EXAMPLES = ROOT / "examples"

REQUEST_SCHEMA = SCHEMA_DOCS["deletion-request.schema.json"]
EVENT_SCHEMA = SCHEMA_DOCS["event.schema.json"]
validator = schema_validator


def ref(uri: str) -> Draft202012Validator:
    return validator({"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": uri})


REQUEST = validator(REQUEST_SCHEMA)
EVENT = validator(EVENT_SCHEMA)
RESOURCE_URI = ref(REQUEST_SCHEMA["$id"] + "#/$defs/resourceUri")
EVENT_GRID_ENVELOPE = ref(REQUEST_SCHEMA["$id"] + "#/$defs/eventGridEnvelope")
CLOUD_EVENTS_ENVELOPE = ref(REQUEST_SCHEMA["$id"] + "#/$defs/cloudEventsEnvelope")
EVENT_OF_STATUS = {s: ref(EVENT_SCHEMA["$id"] + "#" + s.lower()) for s in ("Accepted", "Succeeded", "Failed")}

TYPE_PREFIX = "ScVmm.CheckpointDelete."
INVALID_SOURCE = "/checkpoint-delete/invalid-request"
SUB = "00000000-0000-0000-0000-000000000001"
SUBS = "/subscriptions/" + SUB
URI = SUBS + "/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm1"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TEXT_FIELDS = ("checkpointId", "requestId", "correlationId")

HYPOTHESIS = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}


def schema_accepts(checker: Draft202012Validator, instance) -> bool:
    return checker.is_valid(instance)


def app_accepts(obj) -> bool:
    try:
        decode_request(json.dumps(obj), "msg-id")
    except InvalidRequest:
        return False
    return True


# Characters a queue message cannot carry (lone surrogates: Azurite answers 400 Bad Request; U+FFFE,
# U+FFFF: stored, but the SDK cannot parse the answer) and the other noncharacters, which no event may carry:
# both the schema and the app reject them in resourceUri.
NONCHARACTER_CODE_POINTS = [
    *range(0xFDD0, 0xFDF0),
    *(p | c for p in range(0, 0x110000, 0x10000) for c in (0xFFFE, 0xFFFF)),
]
UNCARRIABLE_URI_CHARS = "\ud800\udbff\udc00\udfff" + "".join(map(chr, NONCHARACTER_CODE_POINTS))


def assert_same_verdict(obj, schema_ok: bool, app_ok: bool) -> None:
    assert schema_ok == app_ok, (
        f"schema {'accepts' if schema_ok else 'rejects'}, app {'accepts' if app_ok else 'rejects'}: {obj!r}"
    )


# --- characters ---------------------------------------------------------------------------------------

NONCHARACTERS = {*range(0xFDD0, 0xFDF0), 0xFFFE, 0xFFFF}


def in_common_ground(code_point: int) -> bool:
    """Characters on which the schema's text pattern and str.isprintable() are meant to agree."""
    category = unicodedata.category(chr(code_point))
    if category == "Cn":
        return code_point in NONCHARACTERS
    return not (code_point > 0xFFFF and category in ("Co", "Cf"))


def _app_uri_forbidden() -> set[str]:
    """Characters the app refuses in a resourceUri, found through its public resource_uri_problem()."""
    spaces = [c for c in range(0x110000) if chr(c).isspace()]
    assert max(spaces) <= 0x3000  # so scanning up to U+3000 finds every whitespace character
    base = URI.rsplit("/", 1)[0] + "/vm"
    return {chr(c) for c in range(0x3001) if chr(c) != "/" and resource_uri_problem(base + chr(c)) is not None}


APP_URI_FORBIDDEN = _app_uri_forbidden()
# Not printable but on the common ground: what the text generators inject to make a field invalid.
NONPRINTABLE_COMMON = [
    chr(c)
    for c in range(0x10000)
    if not chr(c).isprintable() and in_common_ground(c) and (unicodedata.category(chr(c)) != "Co" or c % 512 == 0)
]
# Printable characters (and the non-ASCII spaces, category Zs), all on the common ground.
COMMON_CHARS = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
SEGMENT_CHARS = st.one_of(
    st.sampled_from(string.ascii_letters + string.digits + "-_.()~+,;=:@!$&'*"),
    st.characters(exclude_characters="".join(APP_URI_FORBIDDEN) + "/" + UNCARRIABLE_URI_CHARS),
)


def case_variants(word: str):
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: "".join(c.upper() if u else c.lower() for c, u in zip(word, upper, strict=True))
    )


segments = st.text(SEGMENT_CHARS, min_size=1, max_size=10).filter(lambda s: s not in (".", ".."))


subscription_ids = st.uuids().map(str).flatmap(case_variants)  # GUIDs in any letter case


@st.composite
def resource_ids(draw) -> str:
    parts = [
        draw(case_variants("subscriptions")),
        draw(subscription_ids),
        draw(case_variants("resourceGroups")),
        draw(segments),
        draw(case_variants("providers")),
        draw(segments),
        draw(segments),
        draw(segments),
    ]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(segments), draw(segments)]
    return "/" + "/".join(parts)


WRONG_LITERALS = ["subscription", "resourceGroup", "provider", "resource_groups", "ſubscriptions", "\u212aeys", "x"]


@st.composite
def mutated_resource_ids(draw) -> str:
    """A valid id with one mutation; most are invalid, some (a long id within 1024, '...') are not."""
    uri = draw(resource_ids())
    parts = uri[1:].split("/")
    kind = draw(st.sampled_from(["empty", "dot", "char", "literal", "subscription", "count", "long", "prefix"]))
    if kind == "empty":  # '//' inside, or a trailing '/'
        parts.insert(draw(st.integers(0, len(parts))), "")
    elif kind == "dot":
        parts[draw(st.integers(0, len(parts) - 1))] = draw(st.sampled_from([".", "..", "...", ".x"]))
    elif kind == "char":
        at = draw(st.integers(1, len(uri)))
        char = draw(
            st.sampled_from(sorted(APP_URI_FORBIDDEN) + list(UNCARRIABLE_URI_CHARS) + ["\u200b", "é", "\ufeff"])
        )
        return uri[:at] + char + uri[at:]
    elif kind == "literal":
        at = draw(st.sampled_from([0, 2, 4]))
        parts[at] = draw(st.one_of(st.sampled_from(WRONG_LITERALS), segments))
    elif kind == "subscription":  # not a GUID, mostly: one character more, less or changed, braces, no dashes
        guid = parts[1]
        at = draw(st.integers(0, len(guid) - 1))
        changed = guid[:at] + draw(st.sampled_from(["g", "-", "0", "F", "\u0661", "\uff10", ""])) + guid[at + 1 :]
        parts[1] = draw(st.sampled_from([changed, guid + "0", guid[1:], "{" + guid + "}", guid.replace("-", "")]))
    elif kind == "count":  # drop or add one segment (odd count), or cut below eight segments
        choice = draw(st.sampled_from(["drop", "add", "cut"]))
        if choice == "drop":
            del parts[draw(st.integers(0, len(parts) - 1))]
        elif choice == "add":
            parts.append(draw(segments))
        else:
            parts = parts[: draw(st.integers(1, 7))]
    elif kind == "long":  # around the 1024 limit
        target = draw(st.integers(1010, 1100))
        parts[-1] += "x" * max(0, target - len(uri))
    else:
        return draw(st.sampled_from(["", "x", "/", "//"])) + uri[1:]
    return "/" + "/".join(parts)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
non_strings = st.one_of(
    st.integers(-5, 10**6),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(json_scalars, max_size=2),
    st.dictionaries(st.text(max_size=4), json_scalars, max_size=2),
)

resource_uri_values = st.one_of(
    resource_ids(),
    resource_ids(),
    resource_ids(),
    resource_ids(),
    mutated_resource_ids(),
    mutated_resource_ids(),
    st.text(max_size=30),
    st.none(),
    non_strings,
)


@st.composite
def with_one_nonprintable(draw) -> str:
    text = draw(st.text(COMMON_CHARS, max_size=20))
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(st.sampled_from(NONPRINTABLE_COMMON)) + text[at:]


common_texts = st.text(COMMON_CHARS, min_size=1, max_size=40)  # printable, or with a non-ASCII space
text_values = st.one_of(
    common_texts,
    common_texts,
    common_texts,
    common_texts,
    st.text(COMMON_CHARS, min_size=250, max_size=262),  # both sides of 256
    st.just(""),
    st.none(),  # null is the same as absent
    with_one_nonprintable(),
    non_strings,
)
traceparent_values = st.one_of(
    st.just(TRACEPARENT),
    st.just(" " + TRACEPARENT + "\n"),
    st.text(max_size=60),
    json_scalars,
    st.just("ff" + TRACEPARENT[2:]),
    st.just("00-" + "0" * 32 + TRACEPARENT[35:]),
)
extra_members = st.one_of(
    st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in REQUEST_SCHEMA["properties"]), json_scalars, max_size=3
    ),
    # Envelope-shaped members, with nothing the app could read as a request inside.
    st.just({"specversion": "1.0"}),
    st.just({"eventType": "X", "data": {}}),
    st.just({"eventType": "X"}),
)


@st.composite
def request_objects(draw) -> dict:
    obj: dict = {}
    if draw(st.integers(0, 9)):  # resourceUri present nine times in ten
        obj["resourceUri"] = draw(resource_uri_values)
    for name in TEXT_FIELDS:
        if draw(st.booleans()):
            obj[name] = draw(text_values)
    if draw(st.booleans()):
        obj["traceparent"] = draw(traceparent_values)
    if draw(st.integers(0, 3)) == 0:
        obj.update(draw(extra_members))
    return obj


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


@pytest.fixture
def quiet_app_logs(caplog):
    """The app logs every invalid traceparent, request and event; thousands of records only slow the run down."""
    caplog.set_level(logging.CRITICAL, logger="shared")


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


# --- events: what the app writes ---------------------------------------------------------------------
# Every event the end-to-end tests read off the Azurite events queue (the app's real submit, poll and
# poison steps against the ARM emulator) is checked against schemas/event.schema.json by
# conftest.AppHarness.events(). Here: the app's event builder on generated requests and on every kind
# of error an event can carry.

LOCATION = "https://management.azure.com/providers/Microsoft.ScVmm/locations/eastus/operationResults/op-1?api-version=2024-06-01"
ARM_FAILURE = arm_error(
    {
        "error": {
            "code": "OperationFailed.Checkpoint",
            "message": "The checkpoint could not be removed.",
            "target": "checkpointId",
            "details": [
                {"code": "VmmJobFailed", "message": "Job failed", "target": None, "details": [], "additionalInfo": []}
            ],
            "additionalInfo": [{"type": "PolicyViolation", "info": {"policy": "p1"}}],
        }
    }
)
ERRORS = {
    "ARM's error with details": ARM_FAILURE,
    "ARM's error, code only": arm_error({"error": {"code": "AuthorizationFailed", "message": "Not authorized."}}),
    "ARM's error, message only": arm_error({"error": {"message": "Bad request, and no code."}}),
    "OperationTimedOut": app_error("OperationTimedOut", "the operation was still running 86400 s after submission"),
    "RetriesExhausted": retries_exhausted(app_error("HttpError", "ARM answered HTTP 503"), "8 status reads in a row"),
    "UntrustedOperationUrl": app_error("UntrustedOperationUrl", "status URL is outside ARM_ENDPOINT: https://x/op"),
    "OperationFailed": app_error("OperationFailed", "ARM answered HTTP 404 with no error body"),
    "OperationCanceled": app_error("OperationCanceled", "the operation ended with status Canceled"),
}


def events_for(body: str, error: dict) -> list[dict]:
    """The events the app builds for a message: for a valid request, Accepted, then Succeeded or Failed
    (with `error`) after polls, and the Succeeded or Failed of a deletion ARM finished or refused at
    once; for an invalid one, its Failed/InvalidRequest."""
    now = 1_790_000_000.0
    try:
        request = decode_request(body, "msg-1")
    except InvalidRequest as invalid:
        return [
            outcome_event("Failed", invalid.fields, now, app_error("InvalidRequest", invalid.message, invalid.target))
        ]
    tracked = Operation.accepted(request, LOCATION, None, now - 60).facts()
    at_once = {k: v for k, v in tracked.items() if k not in ("operationUrl", "submittedAt")}
    return [
        outcome_event("Accepted", tracked, now - 60),
        outcome_event("Succeeded", {**tracked, "completedAt": now, "pollCount": 3}, now),
        outcome_event("Failed", {**tracked, "completedAt": now, "pollCount": 1}, now, error),
        outcome_event("Succeeded", {**at_once, "submittedAt": now, "completedAt": now}, now),
        outcome_event("Failed", {**at_once, "completedAt": now}, now, error),
    ]


def assert_valid_event(event: dict) -> None:
    errors = [e.message for e in EVENT.iter_errors(event)]
    assert not errors, (errors, event)
    status = event["data"]["status"]
    assert EVENT_OF_STATUS[status].is_valid(event)
    for other in set(EVENT_OF_STATUS) - {status}:
        assert not EVENT_OF_STATUS[other].is_valid(event)
    # What the schema cannot say:
    assert event["type"] == TYPE_PREFIX + status
    assert event["id"] == f"{event['data']['requestId']}:{status.lower()}"
    assert event["source"] == event["data"].get("resourceUri", INVALID_SOURCE)
    assert event.get("subject") == event["data"].get("checkpointId")


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize(
    "request_object",
    [
        {
            "resourceUri": URI,
            "checkpointId": "cp-1",
            "requestId": "req-1",
            "correlationId": "c-1",
            "traceparent": TRACEPARENT,
        },
        {"resourceUri": URI},
        {"resourceUri": SUBS + "/resourceGroups/r/vm1", "requestId": "req-2", "correlationId": "c-2"},
        {"requestId": "x" * 300, "checkpointId": ""},
    ],
    ids=["every field", "only resourceUri", "invalid resourceUri", "nothing usable"],
)
def test_events_of_every_path_validate(error, request_object):
    events = events_for(json.dumps(request_object), ERRORS[error])
    for event in events:
        assert_valid_event(event)


def test_events_for_generated_requests_validate(quiet_app_logs):
    @settings(max_examples=200, **HYPOTHESIS)
    @given(request_objects(), st.sampled_from(sorted(ERRORS)))
    def check(obj, error):
        for event in events_for(json.dumps(obj), ERRORS[error]):
            assert_valid_event(event)

    check()


def load(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def broken(name: str, change) -> dict:
    event = copy.deepcopy(load(name))
    change(event)
    return event


BROKEN_EVENTS = {
    "Failed without error": broken("event-failed.json", lambda e: e["data"].pop("error")),
    "error without details": broken("event-failed.json", lambda e: e["data"]["error"].pop("details")),
    "error with neither code nor message": broken(
        "event-failed.json", lambda e: e["data"]["error"].update(code=None, message="")
    ),
    "Accepted without operationUrl": broken("event-accepted.json", lambda e: e["data"].pop("operationUrl")),
    "Accepted with an error": broken("event-accepted.json", lambda e: e["data"].update(error=app_error("X", "y"))),
    "Succeeded without completedAt": broken("event-succeeded.json", lambda e: e["data"].pop("completedAt")),
    "id with the wrong suffix": broken("event-succeeded.json", lambda e: e.update(id="req-42:accepted")),
    "id without a requestId": broken("event-failed.json", lambda e: e.update(id=":failed")),
    "status not matching type": broken("event-succeeded.json", lambda e: e["data"].update(status="Failed")),
    "unknown type": broken("event-succeeded.json", lambda e: e.update(type="ScVmm.CheckpointDelete.Deleted")),
    "specversion 0.3": broken("event-accepted.json", lambda e: e.update(specversion="0.3")),
    "time not UTC": broken("event-accepted.json", lambda e: e.update(time="2026-11-27T03:39:40.212+01:00")),
    "invalid traceparent": broken(
        "event-accepted.json", lambda e: e.update(traceparent="00-" + "0" * 32 + "-00f067aa0ba902b7-01")
    ),
    "negative pollCount": broken("event-succeeded.json", lambda e: e["data"].update(pollCount=-1)),
    "subject without checkpointId": broken("event-succeeded.json", lambda e: e["data"].pop("checkpointId")),
    "checkpointId without subject": broken("event-succeeded.json", lambda e: e.pop("subject")),
    "invalid-request source with a resourceUri": broken("event-failed.json", lambda e: e.update(source=INVALID_SOURCE)),
    "no resourceUri but a resource source": broken("event-failed-invalid-request.json", lambda e: e.update(source=URI)),
    "data without requestId": broken("event-accepted.json", lambda e: e["data"].pop("requestId")),
    "datacontenttype text": broken("event-accepted.json", lambda e: e.update(datacontenttype="text/plain")),
}


@pytest.mark.parametrize("name", BROKEN_EVENTS)
def test_broken_events_are_rejected(name):
    event = BROKEN_EVENTS[name]
    assert not EVENT.is_valid(event)
    assert not any(v.is_valid(event) for v in EVENT_OF_STATUS.values())


# --- examples --------------------------------------------------------------------------------------


def assert_valid_request_message(text: str, message_id: str = "msg-example"):
    """A message text as the app gets it: decodes, and the request object in it validates."""
    request = decode_request(text, message_id)
    try:
        document = json.loads(text)
    except ValueError:
        document = json.loads(base64.b64decode(text))
    if "specversion" in document:
        assert CLOUD_EVENTS_ENVELOPE.is_valid(document), list(CLOUD_EVENTS_ENVELOPE.iter_errors(document))
        data = document.get("data") or json.loads(base64.b64decode(document["data_base64"]))
    elif "eventType" in document:
        assert EVENT_GRID_ENVELOPE.is_valid(document), list(EVENT_GRID_ENVELOPE.iter_errors(document))
        data = document["data"]
    else:
        data = document
    assert REQUEST.is_valid(data), list(REQUEST.iter_errors(data))
    return request, document


def test_example_request():
    text = (EXAMPLES / "request.json").read_text(encoding="utf-8")
    request, document = assert_valid_request_message(text)
    assert (request.resource_uri, request.request_id, request.traceparent) == (
        document["resourceUri"],
        document["requestId"],
        document["traceparent"],
    )
    assert decode_request(base64.b64encode(text.encode()), "m") == request  # the base64 form too
    assert document in REQUEST_SCHEMA["examples"]


@pytest.mark.parametrize("name", ["request-eventgrid.json", "request-cloudevent.json"])
def test_example_envelopes(name):
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    for message in (text, base64.b64encode(text.encode()).decode()):  # Event Grid delivers base64
        request, document = assert_valid_request_message(message)
        assert request.request_id == document["id"]  # data names no requestId: the envelope's id is used
        assert request.resource_uri == document["data"]["resourceUri"]
    if "specversion" in document:
        assert request.traceparent == document["traceparent"] == valid_traceparent(document["traceparent"])
    assert document.get("eventType", document.get("type")) == "ScVmm.CheckpointDelete.Requested"


def test_example_events():
    names = sorted(p.name for p in EXAMPLES.glob("event-*.json"))
    assert {"event-accepted.json", "event-succeeded.json", "event-failed.json"} <= set(names)
    for name in names:
        event = load(name)
        assert_valid_event(event)
        assert name.startswith("event-" + event["data"]["status"].lower())


def test_example_policy_messages():
    """The retention policy samples (issue 11; tests/test_policy.py tests the rest of shared/policy.py)."""
    names = sorted(p.name for p in EXAMPLES.glob("policy-*.json"))
    assert {"policy-request.json", "policy-event-completed.json", "policy-event-failed.json"} <= set(names)
    requests = ref(SCHEMA_DOCS["policy-request.schema.json"]["$id"])
    events = ref(SCHEMA_DOCS["policy-event.schema.json"]["$id"])
    for name in names:
        text = (EXAMPLES / name).read_text(encoding="utf-8")
        document = json.loads(text)
        if name.startswith("policy-request"):
            assert requests.is_valid(document), list(requests.iter_errors(document))
            shared = {k: v for k, v in document.items() if k not in ("policy", "dryRun")}
            assert decode_request(json.dumps(shared), "m").resource_uri == document["resourceUri"]
            assert parse_policy(document) is not None
            with pytest.raises(InvalidRequest):  # until the submit step runs policies
                decode_request(text, "m")
        else:
            assert events.is_valid(document), list(events.iter_errors(document))
            outcome = document["type"].rsplit(".", 1)[1].lower()
            assert name.startswith(f"policy-event-{outcome}")
            assert document["id"] == f"{document['data']['requestId']}:{outcome}"


class LogicApp:
    """Just enough of the workflow definition language for these two workflows: known expressions only."""

    def __init__(self, name: str):
        self.document = load(name)
        self.definition = self.document["definition"]

    def parameter_default(self, name: str):
        return self.definition["parameters"][name]["defaultValue"]

    def action(self, name: str) -> dict:
        return self.definition["actions"][name]


ENQUEUE_EXPRESSIONS = {
    "@triggerBody()?['resourceUri']": "resourceUri",
    "@triggerBody()?['checkpointId']": "checkpointId",
    "@coalesce(triggerBody()?['requestId'], workflow()?['run']?['name'])": "requestId",
    "@triggerBody()?['correlationId']": "correlationId",
    "@triggerOutputs()?['headers']?['traceparent']": "traceparent",
}


@pytest.mark.parametrize(
    "values",
    [
        {
            "resourceUri": URI,
            "checkpointId": "cp-1",
            "requestId": "req-9",
            "correlationId": "c-9",
            "traceparent": TRACEPARENT,
        },
        # Only resourceUri posted, no traceparent header: the others evaluate to null, the run name is the requestId.
        {
            "resourceUri": URI,
            "checkpointId": None,
            "requestId": "08584512345678901234567890CU12",
            "correlationId": None,
            "traceparent": None,
        },
    ],
    ids=["every field", "only resourceUri"],
)
def test_logic_app_enqueue_puts_a_valid_request(values):
    app = LogicApp("logicapp-enqueue-request.json")
    compose = app.action("Compose_request")["inputs"]
    assert set(compose.values()) <= set(ENQUEUE_EXPRESSIONS), "an expression the test does not know"
    request = {name: values[ENQUEUE_EXPRESSIONS[expression]] for name, expression in compose.items()}
    assert set(request) <= set(REQUEST_SCHEMA["properties"])
    put = app.action("Put_request_on_queue")
    assert put["inputs"]["method"] == "post" and put["inputs"]["path"].endswith("/messages")
    assert put["inputs"]["body"] == "@{string(outputs('Compose_request'))}"
    assert "parameters('requestsQueue')" in put["inputs"]["path"]
    assert app.parameter_default("requestsQueue") == "checkpoint-delete-requests"
    decoded, _ = assert_valid_request_message(json.dumps(request, separators=(",", ":")))  # string() of the object
    assert decoded.resource_uri == URI and decoded.request_id == values["requestId"]
    trigger_schema = app.definition["triggers"]["manual"]["inputs"]["schema"]
    assert set(trigger_schema["properties"]) <= set(REQUEST_SCHEMA["properties"])
    assert trigger_schema["required"] == REQUEST_SCHEMA["required"]


def test_logic_app_on_outcome_parses_every_event_and_branches_on_the_outcome():
    app = LogicApp("logicapp-on-outcome.json")
    trigger = app.definition["triggers"]["When_there_are_messages_in_the_events_queue"]
    assert (
        trigger["inputs"]["path"].endswith("/message_trigger")
        and "parameters('eventsQueue')" in trigger["inputs"]["path"]
    )
    assert app.parameter_default("eventsQueue") == "checkpoint-delete-events"
    parse = app.action("Parse_event")
    assert parse["inputs"]["content"] == "@triggerBody()?['MessageText']"  # events are plain JSON text
    parse_schema = Draft4Validator(parse["inputs"]["schema"])  # Logic Apps' Parse JSON reads draft-04
    events = [load(p.name) for p in sorted(EXAMPLES.glob("event-*.json"))]
    for error in ERRORS.values():
        events += events_for(json.dumps({"resourceUri": URI, "correlationId": "c"}), error)
        events += events_for(json.dumps({"requestId": "r"}), error)
    for event in events:
        assert parse_schema.is_valid(event), list(parse_schema.iter_errors(event))
    switch = app.action("Switch_on_outcome")
    assert switch["expression"] == "@body('Parse_event')?['type']"
    assert {c["case"] for c in switch["cases"].values()} == {TYPE_PREFIX + "Succeeded", TYPE_PREFIX + "Failed"}
    # Every field a branch reads exists in the event schema.
    data = EVENT_SCHEMA["$defs"]["data"]["properties"]
    error = EVENT_SCHEMA["$defs"]["error"]["properties"]
    text = json.dumps(switch)
    for path in re.findall(r"body\('Parse_event'\)((?:\?\['\w+'\])+)", text):
        keys = re.findall(r"\['(\w+)'\]", path)
        if keys[0] == "data":
            assert keys[1] in data, path
            if keys[1] == "error" and len(keys) > 2:
                assert keys[2] in error, path
        else:
            assert keys[0] in EVENT_SCHEMA["$defs"]["cloudEvent"]["properties"], path
    delete = app.action("Delete_event_message")
    assert delete["runAfter"] == {"Switch_on_outcome": ["Succeeded"]}
    assert "triggerBody()?['MessageId']" in delete["inputs"]["path"]
    assert delete["inputs"]["queries"] == {"popreceipt": "@triggerBody()?['PopReceipt']"}


def _snippet():
    spec = importlib.util.spec_from_file_location("enqueue_request_example", EXAMPLES / "enqueue_request.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_python_snippet_sends_a_valid_request(azurite, capsys):
    snippet = _snippet()
    queue = "t" + uuid.uuid4().hex[:12] + "-requests"
    requests_queue = QueueClient.from_connection_string(azurite.connection_string, queue)
    requests_queue.create_queue()  # the app's deployment creates it
    argv = [
        "--connection-string",
        azurite.connection_string,
        "--queue",
        queue,
        "--resource-uri",
        URI,
        "--checkpoint-id",
        "cp-1",
        "--correlation-id",
        "c-1",
        "--traceparent",
        TRACEPARENT,
    ]
    assert snippet.main(argv) == 0
    (message,) = requests_queue.receive_messages()
    request, document = assert_valid_request_message(message.content)
    assert capsys.readouterr().out.strip() == request.request_id == document["requestId"]
    assert (request.resource_uri, request.checkpoint_id, request.correlation_id) == (URI, "cp-1", "c-1")
    minimal = snippet.build_request(URI)
    assert REQUEST.is_valid(minimal) and set(minimal) == {"resourceUri", "requestId"}
    assert_valid_request_message(snippet.message_text(snippet.build_request(URI, "cp", request_id="é x")))


def test_shell_example_dry_run_prints_valid_messages():
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable}
    env.pop("CHECKPOINT_REQUESTS_QUEUE", None)
    run = subprocess.run(
        ["bash", str(EXAMPLES / "enqueue_request.sh"), URI, "cp-1", "req-sh-1", "change-1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    messages = run.stdout.split()
    assert len(messages) == 2, run.stdout  # the az message, then checkpointctl's (a CloudEvent in base64)
    requests = [assert_valid_request_message(m)[0] for m in messages]
    assert [r.request_id for r in requests] == ["req-sh-1", "req-sh-1-ctl"]
    assert {(r.resource_uri, r.checkpoint_id, r.correlation_id) for r in requests} == {(URI, "cp-1", "change-1")}
    assert "az storage message put --auth-mode login" in run.stderr


def test_event_grid_subscription_example_matches_the_contract():
    bicep = (EXAMPLES / "eventgrid-subscription.bicep").read_text(encoding="utf-8")
    assert "param requestsQueueName string = 'checkpoint-delete-requests'" in bicep
    assert "'ScVmm.CheckpointDelete.Requested'" in bicep  # the type of the sample envelopes and checkpointctl's
    assert "endpointType: 'StorageQueue'" in bicep and "type: 'UserAssigned'" in bicep
    assert "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a" in bicep  # Storage Queue Data Message Sender
