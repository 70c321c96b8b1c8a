"""checkpointctl enqueue with retention policies (docs/cli.md, docs/policies.md) against a real Azurite:
--keep-latest, --name-pattern, what --dry-run and --validate-only mean, policy lines in --file."""

from __future__ import annotations

import base64
import json

import pytest

from tests.support.cli import URI, URI2, run
from tests.support.policy import REQUEST

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def sent_documents(queues) -> list[dict]:
    return [json.loads(message.content) for message in queues.messages("requests")]


def assert_policy_request(document: dict) -> None:
    assert not [e.message for e in REQUEST.iter_errors(document)], document


def test_policy_from_flags_lands_as_the_policy_request(capsys, queues):
    code, out, err = run(
        capsys, "enqueue", *queues.flags, "--resource-uri", URI, "--keep-latest", "3", "--name-pattern", "nightly-*",
        "--request-id", "policy-7", "--correlation-id", "change-1300", "--traceparent", TRACEPARENT,
    )  # fmt: skip
    assert (code, out, err) == (0, "policy-7\n", "")
    [document] = sent_documents(queues)
    assert document == {
        "resourceUri": URI,
        "requestId": "policy-7",
        "correlationId": "change-1300",
        "traceparent": TRACEPARENT,
        "policy": {"keepLatest": 3, "namePattern": "nightly-*"},
    }
    assert_policy_request(document)


@pytest.mark.parametrize(
    ("flags", "policy"),
    [
        (["--keep-latest", "0"], {"keepLatest": 0}),
        (["--keep-latest", "1000"], {"keepLatest": 1000}),
        (["--name-pattern", "pre-patch-*"], {"namePattern": "pre-patch-*"}),
    ],
)
def test_either_rule_alone_and_a_generated_request_id(capsys, queues, flags, policy):
    code, out, _ = run(capsys, "enqueue", *queues.flags, "--resource-uri", URI, *flags, "--json")
    assert code == 0
    record = json.loads(out)
    [document] = sent_documents(queues)
    assert document == {"resourceUri": URI, "requestId": record["requestId"], "policy": policy}
    assert_policy_request(document)


def test_dry_run_with_a_policy_flag_sends_the_policys_dry_run(capsys, queues):
    code, out, err = run(
        capsys, "enqueue", *queues.flags, "--resource-uri", URI, "--keep-latest", "1", "--dry-run",
        "--request-id", "policy-8",
    )  # fmt: skip
    assert (code, out, err) == (0, "policy-8\n", "")  # sent, and no deprecation note
    [document] = sent_documents(queues)
    assert document == {"resourceUri": URI, "requestId": "policy-8", "policy": {"keepLatest": 1}, "dryRun": True}
    assert_policy_request(document)


def test_dry_run_without_a_policy_flag_still_validates_only_and_says_it_is_deprecated(capsys, queues):
    code, out, err = run(capsys, "enqueue", *queues.flags, "--resource-uri", URI, "--request-id", "d1", "--dry-run")
    assert code == 0
    assert json.loads(out) == {"resourceUri": URI, "requestId": "d1"}
    assert "--validate-only" in err and "nothing was sent" in err
    assert queues.messages("requests") == []


def test_validate_only_sends_nothing_and_needs_no_connection(capsys, queues):
    code, out, err = run(
        capsys, "enqueue", "--resource-uri", URI, "--name-pattern", "nightly-*", "--dry-run", "--validate-only",
        "--request-id", "v1", "--envelope", "cloudevents", "--encoding", "base64",
    )  # fmt: skip
    assert code == 0
    assert "validate only: 1 valid request(s); nothing was sent" in err and "deprecated" not in err
    event = json.loads(base64.b64decode(out))
    assert (event["specversion"], event["id"]) == ("1.0", "v1")
    assert event["data"] == {
        "resourceUri": URI,
        "requestId": "v1",
        "policy": {"namePattern": "nightly-*"},
        "dryRun": True,
    }
    assert queues.messages("requests") == []


def test_policy_requests_in_a_file_are_sent_in_order_with_the_others(capsys, queues, tmp_path):
    lines = [
        {"resourceUri": URI, "policy": {"keepLatest": 2}, "requestId": "p-1"},
        {"resourceUri": URI2, "checkpointId": "cp-7", "requestId": "d-2"},
        {"resourceUri": URI2, "policy": {"namePattern": "x*", "keepLatest": None}, "dryRun": True, "requestId": "p-3"},
        {"resourceUri": URI, "policy": None, "dryRun": False, "checkpointId": "cp-1", "requestId": "d-4"},
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, out, err = run(capsys, "enqueue", *queues.flags, "--file", str(path), "--envelope", "eventgrid")
    assert (code, out.split(), err) == (0, ["p-1", "d-2", "p-3", "d-4"], "")
    assert [document["data"] for document in sent_documents(queues)] == lines
    assert_policy_request(lines[0])
    assert_policy_request(lines[2])


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ('{"resourceUri": "%s", "policy": {"keepLatest": 3.0}}', "policy.keepLatest: policy.keepLatest must be an"),
        ('{"resourceUri": "%s", "policy": {"keepLatest": "3"}}', "policy.keepLatest must be an integer"),
        ('{"resourceUri": "%s", "policy": {"keepLatest": true}}', "policy.keepLatest must be an integer"),
        ('{"resourceUri": "%s", "policy": {"keeplatest": 3}}', "policy has no member 'keeplatest'"),
        ('{"resourceUri": "%s", "policy": {"keepLatest": 3, "dryRun": true}}', "dryRun goes beside policy"),
        ('{"resourceUri": "%s", "policy": {}}', "policy needs keepLatest, namePattern or both"),
        ('{"resourceUri": "%s", "policy": [3]}', "policy must be a JSON object"),
        ('{"resourceUri": "%s", "policy": {"keepLatest": 3}, "checkpointId": "cp-1"}', "either a checkpointId or a"),
        ('{"resourceUri": "%s", "dryRun": true}', "dryRun: dryRun is for policy requests only"),
        ('{"resourceUri": "%s", "policy": {"keepLatest": 3}, "dryRun": "yes"}', "dryRun must be true or false"),
        ('{"resourceUri": "%s", "policy": {"keepLatest": 5, "keepLatest": 0}}', "more than one member named keepLatest"),
        ('{"resourceUri": "%s", "policy": {"keepLatest": 5}, "policy": {"keepLatest": 0}}', "more than one member named policy"),
        ('{"resourceUri": "%s", "checkpointId": "a", "checkpointId": "b"}', "more than one member named checkpointId"),
        ('{"resourceUri": "%s/..", "policy": {"keepLatest": 3}}', "resourceUri: resourceUri must not contain '.'"),
        ('{"resourceUri": "%s", "requestId": "", "policy": {"keepLatest": -1}}', "requestId must be 1 to 256 characters long; policy.keepLatest"),
    ],
)  # fmt: skip
def test_invalid_policy_lines_are_refused_with_the_apps_words_and_nothing_is_sent(
    capsys, queues, tmp_path, line, shown
):
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps({"resourceUri": URI, "policy": {"keepLatest": 1}}) + "\n" + line % URI + "\n")
    code, out, err = run(capsys, "enqueue", *queues.flags, "--file", str(path))
    assert (code, out) == (2, "")
    assert "invalid request: line 2: " in err and shown in err and "nothing was sent" in err
    assert "line 1" not in err
    assert queues.messages("requests") == []


def test_a_repeated_traceparent_is_dropped_as_the_app_drops_it(capsys, queues, tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text(f'{{"resourceUri": "{URI}", "traceparent": "{TRACEPARENT}", "traceparent": "x"}}\n')
    code, _, err = run(capsys, "enqueue", *queues.flags, "--file", str(path))
    assert code == 0 and "traceparent is given more than once" in err
    [document] = sent_documents(queues)
    assert "traceparent" not in document


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["--checkpoint-id", "cp-1", "--keep-latest", "2"], "--checkpoint-id names one checkpoint to delete"),
        (["--checkpoint-id", "cp-1", "--name-pattern", "n*"], "give one or the other"),
        (["--keep-latest", "1001"], "flags: policy.keepLatest (--keep-latest): policy.keepLatest must be an integer"),
        (["--keep-latest", "-1"], "policy.keepLatest (--keep-latest)"),
        (["--keep-latest", "3.0"], "'3.0' is not a whole number"),
        (["--name-pattern", ""], "policy.namePattern (--name-pattern): policy.namePattern must be 1 to 256"),
        (["--name-pattern", "bad\tpattern"], "policy.namePattern must contain printable characters only"),
        (["--keep-latest", "2", "--file", "-"], "--file cannot be combined with --resource-uri, --keep-latest"),
    ],
)
def test_usage_errors_exit_2_and_send_nothing(capsys, queues, argv, shown):
    code, out, err = run(capsys, "enqueue", *queues.flags, "--resource-uri", URI, *argv)
    assert (code, out) == (2, "")
    assert shown in err
    assert queues.messages("requests") == []


def test_enqueue_help_tells_the_two_dry_runs_apart(capsys):
    code, out, _ = run(capsys, "enqueue", "--help")
    assert code == 0
    for text in ("--keep-latest K", "--name-pattern P", "--validate-only", "--dry-run is the policy's"):
        assert text in out
