"""`python -m localdev.standins` starts the stand-ins and writes settings the app accepts; the
local host command runs the app on them."""

import json
import os
import signal
import subprocess
import sys
import time

from azure.storage.queue import QueueClient

from shared.settings import Settings
from tests.support.app_harness import new_resource_uri
from tests.support.paths import ROOT


def _start(args, extra_env=None, **kw):
    # the settings file is to decide these; the environment wins over it, as with func start
    env = {
        k: v for k, v in os.environ.items() if k not in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "REQUESTS_CA_BUNDLE")
    }
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env={**env, **(extra_env or {})}, text=True, **kw)


def _stop(process) -> str:
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    return out or ""


def test_standins_and_the_local_host_command_run_a_request(tmp_path):
    settings_file = tmp_path / "local.settings.json"
    standins = _start(["localdev.standins", "--settings", str(settings_file)], stdout=subprocess.PIPE)
    host = None
    try:
        deadline = time.monotonic() + 30
        while not settings_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        values = json.loads(settings_file.read_text())["Values"]
        settings = Settings.from_env(values)
        assert settings.arm_endpoint.startswith("https://127.0.0.1:")
        assert values["IDENTITY_ENDPOINT"].startswith("http://127.0.0.1:")

        # the environment wins over the file, as with func start: a faster timer
        host = _start(["localdev.functions_host", "--settings", str(settings_file)], {"POLL_SCHEDULE": "*/2 * * * * *"},
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        requests = QueueClient.from_connection_string(values["AzureWebJobsStorage"], settings.requests_queue)
        requests.create_queue()
        requests.send_message(json.dumps({"resourceUri": new_resource_uri(), "requestId": "standins-1"}))
        events = QueueClient.from_connection_string(values["AzureWebJobsStorage"], settings.events_queue)
        seen = []
        deadline = time.monotonic() + 60
        while len(seen) < 2 and time.monotonic() < deadline:
            try:
                for message in events.receive_messages(max_messages=32):
                    seen.append(json.loads(message.content)["type"])
                    events.delete_message(message)
            except Exception:  # the events queue is created by the app on first use
                pass
            time.sleep(0.5)
        assert seen == ["ScVmm.CheckpointDelete.Accepted", "ScVmm.CheckpointDelete.Succeeded"]
    finally:
        if host is not None:
            _stop(host)
            assert host.returncode == 0
        out = _stop(standins)
    assert standins.returncode == 0
    assert (
        "settings written to" in out and "stopping; the ARM emulator received 4 request(s)"
    )  # a POST, three GETs in out
