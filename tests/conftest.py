"""Shared fixtures: the real local stand-ins (Azurite, the ARM emulator over HTTPS, the identity
endpoint) and a harness that runs the app's functions on them as the Functions host does. Helpers
the test files share are in tests/support/."""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid

import pytest
import trustme

from tests.support.app_harness import AppHarness
from tests.support.loopback import loopback_only
from tests.support.paths import ROOT, SPEC_DIR

logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK's HTTP logging drowns the app's

sys.addaudithook(loopback_only)

# As local.settings.sample.json does, the environment names the settings the triggers' bindings
# refer to (`%CHECKPOINT_REQUESTS_QUEUE%`), so that each test's harness resolves them to its own
# queues; without them the app binds the defaults (tests/app/test_function_app.py).
os.environ.setdefault("CHECKPOINT_REQUESTS_QUEUE", "checkpoint-delete-requests")
os.environ.setdefault("POLL_SCHEDULE", "*/15 * * * * *")


@pytest.fixture(scope="session")
def azurite():
    from localdev.azurite import Azurite

    with Azurite() as running:
        yield running


@pytest.fixture(scope="session")
def ca():
    return trustme.CA()


@pytest.fixture(scope="session")
def identity():
    from localdev.identity_endpoint import IdentityEndpoint

    with IdentityEndpoint() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def arm(ca, identity):
    from localdev.arm_emulator import ArmEmulator

    with ArmEmulator(ca, identity) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def topic(ca, identity):
    from localdev.eventgrid_endpoint import EventGridEndpoint

    with EventGridEndpoint(ca, identity) as endpoint:
        yield endpoint


DRIFT_TEST = "test_record_matches_microsofts_document"
NO_SPEC = (
    f"Microsoft's OpenAPI document is not beside the checkout ({SPEC_DIR} is absent): {DRIFT_TEST} "
    "(localdev/arm_operation.json against it) was deselected; every other test runs on the record"
)


def pytest_collection_modifyitems(config, items):
    """The drift test compares our record with Microsoft's document when that folder is there; a
    plain clone has no such folder, and the test is left out (said in the summary), not skipped."""
    if SPEC_DIR.is_dir():
        return
    drift = [item for item in items if item.name == DRIFT_TEST]
    if drift:
        config.hook.pytest_deselected(items=drift)
        items[:] = [item for item in items if item.name != DRIFT_TEST]


def pytest_terminal_summary(terminalreporter):
    if not SPEC_DIR.is_dir():
        terminalreporter.write_line(NO_SPEC)


@pytest.fixture
def spec_dir():
    if not SPEC_DIR.is_dir():
        pytest.fail(NO_SPEC)  # only reached when the drift test is run by name without the folder
    return SPEC_DIR


@pytest.fixture
def make_app(monkeypatch, azurite, identity, arm):
    """Builds the app with unique queues, its settings in the environment and fast retries.

    Keyword arguments override settings (by their names) and, for `host`, host.json values;
    `pacer`, `budgets`, `arm_timeout` and `publish_tries` (Event Grid, a second apart) go to the
    app's services.
    """
    import function_app
    from localdev.functions_host import LocalHost
    from shared.retry import RetryPolicy
    from shared.runtime import build_services, install_services, queue_host_settings
    from shared.settings import Settings

    hosts = []

    def build(
        host: dict | None = None,
        pacer=None,
        budgets=None,
        arm_timeout=(2.0, 1.5),
        publish_tries: int = 3,
        **settings_overrides,
    ) -> AppHarness:
        prefix = "t" + uuid.uuid4().hex[:12]
        env = {
            "AzureWebJobsStorage": azurite.connection_string,
            "CHECKPOINT_REQUESTS_QUEUE": f"{prefix}-requests",
            "CHECKPOINT_TRACKING_QUEUE": f"{prefix}-tracking",
            "CHECKPOINT_EVENTS_QUEUE": f"{prefix}-events",
            "CHECKPOINT_TURNS_TABLE": f"{prefix}turns",
            "ARM_ENDPOINT": arm.endpoint,
            "POLL_SCHEDULE": "*/1 * * * * *",
            "REQUESTS_CA_BUNDLE": arm.ca_bundle_path,
            **identity.env(),
            **settings_overrides,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        arm.reset()
        identity.reset_counts()

        settings = Settings.from_env()
        services = build_services(
            settings,
            max_deliveries=int(queue_host_settings()["maxDequeueCount"]),
            submit_retry=RetryPolicy(attempts=3, base_delay=0.05, max_delay=2.0),
            poll_retry=RetryPolicy(attempts=4, base_delay=0.05, max_delay=2.0),
            publish_retry=RetryPolicy(attempts=publish_tries, base_delay=1.0, max_delay=1.0),
            arm_timeout=arm_timeout,
            arm_pacer=pacer,
            **({"budgets": budgets} if budgets else {}),
        )
        install_services(services)
        local_host = LocalHost(
            function_app.app,
            settings=dict(os.environ),
            host_json=ROOT / "host.json",
            overrides={"visibilityTimeout": 0, "maxPollingInterval": 100, **(host or {})},
        )
        hosts.append(local_host)
        return AppHarness(local_host, settings, services, azurite.connection_string)

    yield build
    for local_host in hosts:
        local_host.stop()
    install_services(None)


@pytest.fixture
def app(make_app) -> AppHarness:
    return make_app()


@pytest.fixture
def no_proxies(monkeypatch):
    """Requests go straight to the loopback stand-ins, whatever proxies the environment names."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def blackhole():
    """An address on the loopback that takes connections and never answers: a service that hangs."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    try:
        yield listener.getsockname()
    finally:
        listener.close()
