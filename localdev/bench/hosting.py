"""The hosted contenders from the parent's side: their queues fed (:mod:`.feed`), one child
process per instance of the local host (:mod:`.hosted`), the events watched until every request
has its outcome.

With ``--app-processes K`` the ``app`` contender runs K instances on the same queues, competing
for the same requests, as the Functions host scales out: each its own process, identity token,
ARM client and pacer, sharing ARM's buckets (one principal) and the queues. On Azure the timer
trigger is a singleton across instances (its lease is a blob lock), so only the first instance
runs the poll timer; instances 2..K have it disabled by the app setting
``AzureWebJobs.poll_checkpoint_operations.Disabled`` and run the submit and poison functions
only. Their CPU and RSS are summed as one contender's (:func:`.children.combine`).
"""

from __future__ import annotations

import time
from pathlib import Path

from localdev.bench import profile
from localdev.bench.children import READY_TIMEOUT, Child, Window, child_env, combine, killed_report, proc_cpu, self_cpu
from localdev.bench.feed import HostedQueues
from localdev.bench.plan import Item

POLL_FUNCTION = "poll_checkpoint_operations"


def label(name: str, processes: int) -> str:
    """How a contender is shown: ``app×3`` for three app processes."""
    return f"{name}×{processes}" if processes > 1 else name


def app_settings(stand, queues: dict[str, str], poll_timer: bool = True) -> dict[str, str]:
    """The app settings, as demo.py sets them, with the poller's timer every second (or disabled)."""
    settings = {
        "AzureWebJobsStorage": stand.azurite.connection_string,
        **queues,
        # a table of VM turns of its own (letters and digits): the run's VMs are new to it
        "CHECKPOINT_TURNS_TABLE": "turns" + "".join(c for c in queues["CHECKPOINT_REQUESTS_QUEUE"] if c.isalnum()),
        "ARM_ENDPOINT": stand.arm.endpoint,
        "POLL_SCHEDULE": "* * * * * *",
        "REQUESTS_CA_BUNDLE": stand.arm.ca_bundle_path,
    }
    if not poll_timer:
        settings[f"AzureWebJobs.{POLL_FUNCTION}.Disabled"] = "true"
    return settings


def run(name: str, stand, deletions: list[Item], run_dir: Path, config: dict, options: dict) -> Window:
    """One hosted contender's window: `processes` children on one set of queues, from "go" to the
    last terminal event (the no-op app: until its child has been handed every request)."""
    processes = options.get("app_processes", 1) if name == "app" else 1
    queues = HostedQueues(stand.azurite.connection_string, name, deletions)
    children: list[Child] = []
    try:
        for i in range(processes):
            instance = name if processes == 1 else f"{name}-{i + 1}"
            settings = app_settings(stand, queues.names, poll_timer=i == 0)
            own = {**config, "log_file": str(run_dir / f"{instance}.log")}
            children.append(Child(own, child_env(stand.identity.env(), settings), run_dir, label=instance))
        for child in children:
            if child.expect("ready", READY_TIMEOUT) is None:
                raise RuntimeError(f"bench child {name} did not get ready within {READY_TIMEOUT:.0f} s")
        queues.start_feeding(lambda: sum(child.handled for child in children))
        cpu0, azurite0 = self_cpu(), proc_cpu(stand.azurite.pid)
        started = time.time()
        for child in children:
            child.send("go")
        spy_path = run_dir / f"{name}.pyspy.txt"  # the first instance (the one with the poll timer)
        spy = profile.start(children[0].proc.pid, spy_path) if name in options.get("profile", ()) else None
        deadline = time.monotonic() + options["timeout"]
        if name == "app":
            outcomes, ended, timed_out = queues.watch(deadline)
        else:
            idle = children[0].expect("idle", deadline - time.monotonic())
            timed_out = idle is None
            ended = idle["ended"] if idle else time.time()
            outcomes = {"succeeded": idle["handled"] if idle else 0, "failed": 0}
        for child in children:
            child.send("stop")
        reports = []
        for child in children:
            report = child.expect("done", (deadline - time.monotonic()) + 60)
            if report is None:
                timed_out = True
                child.kill()
                report = killed_report()
            reports.append(report)
        parent_cpu = self_cpu() - cpu0
        azurite1 = proc_cpu(stand.azurite.pid)
    except BaseException:
        for child in children:
            child.kill()
            child.wait()
        raise
    finally:
        queues.close()
    report, rusage = combine(reports, [child.wait() for child in children])
    return Window(
        started=started,
        ended=ended,
        child=report,
        rusage=rusage,
        parent_cpu_s=parent_cpu,
        azurite_cpu_s=None if azurite0 is None or azurite1 is None else azurite1 - azurite0,
        outcomes=outcomes,
        timed_out=timed_out,
        profile=profile.finish(spy, spy_path),
        processes=processes,
    )
