"""checkpointctl checkpoints (docs/cli.md) against the ARM emulator over HTTPS and the local managed-identity
endpoint: chain order, --json, the policy marks, and every way the read can fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from localdev.arm_emulator import Fault, Scenario
from localdev.arm_instances import VmInstances
from tests.support.cli import URI, URI2, run
from tests.support.paths import ROOT

# docs/policies.md's example chain, oldest first
CHAIN = ["base", "nightly-1", "pre-patch-2026-11", "Nightly-3", "NIGHTLY-4", "pre-patch-2026-12", "nightly-6"]
SCRAMBLED = [3, 0, 6, 1, 5, 2, 4]  # the order the instance lists them in


def entries(names: list[str]) -> list[dict]:
    """The chain of `names` as ARM lists it, oldest first: cp-0 <- cp-1 <- ..."""
    chain = []
    for i, name in enumerate(names):
        entry = {"checkpointID": f"cp-{i}", "name": name, "description": f"taken {i}"}
        if i:
            entry["parentCheckpointID"] = f"cp-{i - 1}"
        chain.append(entry)
    return chain


@pytest.fixture
def signed_in(monkeypatch, arm, identity, no_proxies):
    """The environment of a managed identity (App Service form: the local identity endpoint), the emulator's
    CA trusted through REQUESTS_CA_BUNDLE (preset on this machine: it overrides Session.verify), no other
    credential of DefaultAzureCredential's chain usable. The flags point at the emulator."""
    for name in list(os.environ):
        if name.startswith(("AZURE_", "MSI_", "IDENTITY_", "IMDS_")) or name == "ARM_ENDPOINT":
            monkeypatch.delenv(name)
    for name, value in identity.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", arm.ca_bundle_path)
    arm.reset()
    identity.reset_counts()
    return ["--arm-endpoint", arm.endpoint]


@pytest.fixture
def listing(monkeypatch, arm):
    """define(uri, listed): a VM instance whose GET lists exactly `listed` (any order, any entries); the
    emulator on its own lists a chain root first."""
    listed_for: dict[str, list] = {}
    body = VmInstances.body

    def listed_body(inst):
        document = body(inst)
        if inst.resource_uri in listed_for:
            document["properties"]["infrastructureProfile"]["checkpoints"] = listed_for[inst.resource_uri]
        return document

    monkeypatch.setattr(VmInstances, "body", staticmethod(listed_body))

    def define(uri: str, listed: list) -> None:
        arm.set_checkpoints(uri, [])
        listed_for[uri] = listed

    return define


def _no_token_shown(identity, *texts: str) -> None:
    assert identity.tokens_issued >= 1
    assert not any("lmi." in text for text in texts)  # the local endpoint's tokens all start so


def test_lists_a_scrambled_chain_oldest_first(capsys, arm, identity, signed_in, listing):
    chain = entries(CHAIN)
    listing(URI, [chain[i] for i in SCRAMBLED])
    code, out, err = run(capsys, "checkpoints", URI, *signed_in)
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["POS", "CHECKPOINT", "ID", "NAME", "PARENT"]
    assert [row.split() for row in rows] == [
        [str(i + 1), f"cp-{i}", name, f"cp-{i - 1}" if i else "-"] for i, name in enumerate(CHAIN)
    ]
    assert f"7 checkpoint(s) of {URI}, oldest first" in err
    [read] = arm.requests("instance")
    assert (read.method, read.query.get("api-version")) == ("GET", "2024-06-01")
    assert arm.violations == []
    assert identity.issued == [("https://management.azure.com", None)]
    _no_token_shown(identity, out, err)


def test_json_prints_one_object_per_checkpoint(capsys, arm, identity, signed_in, listing):
    chain = entries(CHAIN[:3])
    listing(URI, [chain[2], chain[0], chain[1]])
    code, out, err = run(capsys, "checkpoints", URI, "--json", *signed_in)
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"position": i + 1, **entry, "parentCheckpointID": entry.get("parentCheckpointID")}
        for i, entry in enumerate(chain)
    ]
    _no_token_shown(identity, out, err)


def test_policy_flags_mark_what_the_app_would_delete(capsys, arm, signed_in, listing):
    listing(URI, [entries(CHAIN)[i] for i in SCRAMBLED])
    argv = ["checkpoints", URI, "--keep-latest", "1", "--name-pattern", "nightly-*", *signed_in]
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    marks = {row["name"]: row["policy"] for row in map(json.loads, out.splitlines())}
    assert [name for name in CHAIN if marks[name] == "delete"] == ["nightly-1", "Nightly-3", "NIGHTLY-4"]
    assert 'the policy {"keepLatest": 1, "namePattern": "nightly-*"} would delete 3 and keep 4' in err

    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert out.splitlines()[0].split()[-1] == "POLICY"
    assert [row.split()[-1] for row in out.splitlines()[1:]] == ["keep", "delete", "keep", "delete", "delete"] + [
        "keep",
        "keep",
    ]


def test_a_branched_and_broken_list_gets_the_apps_order(capsys, signed_in, listing):
    # A <- B, A <- C, C <- D listed A, C, B, D: B is the newest; an entry without an id is left out; a
    # parent that is no string is no parent to the app (it reads strings only): R is a root, listed first
    listed = [
        {"checkpointID": "R", "name": "r", "parentCheckpointID": 7},
        {"checkpointID": "A", "name": "a"},
        {"checkpointID": "C", "name": "c", "parentCheckpointID": "A"},
        {"name": "no id"},
        {"checkpointID": "B", "name": "b\x1b[31m", "parentCheckpointID": "A"},
        {"checkpointID": "D", "name": "d", "parentCheckpointID": "C"},
    ]
    listing(URI, listed)
    code, out, err = run(capsys, "checkpoints", URI, *signed_in)
    assert code == 0, err
    assert [row.split()[1:] for row in out.splitlines()[1:]] == [
        ["R", "r", "7"],
        ["A", "a", "-"],
        ["C", "c", "A"],
        ["D", "d", "C"],
        ["B", "b\\x1b[31m", "A"],
    ]
    assert "\x1b" not in out  # ARM's text is shown escaped
    assert "1 listed entry left out" in err


def test_an_instance_without_checkpoints_lists_none(capsys, arm, signed_in):
    arm.set_checkpoints(URI, [])
    code, out, err = run(capsys, "checkpoints", URI, *signed_in)
    assert (code, out) == (0, "")
    assert "0 checkpoint(s)" in err


def test_a_vm_that_does_not_exist_shows_arms_404(capsys, arm, identity, signed_in):
    code, out, err = run(capsys, "checkpoints", URI2, *signed_in)
    assert (code, out) == (1, "")
    assert "HTTP 404: ResourceNotFound: The Resource 'Microsoft.ScVmm/virtualMachineInstances/default'" in err
    assert "no such VM instance" in err
    _no_token_shown(identity, out, err)


@pytest.mark.parametrize(
    ("fault", "shown"),
    [
        (Fault.arm_error(403, "AuthorizationFailed", "The client 'x' does not have authorization"), "Reader"),
        (Fault.arm_error(401, "InvalidAuthenticationToken", "The access token is invalid."), "did not accept"),
        (Fault.arm_error(503, "ServiceUnavailable", "Try later."), "transient"),
        (Fault(status=500), "HTTP 500 with no ARM error"),
        (Fault(status=302, location="https://elsewhere.example/x"), "not followed"),
        (Fault(status=200), "is not JSON"),
        (Fault(status=200, error={"code": "Odd", "message": "not an instance"}), "no properties.infrastructureProfile"),
    ],
)
def test_refusals_and_garbage_are_errors_that_say_what_arm_said(capsys, arm, identity, signed_in, fault, shown):
    arm.set_checkpoints(URI, ["cp-1"])
    arm.script(URI, Scenario(instance_faults=[fault]))
    code, out, err = run(capsys, "checkpoints", URI, *signed_in)
    assert (code, out) == (1, "")
    assert shown in err
    if fault.error and fault.status >= 400:
        assert f"HTTP {fault.status}: {fault.error['code']}: {fault.error['message']}" in err
    assert len(arm.requests()) == 1  # no retry, no redirect followed
    _no_token_shown(identity, out, err)


def test_unreachable_and_untrusted_endpoints(capsys, arm, signed_in, monkeypatch):
    code, out, err = run(capsys, "checkpoints", URI, "--arm-endpoint", "https://127.0.0.1:9")
    assert (code, out) == (1, "")
    assert "could not reach ARM at https://127.0.0.1:9" in err

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ROOT / "pyproject.toml"))  # a bundle without the emulator's CA
    code, out, err = run(capsys, "checkpoints", URI, *signed_in)
    assert (code, out) == (1, "")
    assert "TLS" in err and "REQUESTS_CA_BUNDLE" in err


def test_the_endpoint_comes_from_arm_endpoint_and_must_be_https(capsys, arm, signed_in, monkeypatch):
    arm.set_checkpoints(URI, ["cp-1"])
    monkeypatch.setenv("ARM_ENDPOINT", arm.endpoint)
    code, out, _ = run(capsys, "checkpoints", URI, "--json")
    assert code == 0 and json.loads(out)["checkpointID"] == "cp-1"

    code, out, err = run(capsys, "checkpoints", URI, "--arm-endpoint", arm.endpoint.replace("https", "http"))
    assert (code, out) == (2, "")
    assert "must be an absolute https URL" in err
    assert len(arm.requests()) == 1  # the refused one was never sent


def test_no_token_is_exit_1_and_says_so(capsys, arm, identity, signed_in):
    identity.fail_next(1, 400)
    code, out, err = run(capsys, "checkpoints", URI, "--credential", "managed-identity", *signed_in)
    assert (code, out) == (1, "")
    assert "could not get a Microsoft Entra token for https://management.azure.com/.default" in err
    assert arm.requests() == []


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["not-a-resource-id"], "RESOURCE_URI: resourceUri must start with '/subscriptions/'"),
        ([URI, "--keep-latest", "1001"], "--keep-latest: policy.keepLatest must be an integer from 0 to 1000"),
        ([URI, "--keep-latest", "-1"], "--keep-latest: policy.keepLatest"),
        ([URI, "--keep-latest", "two"], "'two' is not a whole number"),
        ([URI, "--name-pattern", ""], "--name-pattern: policy.namePattern must be 1 to 256 characters long"),
        ([URI, "--api-version", "latest"], "is not an ARM api-version"),
        ([URI, "--arm-endpoint", "https://127.0.0.1:1/sub/path"], "must be a base URL"),
        ([URI, "--credential", "browser"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_and_read_nothing(capsys, arm, signed_in, argv, shown):
    code, out, err = run(capsys, "checkpoints", *argv)
    assert (code, out) == (2, "")
    assert shown in err
    assert arm.requests() == []


def test_real_process_with_a_managed_identity(arm, identity, signed_in, listing):
    chain = entries(CHAIN[:4])
    listing(URI, chain[::-1])
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    sent = subprocess.run(
        [sys.executable, "-m", "checkpointctl", "checkpoints", URI, "--credential", "managed-identity", "--json"]
        + signed_in,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    assert [json.loads(line)["checkpointID"] for line in sent.stdout.splitlines()] == ["cp-0", "cp-1", "cp-2", "cp-3"]
    _no_token_shown(identity, sent.stdout, sent.stderr)


def test_help_has_examples(capsys):
    code, out, _ = run(capsys, "checkpoints", "--help")
    assert code == 0
    assert "examples:" in out and "python -m checkpointctl checkpoints" in out and "--credential" in out
