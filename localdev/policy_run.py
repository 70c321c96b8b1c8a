"""A retention policy over many VMs, through the local host, measured.

Starts Azurite, the identity endpoint and the ARM emulator (SCVMM's one job per VM: a second
operation on a busy VM answers 409), defines VMS VM instances with CHECKPOINTS checkpoints each,
puts one `keepLatest` policy request per VM on the requests queue, runs the function app in the
local host until every policy has its closing event, and checks and prints what happened:

    python -m localdev.policy_run [--vms 200] [--checkpoints 10] [--keep-latest 3] [--dry-run-too]

Printed: the wall time from the first request to the last closing event, the ARM calls by kind
and per deleted checkpoint, the 409s and overlaps (two operations on one VM at once: 0 expected),
and whether every VM kept exactly its newest checkpoints. Exit 0 when all of that holds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import trustme
from azure.core.exceptions import ResourceNotFoundError

from localdev.arm_emulator import ArmEmulator, Scenario
from localdev.azurite import Azurite
from localdev.functions_host import LocalHost
from localdev.identity_endpoint import IdentityEndpoint

ROOT = Path(__file__).resolve().parent.parent
LOG_FILE = ROOT / ".localrun" / "policy-run.log"
COMPLETED, FAILED = "ScVmm.CheckpointPolicy.Completed", "ScVmm.CheckpointPolicy.Failed"


def vm_uri(subscription: uuid.UUID, index: int) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/policy-rg/providers/Microsoft.HybridCompute/machines/vm-{index:04d}"


def run(vms: int, checkpoints: int, keep_latest: int, timeout: float, retry_after: int, dry_run_too: bool) -> int:
    LOG_FILE.parent.mkdir(exist_ok=True)
    logging.basicConfig(
        filename=LOG_FILE, filemode="w", level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("azure").setLevel(logging.WARNING)
    subscription = uuid.uuid4()
    uris = [vm_uri(subscription, i) for i in range(vms)]
    chain = [f"cp-{i:03d}" for i in range(checkpoints)]
    print(f"Starting Azurite, the identity endpoint and the ARM emulator (log: {LOG_FILE.relative_to(ROOT)})")
    with ExitStack() as running:
        azurite = running.enter_context(Azurite())
        identity = running.enter_context(IdentityEndpoint())
        arm = running.enter_context(ArmEmulator(trustme.CA(), identity))
        arm.one_job_per_vm = True  # as SCVMM: a second operation on a busy VM answers 409
        arm.default = Scenario(retry_after=retry_after, done_after_polls=1)
        for uri in uris:
            arm.set_checkpoints(uri, [{"checkpointID": c, "name": f"nightly-{c}"} for c in chain])
        os.environ.update(
            {
                "AzureWebJobsStorage": azurite.connection_string,
                "CHECKPOINT_REQUESTS_QUEUE": "checkpoint-delete-requests",  # the bindings name them
                "ARM_ENDPOINT": arm.endpoint,
                "POLL_SCHEDULE": "* * * * * *",
                "REQUESTS_CA_BUNDLE": arm.ca_bundle_path,
                **identity.env(),
            }
        )
        import function_app  # after the settings are in place, as the worker imports it
        from shared.queues import open_queue
        from shared.runtime import install_services
        from shared.settings import Settings

        settings = Settings.from_env()
        requests_queue = open_queue(settings.storage, settings.requests_queue)
        events_queue = open_queue(settings.storage, settings.events_queue)
        host = LocalHost(function_app.app, os.environ, ROOT / "host.json")
        host.start()
        ids = [f"nightly-{i:04d}" for i in range(vms)]
        try:
            started = time.monotonic()
            for request_id, uri in zip(ids, uris, strict=True):
                policy = {"resourceUri": uri, "policy": {"keepLatest": keep_latest}, "requestId": request_id}
                requests_queue.send_message(json.dumps(policy))
            if dry_run_too:
                dry = {"resourceUri": uris[0], "policy": {"keepLatest": 1}, "dryRun": True, "requestId": "dry-run"}
                requests_queue.send_message(json.dumps(dry))
            print(
                f"Enqueued {vms} policy requests (keepLatest {keep_latest}) over {vms} VMs of {checkpoints} checkpoints"
            )
            closing, types = follow(events_queue, set(ids) | ({"dry-run"} if dry_run_too else set()), started + timeout)
            elapsed = time.monotonic() - started
        finally:
            host.stop()
            install_services(None)
        received = Counter(r.kind for r in arm.received)
        statuses = Counter(r.status for r in arm.received if r.kind == "submit")
        left = {uri: arm.checkpoints(uri) for uri in uris}
        overlaps, tokens = arm.overlaps, identity.tokens_issued
        own = os.times()
        print(
            f"CPU: this process (the app in the local host, and the ARM emulator and identity endpoint) "
            f"{own.user + own.system:.1f} s; Azurite {cpu_seconds(azurite.pid):.1f} s"
        )
    return report(
        closing,
        types,
        received,
        statuses,
        left,
        chain[-keep_latest:] if keep_latest else [],
        elapsed,
        overlaps,
        tokens,
        vms,
    )


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc), 0 where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def follow(events_queue, waiting: set[str], deadline: float) -> tuple[dict, Counter]:
    """Read events until every policy in `waiting` has its closing event, or the deadline passes,
    then the rest of the queue (a closing event can overtake others: the queue is not FIFO)."""
    closing: dict[str, dict] = {}
    types: Counter = Counter()
    seen: set[str] = set()
    last = 0.0
    while len(closing) < len(waiting) and time.monotonic() < deadline:
        read = _read_events(events_queue, seen, types, closing)
        if time.monotonic() - last > 5:
            print(
                f"  {len(closing)}/{len(waiting)} policies closed, {types['ScVmm.CheckpointDelete.Succeeded']} deletions done",
                flush=True,
            )
            last = time.monotonic()
        if not read:
            time.sleep(0.2)
    # until the queue is empty: a batch whose answer was lost (a read timing out on a busy Azurite)
    # stays hidden for its visibility timeout, then comes again
    while time.monotonic() < deadline and events_queue.get_queue_properties().approximate_message_count:
        if not _read_events(events_queue, seen, types, closing):
            time.sleep(0.2)
    return closing, types


def _read_events(events_queue, seen: set[str], types: Counter, closing: dict[str, dict]) -> int:
    """One batch of events read, counted (a repeat, with the same id, once) and removed; how many."""
    batch = list(events_queue.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=10))
    for message in batch:
        event = json.loads(message.content)
        if event["id"] not in seen:  # delivery is at least once: a repeat has the same id
            seen.add(event["id"])
            types[event["type"]] += 1
        if event["type"] in (COMPLETED, FAILED):
            closing[event["data"]["requestId"]] = event
        with contextlib.suppress(ResourceNotFoundError):
            events_queue.delete_message(message)
    return len(batch)


def report(closing, types, received, statuses, left, newest, elapsed, overlaps, tokens, vms) -> int:
    deleted = sum(
        len(e["data"]["deleted"]) for e in closing.values() if e["type"] == COMPLETED and not e["data"]["dryRun"]
    )
    failed = [rid for rid, e in closing.items() if e["type"] == FAILED or e["data"]["failed"] or e["data"]["skipped"]]
    wrong = [uri for uri, ids in left.items() if ids != newest]
    calls = sum(received[k] for k in ("submit", "status", "instance"))
    print(
        f"\n{len(closing)} policies closed in {elapsed:.1f} s; {deleted} checkpoints deleted ({deleted / elapsed:.1f}/s)"
    )
    print(f"events: {dict(sorted(types.items()))}")
    print(
        f"ARM calls: {calls} = {received['submit']} POSTs + {received['status']} status GETs + "
        f"{received['instance']} instance GETs; {calls / max(deleted, 1):.2f} per deleted checkpoint "
        f"({received['submit'] / max(deleted, 1):.2f} POSTs, {received['status'] / max(deleted, 1):.2f} status GETs, "
        f"{received['instance'] / max(deleted, 1):.3f} instance GETs); {tokens} token request(s)"
    )
    print(f"POST answers: {dict(statuses)}; overlapping operations on one VM: {overlaps}")
    ok = len(closing) >= vms and not failed and not wrong and overlaps == 0 and 409 not in statuses
    if not ok:
        print(f"FAILED: {vms - len(closing)} unclosed, {len(failed)} failed or skipped, {len(wrong)} VMs left wrong")
        return 1
    print(f"OK: every VM kept exactly its newest {len(newest)} checkpoints, never two operations on one VM")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localdev.policy_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=200)
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--keep-latest", type=int, default=3)
    parser.add_argument("--retry-after", type=int, default=1, help="ARM's Retry-After on 202s, seconds (default 1)")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--dry-run-too", action="store_true", help="also send a dry run for the first VM")
    args = parser.parse_args(argv)
    return run(args.vms, args.checkpoints, args.keep_latest, args.timeout, args.retry_after, args.dry_run_too)


if __name__ == "__main__":
    sys.exit(main())
