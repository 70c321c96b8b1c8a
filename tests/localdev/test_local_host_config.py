"""localdev.functions_host reading its configuration, without a host running: NCRONTAB and interval
schedules, host.json durations, the functions' metadata from host.json and the app, and
local.settings.json."""

from __future__ import annotations

import datetime as dt
import json

import azure.functions as func
import pytest

from localdev.functions_host import (
    CronSchedule,
    HostConfigError,
    IntervalSchedule,
    LocalHost,
    load_local_settings,
    parse_duration,
    parse_schedule,
)


def test_ncrontab_schedules():
    start = dt.datetime(2024, 1, 1, 0, 0, 0)  # a Monday

    def nexts(expr: str, count: int = 4, after: dt.datetime = start) -> list[dt.datetime]:
        schedule, out = CronSchedule(expr), []
        for _ in range(count):
            after = schedule.next_after(after)
            out.append(after)
        return out

    assert [t.second for t in nexts("*/15 * * * * *")] == [15, 30, 45, 0]
    assert [t.second for t in nexts("5,10-12 * * * * *", 5)] == [5, 10, 11, 12, 5]
    assert [(t.hour, t.minute) for t in nexts("0 30 9-17/4 * * *", 3)] == [(9, 30), (13, 30), (17, 30)]
    assert [t.day for t in nexts("0 0 12 * * MON-WED", 4)] == [1, 2, 3, 8]
    assert [t.weekday() for t in nexts("0 0 0 * * 0", 2)] == [6, 6]  # 0 is Sunday
    assert nexts("0 0 0 29 FEB *", 1) == [dt.datetime(2024, 2, 29)]
    assert nexts("0 0 0 13 * 5", 1) == [dt.datetime(2024, 9, 13)]  # a Friday the 13th: both must match
    assert nexts("10/20 * * * * *", 3) == [start.replace(second=s) for s in (10, 30, 50)]
    assert nexts("*/5 * * * *", 2) == [start.replace(minute=5), start.replace(minute=10)]  # 5 fields: second 0
    aware = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert CronSchedule("* * * * * *").next_after(aware.replace(microsecond=500)) == aware + dt.timedelta(seconds=1)
    for bad in ("* * * * *  * *", "60 * * * * *", "* * * * * 7", "*/0 * * * * *", "5-1 * * * * *", "0 0 0 30 2 *"):
        with pytest.raises(HostConfigError):
            nexts(bad, 1)
    interval = parse_schedule("00:05:00")
    assert isinstance(interval, IntervalSchedule)
    assert interval.next_after(start) == start + dt.timedelta(minutes=5)


def test_durations_read_like_the_host():
    assert parse_duration("00:01:00") == 60
    assert parse_duration("00:00:00.250") == 0.25
    assert parse_duration("1.02:00:00") == 93600
    assert parse_duration(2000) == 2  # JSON numbers are milliseconds
    assert parse_duration("2") == 2 * 86400  # as .NET TimeSpan.Parse: days
    assert parse_duration(dt.timedelta(seconds=3)) == 3
    with pytest.raises(HostConfigError):
        parse_duration("00:61:00")


# ---------------------------------------------------------------------------------------------
# metadata: host.json, bindings
# ---------------------------------------------------------------------------------------------
def test_metadata_from_host_json_and_app(tmp_path):
    host_json = tmp_path / "host.json"
    host_json.write_text(
        """{
          // comments are tolerated, as by the host
          "version": "2.0",
          "functionTimeout": "00:10:00",
          "extensions": {"Queues": {"BatchSize": 4, "maxPollingInterval": "00:00:02",
                                    "visibilityTimeout": "00:00:30", "maxDequeueCount": 2,
                                    "messageEncoding": "none"}}
        }"""
    )
    app = func.FunctionApp()

    @app.function_name("q")
    @app.queue_trigger(arg_name="item", queue_name="%Q%", connection="")
    def q(item: func.QueueMessage) -> None:
        pass

    @app.function_name("t")
    @app.timer_trigger(schedule="%SCHED%", arg_name="timer", run_on_startup=True)
    def t(timer: func.TimerRequest) -> None:
        pass

    settings = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "Q": "orders", "SCHED": "*/15 * * * * *"}
    assert len(app.get_functions()) == 2  # indexed once already, as the worker and tests may do
    host = LocalHost(app, settings, host_json)
    queues = host.options.queues
    assert (queues.batch_size, queues.new_batch_threshold, queues.max_polling_interval) == (4, 2, 2.0)
    assert (queues.visibility_timeout, queues.max_dequeue_count, queues.message_encoding) == (30.0, 2, "none")
    assert host.options.function_timeout == 600
    assert host.queue_functions["q"].queue_name == "orders"
    assert host.queue_functions["q"].trigger.name == "item"
    assert host.timer_functions["t"].schedule_text == "*/15 * * * * *"
    assert host.timer_functions["t"].run_on_startup is True

    defaults = LocalHost(app, settings).options
    assert (defaults.queues.batch_size, defaults.queues.new_batch_threshold) == (16, 8)
    assert (defaults.queues.max_polling_interval, defaults.queues.visibility_timeout) == (60.0, 0.0)
    assert (defaults.queues.max_dequeue_count, defaults.queues.message_encoding) == (5, "base64")
    assert defaults.function_timeout is None

    overridden = LocalHost(app, settings, host_json, overrides={"maxPollingInterval": 100, "batchSize": 8}).options
    assert (overridden.queues.max_polling_interval, overridden.queues.batch_size) == (0.1, 8)
    assert overridden.queues.new_batch_threshold == 4  # derived from the final batchSize
    with pytest.raises(HostConfigError, match="messageEncoding"):
        LocalHost(app, settings, {"extensions": {"queues": {"messageEncoding": "utf8"}}})
    with pytest.raises(HostConfigError, match="unknown override"):
        LocalHost(app, settings, overrides={"batchsizee": 1})


def test_local_settings_values_do_not_replace_the_environment(tmp_path):
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {"A": "file", "B": "file"}}))
    env = {"A": "env"}
    assert load_local_settings(path, env) == 1
    assert env == {"A": "env", "B": "file"}
