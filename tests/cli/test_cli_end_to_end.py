"""checkpointctl enqueue -> the app (in the local host) -> checkpointctl watch, for each envelope."""

import json

import pytest

from checkpointctl.cli import main
from localdev.arm_emulator import Fault, Scenario
from tests.support.app_harness import new_resource_uri


def _queue_flags(app, azurite) -> list[str]:
    s = app.settings
    return [
        "--connection-string", azurite.connection_string,
        "--requests-queue", s.requests_queue,
        "--tracking-queue", s.tracking_queue,
        "--events-queue", s.events_queue,
    ]  # fmt: skip


def _run(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


@pytest.mark.parametrize(
    ("envelope", "encoding"),
    [("plain", "plain"), ("plain", "base64"), ("eventgrid", "base64"), ("cloudevents", "plain")],
)
def test_enqueue_app_watch(capsys, make_app, arm, azurite, envelope, encoding):
    app = make_app()
    arm.default = Scenario(done_after_polls=1, retry_after=1)
    flags = _queue_flags(app, azurite)
    code, out = _run(
        capsys, "enqueue", *flags, "--resource-uri", new_resource_uri(), "--checkpoint-id", "cp-cli",
        "--correlation-id", "cli", "--envelope", envelope, "--encoding", encoding,
    )  # fmt: skip
    assert code == 0
    (request_id,) = out.split()

    with app.host:  # the functions run in the background, as under `func start`
        code, out = _run(capsys, "watch", *flags, "--until-done", request_id, "--timeout", "30", "--json")
    assert code == 0, out
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["type"], e["data"]["requestId"]) for e in events] == [
        ("ScVmm.CheckpointDelete.Accepted", request_id),
        ("ScVmm.CheckpointDelete.Succeeded", request_id),
    ]
    assert events[1]["subject"] == "cp-cli" and events[1]["data"]["correlationId"] == "cli"


def test_watch_exits_1_when_arm_rejects_the_deletion(capsys, make_app, arm, azurite):
    app = make_app()
    arm.default = Scenario(submit=Fault.arm_error(409, "Conflict", "the checkpoint is in use"))
    flags = _queue_flags(app, azurite)
    code, out = _run(capsys, "enqueue", *flags, "--resource-uri", new_resource_uri())
    assert code == 0
    with app.host:
        code, out = _run(capsys, "watch", *flags, "--until-done", out.strip(), "--timeout", "30")
    assert code == 1
    assert "Conflict" in out
