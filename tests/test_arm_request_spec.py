"""The request our ARM client sends, checked against Microsoft's OpenAPI document in ../shared/spec
(the operation's path template, api-version, and body schema), for both of the spec's examples."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from conftest import new_resource_uri
from localdev.arm_emulator import Scenario

OPERATION_ID = "VirtualMachineInstances_DeleteCheckpoint"
EXAMPLES = ["MaximumSet", "MinimumSet"]


def _operation(spec: dict) -> tuple[str, dict]:
    for path, item in spec["paths"].items():
        if item.get("post", {}).get("operationId") == OPERATION_ID:
            return path, item["post"]
    raise AssertionError(f"{OPERATION_ID} is not in the spec")


def _body_schema(spec: dict, operation: dict) -> dict:
    (body,) = [p for p in operation["parameters"] if p.get("in") == "body"]
    # a schema that resolves its #/definitions/... references against the spec document
    return {**body["schema"], "definitions": spec["definitions"]}


@pytest.mark.parametrize("example", EXAMPLES)
def test_request_matches_the_operation_and_its_example(app, arm, spec_dir, example):
    spec = json.loads((spec_dir / "scvmm-2024-06-01.json").read_text())
    path_template, operation = _operation(spec)
    sample = json.loads(
        (spec_dir / "examples" / f"VirtualMachineInstances_DeleteCheckpoint_{example}_Gen.json").read_text()
    )
    assert sample["operationId"] == OPERATION_ID
    example_body = sample["parameters"]["body"]

    arm.default = Scenario()
    resource_uri = new_resource_uri()
    request = {"resourceUri": resource_uri, "requestId": f"spec-{example}"}
    if "id" in example_body:
        request["checkpointId"] = example_body["id"]
    app.send(request)
    app.deliver()

    (post,) = arm.requests(method="POST")
    # the path template, with {resourceUri} in the path as is (x-ms-skip-url-encoding)
    pattern = "^" + re.escape(path_template).replace(re.escape("{resourceUri}"), "(?P<resourceUri>.+)") + "$"
    match = re.match(pattern, post.path)
    assert match, post.path
    assert "/" + match["resourceUri"] == resource_uri
    # api-version: the spec's version and the example's
    assert post.query["api-version"] == spec["info"]["version"] == sample["parameters"]["api-version"]
    # the body: the example's body, valid against the operation's schema
    assert post.body == example_body
    jsonschema.validate(post.body, _body_schema(spec, operation))
    assert post.header("Content-Type").startswith("application/json")
    assert post.header("Authorization").startswith("Bearer ")
    assert arm.violations == []
    # the answer is the one the example documents: 202 with a Location
    assert set(sample["responses"]) == {"202"}
    assert [e["type"] for e in app.events()] == ["ScVmm.CheckpointDelete.Accepted"]
