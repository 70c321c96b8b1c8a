"""A tiny v2 sample app used only by tests/localdev/test_local_host.py to run localdev.functions_host end to end."""

import azure.functions as func

app = func.FunctionApp()


@app.function_name("echo")
@app.queue_trigger(arg_name="msg", queue_name="%SAMPLE_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="%SAMPLE_OUT_QUEUE%", connection="AzureWebJobsStorage")
def echo(msg: func.QueueMessage, out: func.Out[str]) -> None:
    body = msg.get_body().decode("utf-8")
    if body == "fail":
        raise RuntimeError("asked to fail")
    out.set(f"{body}|{msg.dequeue_count}|{type(msg).__module__}.{type(msg).__name__}")


@app.function_name("yearly")
@app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer", run_on_startup=False)
def yearly(timer: func.TimerRequest) -> None:
    pass
