"""The schemas in schemas/, resolvable by their $id without any network."""

import json

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from tests.support.paths import ROOT

SCHEMA_DOCS = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in (ROOT / "schemas").glob("*.schema.json")}
SCHEMA_REGISTRY = Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in SCHEMA_DOCS.values())


def schema_validator(schema: dict) -> Draft202012Validator:
    return Draft202012Validator(schema, registry=SCHEMA_REGISTRY)  # no format_checker: formats are annotations
