"""Azure Functions entry points: triggers wired to the steps in `shared`, nothing more."""

import logging

import azure.functions as func

from shared.runtime import get_services
from shared.settings import Settings, SettingsError, binding_setting

app = func.FunctionApp()

try:  # settings are checked at start, so that a bad one shows in the log before any message
    Settings.from_env()
except SettingsError as exc:
    logging.getLogger(__name__).error("invalid settings: %s", exc)

REQUESTS_QUEUE = binding_setting("CHECKPOINT_REQUESTS_QUEUE")
POLL_SCHEDULE = binding_setting("POLL_SCHEDULE")


@app.function_name("submit_checkpoint_deletion")
@app.queue_trigger(arg_name="msg", queue_name=REQUESTS_QUEUE, connection="AzureWebJobsStorage")
def submit_checkpoint_deletion(msg: func.QueueMessage) -> None:
    get_services().submitter.handle(msg.get_body(), msg.id, msg.dequeue_count or 1)


@app.function_name("poll_checkpoint_operations")
# use_monitor off: a missed tick needs no catching up, the next run takes every due operation
@app.timer_trigger(arg_name="timer", schedule=POLL_SCHEDULE, run_on_startup=False, use_monitor=False)
def poll_checkpoint_operations(timer: func.TimerRequest, context: func.Context) -> None:
    get_services().poll(thread_init=_log_lines_belong_to(context))


def _log_lines_belong_to(context: func.Context):
    """Log lines from the poller's own threads reach Application Insights only with the invocation id."""

    def init() -> None:
        context.thread_local_storage.invocation_id = context.invocation_id

    return init


@app.function_name("report_poisoned_requests")
@app.queue_trigger(arg_name="msg", queue_name=f"{REQUESTS_QUEUE}-poison", connection="AzureWebJobsStorage")
def report_poisoned_requests(msg: func.QueueMessage) -> None:
    get_services().poison.handle(msg.get_body(), msg.id)
