"""A function app with the bindings of ``function_app.py`` whose functions only read their
trigger: run by the local host, it measures what the host emulation itself costs (receiving,
leasing, handing over and deleting queue messages, firing the timer), which the real Functions
host does outside the Python worker."""

import azure.functions as func

app = func.FunctionApp()


@app.function_name("submit_checkpoint_deletion")
@app.queue_trigger(arg_name="msg", queue_name="%CHECKPOINT_REQUESTS_QUEUE%", connection="AzureWebJobsStorage")
def submit_checkpoint_deletion(msg: func.QueueMessage) -> None:
    msg.get_body()


@app.function_name("poll_checkpoint_operations")
@app.timer_trigger(arg_name="timer", schedule="%POLL_SCHEDULE%", run_on_startup=False, use_monitor=False)
def poll_checkpoint_operations(timer: func.TimerRequest) -> None:
    timer.past_due  # noqa: B018 - reads its trigger, nothing more


@app.function_name("report_poisoned_requests")
@app.queue_trigger(arg_name="msg", queue_name="%CHECKPOINT_REQUESTS_QUEUE%-poison", connection="AzureWebJobsStorage")
def report_poisoned_requests(msg: func.QueueMessage) -> None:
    msg.get_body()
