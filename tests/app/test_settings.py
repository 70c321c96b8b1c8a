"""Settings (contract section 2): defaults and clear errors."""

import pytest

from shared.settings import Settings, SettingsError

STORAGE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}


def test_defaults_follow_the_contract():
    s = Settings.from_env(STORAGE)
    assert (s.requests_queue, s.tracking_queue, s.events_queue) == (
        "checkpoint-delete-requests",
        "checkpoint-delete-tracking",
        "checkpoint-delete-events",
    )
    assert s.poison_queue == "checkpoint-delete-requests-poison"
    assert (s.arm_endpoint, s.arm_api_version, s.poll_schedule) == (
        "https://management.azure.com",
        "2024-06-01",
        "*/15 * * * * *",
    )
    assert (s.operation_timeout_seconds, s.client_id, s.eventgrid_topic_endpoint) == (86400, None, None)


def test_identity_based_storage_connection():
    s = Settings.from_env(
        {
            "AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net/",
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__clientId": "cid",
        }
    )
    assert (s.storage.queue_service_uri, s.storage.client_id, s.storage.connection_string) == (
        "https://acct.queue.core.windows.net",
        "cid",
        None,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "AzureWebJobsStorage"),
        ({**STORAGE, "ARM_ENDPOINT": "http://management.azure.com"}, "ARM_ENDPOINT"),
        ({**STORAGE, "ARM_ENDPOINT": "https://host/path"}, "ARM_ENDPOINT"),
        ({**STORAGE, "ARM_API_VERSION": "latest"}, "ARM_API_VERSION"),
        ({**STORAGE, "OPERATION_TIMEOUT_SECONDS": "1d"}, "OPERATION_TIMEOUT_SECONDS"),
        ({**STORAGE, "OPERATION_TIMEOUT_SECONDS": "0"}, "OPERATION_TIMEOUT_SECONDS"),
        ({**STORAGE, "POLL_SCHEDULE": "*/15 * * * *"}, "POLL_SCHEDULE"),
        ({**STORAGE, "CHECKPOINT_EVENTS_QUEUE": "Bad_Name"}, "CHECKPOINT_EVENTS_QUEUE"),
        ({**STORAGE, "CHECKPOINT_TRACKING_QUEUE": "checkpoint-delete-requests"}, "CHECKPOINT_REQUESTS_QUEUE"),
        ({**STORAGE, "CHECKPOINT_REQUESTS_QUEUE": "q" * 60}, "CHECKPOINT_REQUESTS_QUEUE"),
        ({**STORAGE, "EVENTGRID_TOPIC_ENDPOINT": "http://topic"}, "EVENTGRID_TOPIC_ENDPOINT"),
    ],
)
def test_bad_settings_are_named(env, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_sdk_http_logging_setting():
    assert Settings.from_env(STORAGE).sdk_http_logging is False
    assert Settings.from_env({**STORAGE, "AZURE_SDK_HTTP_LOGGING": "TRUE"}).sdk_http_logging is True
    with pytest.raises(SettingsError, match="AZURE_SDK_HTTP_LOGGING"):
        Settings.from_env({**STORAGE, "AZURE_SDK_HTTP_LOGGING": "yes"})


@pytest.mark.parametrize(("setting", "logged"), [(None, False), ("true", True)])
def test_the_sdks_request_lines_are_logged_only_when_asked_for(make_app, caplog, setting, logged):
    import logging

    # the Functions worker's root logger is at INFO: whatever passes here is shipped and paid for
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="azure")  # as in the worker (the test suite quiets it otherwise)
    app = make_app(**({"AZURE_SDK_HTTP_LOGGING": setting} if setting else {}))
    app.services.submitter.handle("not json", "m-1", 1)  # writes one event to the events queue
    sdk_lines = [r for r in caplog.records if r.name == "azure.core.pipeline.policies.http_logging_policy"]
    assert bool(sdk_lines) == logged
