"""Characters and hypothesis strategies for request objects (valid ARM resource ids and their
mutations, text fields, traceparents, envelope-shaped members). Text characters come from the common
ground of the request schema's pattern and str.isprintable() only: tests/contract/test_schemas.py
says what that is and checks it on every code point."""

from __future__ import annotations

import string
import unicodedata

from hypothesis import strategies as st

from shared.request import resource_uri_problem
from tests.support.contract import REQUEST_SCHEMA, TEXT_FIELDS, TRACEPARENT, URI

# Characters a queue message cannot carry (lone surrogates: Azurite answers 400 Bad Request; U+FFFE,
# U+FFFF: stored, but the SDK cannot parse the answer) and the other noncharacters, which no event may carry:
# both the schema and the app reject them in resourceUri.
NONCHARACTER_CODE_POINTS = [
    *range(0xFDD0, 0xFDF0),
    *(p | c for p in range(0, 0x110000, 0x10000) for c in (0xFFFE, 0xFFFF)),
]
UNCARRIABLE_URI_CHARS = "\ud800\udbff\udc00\udfff" + "".join(map(chr, NONCHARACTER_CODE_POINTS))

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
