"""Our record of the operation (localdev/arm_operation.json) against Microsoft's OpenAPI document.

The emulator and the tests take the facts of deleteCheckpoint and of the VM instance GET from the
record, so they run in every clone. When Microsoft's document is beside the checkout (the
``spec_dir`` fixture: ``../shared/spec``, or ``$SCVMM_SPEC_DIR``), the same facts are derived here
from it, its common types and its examples, and must equal the record; without it that comparison
is deselected (tests/conftest.py says so in the summary). The record's own consistency is checked
in every clone."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from localdev.arm_spec import load_record

SPEC_FILE = "scvmm-2024-06-01.json"
COMMON_TYPES_FILE = "common-types-types.json"
COMMON_TYPES_REF = "common-types/resource-management/v5/types.json"
KEPT = ("type", "enum", "minLength")  # what the compact form keeps of a schema besides its structure


def _name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _refs(node) -> list[str]:
    """Every $ref in a compact schema."""
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    return [r for v in node for r in _refs(v)] if isinstance(node, list) else []


class _Document:
    """Microsoft's document and its common types, with $refs resolved across the two."""

    def __init__(self, spec_dir: Path) -> None:
        self.dir = spec_dir
        self.docs = {
            "spec": json.loads((spec_dir / SPEC_FILE).read_text(encoding="utf-8")),
            "common": json.loads((spec_dir / COMMON_TYPES_FILE).read_text(encoding="utf-8")),
        }
        self.spec = self.docs["spec"]

    def resolve(self, node: dict, doc: str = "spec") -> tuple[dict, str]:
        while "$ref" in node:
            file, _, pointer = node["$ref"].partition("#")
            if file:
                assert file.endswith(COMMON_TYPES_REF), node["$ref"]
                doc = "common"
            node = self.docs[doc]
            for part in pointer.strip("/").split("/"):
                node = node[part]
        return node, doc

    def operation(self, method: str, operation_id: str) -> tuple[str, dict]:
        (found,) = [
            (path, item[method])
            for path, item in self.spec["paths"].items()
            if item.get(method, {}).get("operationId") == operation_id
        ]
        return found

    # ---- the facts of an operation, in the record's form ------------------------------------
    def operation_facts(self, method: str, operation_id: str) -> dict:
        path, op = self.operation(method, operation_id)
        params = {p["name"]: p for p in (self.resolve(p)[0] for p in op["parameters"])}
        version = params.pop("api-version")
        assert (version["in"], version["required"]) == ("query", True)
        uri = params.pop("resourceUri")
        assert (uri["in"], uri["required"]) == ("path", True)
        facts: dict = {
            "operationId": operation_id,
            "method": method.upper(),
            "path": path,
            "resourceUriSkipsUrlEncoding": bool(uri.get("x-ms-skip-url-encoding")),
        }
        for param in params.values():
            assert param["in"] == "body", param
            facts["body"] = {"required": bool(param.get("required")), "definition": _name(param["schema"]["$ref"])}
        if op.get("x-ms-long-running-operation"):
            facts["longRunning"] = {"finalStateVia": op["x-ms-long-running-operation-options"]["final-state-via"]}
        facts["responses"] = {}
        for status, answer in op["responses"].items():
            entry = facts["responses"][status] = {}
            if "headers" in answer:
                entry["headers"] = {name: header["type"] for name, header in answer["headers"].items()}
            if "schema" in answer:
                entry["definition"] = _name(answer["schema"]["$ref"])
        return facts

    def examples(self, operation_id: str) -> dict:
        _, op = self.operation("post", operation_id)
        out = {}
        for title, ref in op["x-ms-examples"].items():
            example = json.loads((self.dir / ref["$ref"]).read_text(encoding="utf-8"))
            assert example["operationId"] == operation_id
            assert example["parameters"]["api-version"] == self.spec["info"]["version"]
            params = example["parameters"]
            out[title.removeprefix(operation_id + "_")] = {
                "resourceUri": params["resourceUri"],
                "body": params["body"],
                "responses": sorted(example["responses"]),
            }
        return out

    # ---- definitions, in the record's compact form ----------------------------------------------
    def members(self, node: dict, doc: str) -> tuple[dict, list]:
        """A schema's properties (with their documents) and required names, allOf bases included."""
        props: dict = {}
        required: list = []
        for base in node.get("allOf", []):
            more, more_required = self.members(*self.resolve(base, doc))
            props.update(more)
            required += more_required
        props.update({name: (sub, doc) for name, sub in node.get("properties", {}).items()})
        return props, required + node.get("required", [])

    def compact(self, node: dict, doc: str, found: list, keep=None) -> dict:
        """``node`` in the record's form; the $refs it keeps go to ``found`` with their document."""
        if "$ref" in node:
            found.append((node["$ref"], doc))
            return {"$ref": "#/definitions/" + _name(node["$ref"])}
        out = {k: node[k] for k in KEPT if k in node}
        props, required = self.members(node, doc)
        if keep is not None:
            props = {k: v for k, v in props.items() if k in keep}
        if props:
            out["properties"] = {k: self.compact(sub, sdoc, found) for k, (sub, sdoc) in props.items()}
        if required:
            out["required"] = required
        if "items" in node:
            out["items"] = self.compact(node["items"], doc, found)
        return out

    def definitions(self, roots: list[str], partial: dict[str, set]) -> tuple[dict, list[str]]:
        """Every definition reachable from ``roots`` (projected on the members in ``partial`` for
        the names it holds), and the names whose projection leaves members out."""
        out: dict = {}
        cut: list[str] = []
        todo = [(ref, "spec") for ref in roots]
        while todo:
            ref, doc = todo.pop()
            name = _name(ref)
            node, ndoc = self.resolve({"$ref": ref}, doc)
            found: list = []
            compact = self.compact(node, ndoc, found, partial.get(name))
            assert out.setdefault(name, compact) == compact, f"two definitions named {name}"
            if name in partial and compact != self.compact(node, ndoc, []):
                cut.append(name)
            todo += [(r, d) for r, d in found if _name(r) not in out]
        return out, sorted(set(cut))


@pytest.fixture
def document(spec_dir) -> _Document:
    return _Document(spec_dir)


@pytest.fixture
def record() -> dict:
    return load_record()


def test_record_matches_microsofts_document(document, record):
    # the operations: paths, parameters, answers, and the examples' requests
    assert record["apiVersion"] == document.spec["info"]["version"]
    submit = document.operation_facts("post", record["deleteCheckpoint"]["operationId"])
    submit["examples"] = document.examples(submit["operationId"])
    assert submit == record["deleteCheckpoint"]
    assert document.operation_facts("get", record["instanceGet"]["operationId"]) == record["instanceGet"]

    # the definitions reachable from their bodies and answers (the partial ones: the members we list)
    roots = []
    for name in ("deleteCheckpoint", "instanceGet"):
        _, op = document.operation(record[name]["method"].lower(), record[name]["operationId"])
        params = [document.resolve(p)[0] for p in op["parameters"]]
        roots += [p["schema"]["$ref"] for p in params if p["in"] == "body"]
        roots += [a["schema"]["$ref"] for a in op["responses"].values() if "schema" in a]
    partial = {name: set(record["definitions"][name]["properties"]) for name in record["partialDefinitions"]}
    definitions, cut = document.definitions(roots, partial)
    assert definitions == record["definitions"]
    assert cut == record["partialDefinitions"]  # each partial one does leave members out


def test_record_is_consistent(record):
    """In every clone: the record's schemas are valid, closed under $ref, and take the examples."""
    definitions = record["definitions"]
    for schema in definitions.values():
        jsonschema.Draft4Validator.check_schema(schema)
    named = [record["deleteCheckpoint"]["body"]["definition"]]
    named += [
        a["definition"]
        for op in ("deleteCheckpoint", "instanceGet")
        for a in record[op]["responses"].values()
        if "definition" in a
    ]
    named += [_name(ref) for ref in _refs(definitions)]
    assert set(named) <= set(definitions)
    assert set(record["partialDefinitions"]) <= set(definitions)
    body = {"$ref": "#/definitions/" + record["deleteCheckpoint"]["body"]["definition"], "definitions": definitions}
    for example in record["deleteCheckpoint"]["examples"].values():
        jsonschema.Draft4Validator(body).validate(example["body"])
