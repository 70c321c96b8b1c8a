"""localdev.functions_host (a local stand-in for `func start`) against a real Azurite from localdev.azurite.

Azurite comes from the repo's npm package: without `npm ci` the fixture fails with that advice.
Every test uses its own queues (Azurite's receive slows down on deep queues).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import azure.functions as func
import azure.functions.queue
import azure.functions.timer
import pytest
from azure.storage.queue import QueueClient

from localdev.azurite import Azurite, AzuriteError
from localdev.functions_host import HostConfigError, LocalHost, resolve_setting_refs
from tests.support.paths import ROOT

SAMPLE_APP = Path(__file__).resolve().parent / "local_host_app"
FAST = {"maxPollingInterval": 200, "visibilityTimeout": 0}  # ms, as host.json numbers


@pytest.fixture(scope="module")
def azurite():
    with Azurite() as server:
        yield server


@pytest.fixture(autouse=True)
def quiet_azure_sdk():
    """The SDK logs every HTTP request at INFO; keep failure reports readable."""
    sdk = logging.getLogger("azure")
    level = sdk.level
    sdk.setLevel(logging.WARNING)
    yield
    sdk.setLevel(level)


def test_missing_azurite_package_says_to_run_npm_ci(tmp_path):
    with pytest.raises(AzuriteError, match="npm ci"):
        Azurite(binary=tmp_path / "azurite-queue").start()


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def queue(azurite: Azurite, name: str, create: bool = True) -> QueueClient:
    client = QueueClient.from_connection_string(azurite.connection_string, name)
    if create:
        client.create_queue()
    return client


def texts(client: QueueClient) -> list[str]:
    """Message texts visible now (peek: leaves them in place)."""
    try:
        return [m.content for m in client.peek_messages(max_messages=32)]
    except Exception:  # noqa: BLE001 - a queue that does not exist holds nothing
        return []


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def queue_app(handler, queue_name: str = "%IN_QUEUE%", name: str = "work") -> func.FunctionApp:
    app = func.FunctionApp()

    @app.function_name(name)
    @app.queue_trigger(arg_name="msg", queue_name=queue_name, connection="AzureWebJobsStorage")
    def work(msg: func.QueueMessage) -> None:
        handler(msg)

    return app


# ---------------------------------------------------------------------------------------------
# queue triggers
# ---------------------------------------------------------------------------------------------
def test_queue_function_receives_the_real_queue_message(azurite):
    name = unique()
    q = queue(azurite, name)
    sent = q.send_message(b64("hello ✓"))
    seen: list[func.QueueMessage] = []
    host = LocalHost(
        queue_app(seen.append), {"AzureWebJobsStorage": azurite.connection_string, "IN_QUEUE": name}, overrides=FAST
    )

    assert host.deliver_once("work") == 1

    (msg,) = seen
    assert type(msg) is azure.functions.queue.QueueMessage
    assert msg.get_body() == "hello ✓".encode()
    assert msg.id == sent.id
    assert msg.dequeue_count == 1
    assert msg.pop_receipt
    assert msg.insertion_time.tzinfo is not None and msg.expiration_time > msg.insertion_time
    assert msg.time_next_visible > dt.datetime.now(dt.UTC)  # invisible while the function runs
    assert texts(q) == []  # deleted on success
    assert host.deliver_once("work") == 0
    assert host.stats["work"].invocations == 1 and host.stats["work"].successes == 1


def test_dequeue_count_rises_on_failure_then_poison(azurite):
    name = unique()
    q = queue(azurite, name)
    q.send_message(b64("boom"))
    counts: list[int] = []

    def fail(msg: func.QueueMessage) -> None:
        counts.append(msg.dequeue_count)
        raise RuntimeError("always fails")

    host = LocalHost(
        queue_app(fail),
        {"AzureWebJobsStorage": azurite.connection_string, "IN_QUEUE": name},
        overrides={**FAST, "maxDequeueCount": 3},
    )
    assert host.drain("work", timeout=10) == 3

    assert counts == [1, 2, 3]
    assert texts(q) == []
    assert texts(queue(azurite, f"{name}-poison", create=False)) == [b64("boom")]  # the stored text, as is
    stats = host.stats["work"]
    assert (stats.invocations, stats.successes, stats.failures, stats.poisoned) == (3, 0, 3, 1)


def test_failed_message_stays_invisible_for_visibility_timeout(azurite):
    name = unique()
    q = queue(azurite, name)
    q.send_message(b64("x"))

    def fail(msg):
        raise ValueError("no")

    host = LocalHost(
        queue_app(fail),
        {"AzureWebJobsStorage": azurite.connection_string, "IN_QUEUE": name},
        host_json={"extensions": {"queues": {"visibilityTimeout": "00:00:30"}}},
    )
    assert host.deliver_once("work") == 1
    assert host.deliver_once("work") == 0  # released, but not visible for 30 s
    assert q.get_queue_properties().approximate_message_count == 1


def test_message_encoding_none_delivers_the_text_bytes(azurite):
    name = unique()
    q = queue(azurite, name)
    q.send_message("plain ✓ {not base64}")
    seen: list[bytes] = []
    host = LocalHost(
        queue_app(lambda m: seen.append(m.get_body())),
        {"AzureWebJobsStorage": azurite.connection_string, "IN_QUEUE": name},
        host_json={"extensions": {"queues": {"messageEncoding": "none"}}},
        overrides=FAST,
    )
    assert host.drain("work") == 1
    assert seen == ["plain ✓ {not base64}".encode()]


def test_message_encoding_base64_decodes_and_poisons_what_is_not_base64(azurite):
    name = unique()
    q = queue(azurite, name)
    q.send_message(b64('{"a": 1}'))
    q.send_message("not base64!")
    seen: list[bytes] = []
    host = LocalHost(
        queue_app(lambda m: seen.append(m.get_body())),
        {"AzureWebJobsStorage": azurite.connection_string, "IN_QUEUE": name},
        overrides=FAST,
    )
    assert host.drain("work") == 2

    assert seen == [b'{"a": 1}']  # the undecodable one never reached the function
    assert texts(q) == []
    assert texts(queue(azurite, f"{name}-poison", create=False)) == ["not base64!"]
    stats = host.stats["work"]
    assert (stats.invocations, stats.poisoned) == (1, 1)


def test_setting_references_resolve_anywhere_in_binding_strings(azurite):
    name = unique()
    in_q = queue(azurite, f"{name}-in")
    in_q.send_message(b64("ping"))
    app = func.FunctionApp()

    @app.function_name("relay")
    @app.queue_trigger(arg_name="msg", queue_name="%PREFIX%-in", connection="STORE")
    @app.queue_output(arg_name="out", queue_name="%PREFIX%-%SUFFIX%", connection="STORE")
    def relay(msg: func.QueueMessage, out: func.Out[str]) -> None:
        out.set(msg.get_body().decode() + "/pong")

    settings = {"STORE": azurite.connection_string, "PREFIX": name, "SUFFIX": "out"}
    host = LocalHost(app, settings, overrides=FAST)
    assert host.queue_functions["relay"].queue_name == f"{name}-in"
    assert host.drain("relay") == 1
    out_q = queue(azurite, f"{name}-out", create=False)  # created by the output binding
    assert [base64.b64decode(t) for t in texts(out_q)] == [b"ping/pong"]

    with pytest.raises(HostConfigError, match="SUFFIX"):
        LocalHost(app, {"STORE": azurite.connection_string, "PREFIX": name})
    assert resolve_setting_refs("%A%-poison", {"A": "q"}) == "q-poison"
    assert resolve_setting_refs("no refs", {}) == "no refs"


def test_output_bindings_return_value_context_and_async_functions(azurite):
    name = unique()
    queue(azurite, name).send_message(b64("a"))
    queue(azurite, f"{name}-b").send_message(b64("b"))
    contexts: list[func.Context] = []
    app = func.FunctionApp()

    @app.function_name("returns")
    @app.queue_trigger(arg_name="msg", queue_name="%Q%", connection="AzureWebJobsStorage")
    @app.queue_output(arg_name="$return", queue_name="%Q%-ret", connection="AzureWebJobsStorage")
    async def returns(msg: func.QueueMessage, context: func.Context) -> str:
        contexts.append(context)
        return "ret:" + msg.get_body().decode()

    @app.function_name("many")
    @app.queue_trigger(arg_name="msg", queue_name="%Q%-b", connection="AzureWebJobsStorage")
    @app.queue_output(arg_name="out", queue_name="%Q%-many", connection="AzureWebJobsStorage")
    def many(msg: func.QueueMessage, out: func.Out[list[str]]) -> None:
        out.set(["1", "2"])

    host = LocalHost(app, {"AzureWebJobsStorage": azurite.connection_string, "Q": name}, overrides=FAST)
    assert host.drain("returns") == 1 and host.drain("many") == 1
    assert texts(queue(azurite, f"{name}-ret", create=False)) == [b64("ret:a")]
    assert texts(queue(azurite, f"{name}-many", create=False)) == [b64("1"), b64("2")]
    (context,) = contexts
    assert isinstance(context, func.Context) and context.function_name == "returns" and context.invocation_id


def test_connection_forms(azurite):
    app = queue_app(lambda m: None, queue_name="jobs")
    dev = LocalHost(app, {"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert dev.queue_functions["work"].queue.url.startswith("http://127.0.0.1:10001/devstoreaccount1/jobs")

    app2 = func.FunctionApp()

    @app2.queue_trigger(arg_name="msg", queue_name="jobs", connection="Store")
    def by_identity(msg: func.QueueMessage) -> None:
        pass

    ident = LocalHost(app2, {"Store__queueServiceUri": "https://acct.queue.core.windows.net/"})
    assert ident.queue_functions["by_identity"].queue.url == "https://acct.queue.core.windows.net/jobs"

    with pytest.raises(HostConfigError, match="'Store' is not configured"):
        LocalHost(app2, {})


def test_background_host_polls_batches_and_stops_cleanly(azurite):
    name = unique()
    q = queue(azurite, name)
    for i in range(6):
        q.send_message(b64(f"m{i}"))
    seen: list[str] = []
    lock = threading.Lock()
    active = [0, 0]  # now, max

    def work(msg: func.QueueMessage) -> None:
        with lock:
            active[0] += 1
            active[1] = max(active)
        time.sleep(0.1)
        with lock:
            active[0] -= 1
            seen.append(msg.get_body().decode())

    host = LocalHost(
        queue_app(work),
        {"AzureWebJobsStorage": azurite.connection_string, "IN_QUEUE": name},
        overrides={**FAST, "batchSize": 3, "newBatchThreshold": 1},
    )
    with host:
        deadline = time.monotonic() + 10
        while len(seen) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        q.send_message(b64("late"))  # arrives while the listener backs off (max 200 ms)
        while len(seen) < 7 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sorted(seen) == sorted([f"m{i}" for i in range(6)] + ["late"])
    assert 1 < active[1] <= 3  # a batch runs in parallel, never more than batchSize
    assert texts(q) == []
    assert host.stats["work"].successes == 7
    assert all(not t.is_alive() for t in threading.enumerate() if t.name.startswith("queue-work"))


def test_function_timeout_fails_the_invocation(azurite):
    name = unique()
    q = queue(azurite, name)
    q.send_message(b64("slow"))
    host = LocalHost(
        queue_app(lambda m: time.sleep(0.6)),
        {"AzureWebJobsStorage": azurite.connection_string, "IN_QUEUE": name},
        host_json={"functionTimeout": "00:00:00.2"},
        overrides={**FAST, "maxDequeueCount": 1},
    )
    assert host.deliver_once("work") == 1
    assert host.stats["work"].failures == 1
    assert texts(queue(azurite, f"{name}-poison", create=False)) == [b64("slow")]


def test_visibility_is_renewed_while_a_long_function_runs(azurite):
    name = unique()
    q = queue(azurite, name)
    q.send_message(b64("long"))
    visible_mid_run: list[list[str]] = []

    def long_running(msg: func.QueueMessage) -> None:
        time.sleep(2.3)  # past the 2 s processing visibility: only a renewal keeps it hidden
        visible_mid_run.append(texts(q))

    host = LocalHost(
        queue_app(long_running),
        {"AzureWebJobsStorage": azurite.connection_string, "IN_QUEUE": name},
        overrides={**FAST, "processingVisibilityTimeout": "00:00:02"},
    )
    assert host.deliver_once("work") == 1
    assert visible_mid_run == [[]]
    assert texts(q) == []  # deleted with the renewed pop receipt
    assert host.stats["work"].successes == 1


# ---------------------------------------------------------------------------------------------
# timer triggers
# ---------------------------------------------------------------------------------------------
def test_timer_fires_on_schedule_and_never_overlaps():
    app = func.FunctionApp()
    fast_runs: list[tuple[float, func.TimerRequest]] = []
    slow_runs: list[bool] = []
    lock = threading.Lock()
    active = [0, 0]
    second_slow_run = threading.Event()

    @app.timer_trigger(schedule="*/1 * * * * *", arg_name="tick", run_on_startup=False)
    def fast(tick: func.TimerRequest) -> None:
        fast_runs.append((time.monotonic(), tick))

    @app.timer_trigger(schedule="%SLOW_SCHEDULE%", arg_name="tick", run_on_startup=True)
    def slow(tick: func.TimerRequest) -> None:
        with lock:
            active[0] += 1
            active[1] = max(active)
            slow_runs.append(tick.past_due)
        time.sleep(1.1)  # longer than the 1 s schedule: the next tick finds it running
        with lock:
            active[0] -= 1
        if len(slow_runs) >= 2:
            second_slow_run.set()

    with LocalHost(app, {"SLOW_SCHEDULE": "* * * * * *"}) as host:
        assert second_slow_run.wait(6)
        deadline = time.monotonic() + 3
        while len(fast_runs) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)

    assert len(fast_runs) >= 2
    assert all(type(t) is azure.functions.timer.TimerRequest for _, t in fast_runs)
    gaps = [b[0] - a[0] for a, b in zip(fast_runs, fast_runs[1:], strict=False)]
    assert all(0.8 < g < 1.5 for g in gaps), gaps
    assert active[1] == 1  # never two runs of one timer at once
    stats = host.stats["slow"]
    assert stats.skipped >= 1
    assert slow_runs[:2] == [False, True]  # runOnStartup, then past due after the skipped tick
    assert stats.invocations == len(slow_runs) and stats.failures == 0


def test_fire_respects_no_overlap_and_counts_skips():
    app = func.FunctionApp()
    gate, started = threading.Event(), threading.Event()
    past_due: list[bool] = []

    @app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer")
    def yearly(timer: func.TimerRequest) -> None:
        past_due.append(timer.past_due)
        started.set()
        if len(past_due) == 1:
            gate.wait(5)
        raise RuntimeError("failures are counted too")

    host = LocalHost(app, {})
    first = threading.Thread(target=host.fire, args=("yearly",))
    first.start()
    assert started.wait(5)
    assert host.fire("yearly") is False
    assert host.fire("yearly") is False
    gate.set()
    first.join(5)
    assert host.fire("yearly") is True
    assert past_due == [False, True]
    stats = host.stats["yearly"]
    assert (stats.invocations, stats.failures, stats.skipped) == (2, 2, 2)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def test_command_line_runs_the_sample_app_until_sigterm(azurite, tmp_path):
    in_name, file_out, env_out = unique("in"), unique("fileout"), unique("envout")
    in_q = queue(azurite, in_name)
    settings = tmp_path / "local.settings.json"
    settings.write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {
                    "AzureWebJobsStorage": azurite.connection_string,
                    "SAMPLE_QUEUE": in_name,
                    "SAMPLE_OUT_QUEUE": file_out,
                },
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAMPLE_", "AzureWebJobs"))}
    env["SAMPLE_OUT_QUEUE"] = env_out  # the real environment wins over local.settings.json
    proc = subprocess.Popen(
        [sys.executable, "-m", "localdev.functions_host", "--app-dir", str(SAMPLE_APP), "--settings", str(settings)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        in_q.send_message("hi")  # the sample's host.json says messageEncoding none
        out_q = queue(azurite, env_out, create=False)
        deadline = time.monotonic() + 15
        while not texts(out_q) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert texts(out_q) == ["hi|1|azure.functions.queue.QueueMessage"]
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "Found timer function 'yearly'" in output
    assert "Host stopped" in output
    assert texts(queue(azurite, file_out, create=False)) == []
