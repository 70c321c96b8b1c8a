"""The request our ARM client sends, checked against our record of the operation
(localdev/arm_operation.json, which tests/contract/test_spec_drift.py keeps equal to Microsoft's
OpenAPI document): the operation's path template, api-version and body schema, for both of the
published examples."""

from __future__ import annotations

import re

import pytest

from localdev.arm_emulator import Scenario
from localdev.arm_spec import load_record, load_spec_rules
from tests.support.app_harness import new_resource_uri

RECORD = load_record()
OPERATION = RECORD["deleteCheckpoint"]
EXAMPLES = ["MaximumSet", "MinimumSet"]


@pytest.mark.parametrize("example", EXAMPLES)
def test_request_matches_the_operation_and_its_example(app, arm, example):
    sample = OPERATION["examples"][example]
    example_body = sample["body"]

    arm.default = Scenario()
    resource_uri = new_resource_uri()
    request = {"resourceUri": resource_uri, "requestId": f"spec-{example}"}
    if "id" in example_body:
        request["checkpointId"] = example_body["id"]
    app.send(request)
    app.deliver()

    (post,) = arm.requests(method="POST")
    assert post.method == OPERATION["method"]
    # the path template, with {resourceUri} in the path as is (x-ms-skip-url-encoding)
    assert OPERATION["resourceUriSkipsUrlEncoding"]
    pattern = "^" + re.escape(OPERATION["path"]).replace(re.escape("{resourceUri}"), "(?P<resourceUri>.+)") + "$"
    match = re.match(pattern, post.path)
    assert match, post.path
    assert "/" + match["resourceUri"] == resource_uri
    assert post.query["api-version"] == RECORD["apiVersion"]
    # the body: the example's body, valid against the operation's schema
    assert post.body == example_body
    load_spec_rules().validator_for(OPERATION["body"]["definition"]).validate(post.body)
    assert post.header("Content-Type").startswith("application/json")
    assert post.header("Authorization").startswith("Bearer ")
    assert arm.violations == []
    # the answer is the one the example documents: 202 with a Location
    assert sample["responses"] == ["202"]
    assert [e["type"] for e in app.events()] == ["ScVmm.CheckpointDelete.Accepted"]
