"""The app's functions and host.json as the Functions host reads them, without a host."""

import json
import os
import subprocess
import sys

import pytest

import function_app
from shared.budgets import DEFAULT_BUDGETS
from tests.support.paths import ROOT

FUNCTIONS = function_app.app.get_functions()  # the app indexes its functions once, as the worker does


def _triggers():
    found = {}
    for function in FUNCTIONS:
        (trigger,) = [b for b in function.get_bindings_dict()["bindings"] if b["type"].endswith("Trigger")]
        found[function.get_function_name()] = trigger
    return found


def test_three_functions_with_their_triggers():
    triggers = _triggers()
    assert set(triggers) == {"submit_checkpoint_deletion", "poll_checkpoint_operations", "report_poisoned_requests"}

    submit = triggers["submit_checkpoint_deletion"]
    assert (submit["type"], submit["queueName"], submit["connection"]) == (
        "queueTrigger",
        "%CHECKPOINT_REQUESTS_QUEUE%",
        "AzureWebJobsStorage",
    )
    poison = triggers["report_poisoned_requests"]
    assert (poison["type"], poison["queueName"], poison["connection"]) == (
        "queueTrigger",
        "%CHECKPOINT_REQUESTS_QUEUE%-poison",
        "AzureWebJobsStorage",
    )
    poll = triggers["poll_checkpoint_operations"]
    assert (poll["type"], poll["schedule"], poll["runOnStartup"], poll["useMonitor"]) == (
        "timerTrigger",
        "%POLL_SCHEDULE%",
        False,
        False,
    )


_PRINT_TRIGGERS = """
import json, function_app
print(json.dumps({f.get_function_name(): f.get_bindings_dict()["bindings"][0]
                  for f in function_app.app.get_functions()}, default=str))
"""


@pytest.mark.parametrize("named", [False, True], ids=["settings-absent", "settings-present"])
def test_the_triggers_bind_the_contracts_defaults_when_their_settings_are_absent(named):
    # Before, the bindings always referred to %CHECKPOINT_REQUESTS_QUEUE% and %POLL_SCHEDULE%: the
    # host cannot resolve a reference to a missing setting, so without them no function started,
    # though the contract gives both settings defaults.
    env = {k: v for k, v in os.environ.items() if k not in ("CHECKPOINT_REQUESTS_QUEUE", "POLL_SCHEDULE")}
    if named:
        env |= {"CHECKPOINT_REQUESTS_QUEUE": "my-requests", "POLL_SCHEDULE": "*/5 * * * * *"}
    done = subprocess.run(
        [sys.executable, "-c", _PRINT_TRIGGERS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    triggers = json.loads(done.stdout.strip().splitlines()[-1])
    names = (
        triggers["submit_checkpoint_deletion"]["queueName"],
        triggers["report_poisoned_requests"]["queueName"],
        triggers["poll_checkpoint_operations"]["schedule"],
    )
    if named:  # the host resolves them, as it resolves any setting
        assert names == ("%CHECKPOINT_REQUESTS_QUEUE%", "%CHECKPOINT_REQUESTS_QUEUE%-poison", "%POLL_SCHEDULE%")
    else:
        assert names == ("checkpoint-delete-requests", "checkpoint-delete-requests-poison", "*/15 * * * * *")


def test_no_output_bindings():
    for function in FUNCTIONS:
        assert len(function.get_bindings()) == 1, function.get_function_name()


def _seconds(hhmmss: str) -> int:
    h, m, s = (int(x) for x in hhmmss.split(":"))
    return h * 3600 + m * 60 + s


def test_host_json_queue_settings_and_timeout():
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    assert host["extensionBundle"]["version"].startswith("[4.")
    queues = host["extensions"]["queues"]
    assert queues["messageEncoding"] == "none"
    assert _seconds(queues["visibilityTimeout"]) > 0
    assert queues["maxDequeueCount"] >= 2
    assert 1 <= queues["batchSize"] <= 32
    # a poll run (operations, then the Event Grid outbox) and a submit stay well below the function timeout
    timeout = _seconds(host["functionTimeout"])
    assert timeout / 2 >= DEFAULT_BUDGETS.poll_run + DEFAULT_BUDGETS.outbox_run
    assert timeout / 2 >= DEFAULT_BUDGETS.submit


def test_sample_settings_name_every_binding_setting():
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    for name in ("AzureWebJobsStorage", "CHECKPOINT_REQUESTS_QUEUE", "POLL_SCHEDULE", "FUNCTIONS_WORKER_RUNTIME"):
        assert values.get(name), name


def test_the_readmes_time_limits_are_the_apps():
    from shared.budgets import ARM_TIMEOUT, EVENTGRID_TIMEOUT, IDENTITY_TIMEOUT, STORAGE_TIMEOUT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Time limits", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): line.split("|")[2] for line in table.splitlines() if line.startswith("| ")}

    def says(row: str, *figures: float) -> None:
        for figure in figures:
            assert f"{figure:g} s" in rows[row], (row, figure)

    says("ARM (POST, status GET, instance GET)", *ARM_TIMEOUT)
    says("managed-identity token", *IDENTITY_TIMEOUT, DEFAULT_BUDGETS.token_wait)
    says("storage queues", *STORAGE_TIMEOUT)
    says("Event Grid publish", *EVENTGRID_TIMEOUT)
    says("pacing wait", DEFAULT_BUDGETS.pacing_wait)
    says("one submit delivery", DEFAULT_BUDGETS.submit, DEFAULT_BUDGETS.storage_reserve)
    says("one poll run", DEFAULT_BUDGETS.poll_run, DEFAULT_BUDGETS.outbox_run)
    says("one operation in a poll run", DEFAULT_BUDGETS.poll_lease, DEFAULT_BUDGETS.storage_reserve)
