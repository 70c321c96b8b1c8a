"""Policy runs: a retention policy's deletions, one after another on its VM, and its closing event.

A policy request (shared/policy.py says what it deletes) becomes a run: one row with what the
closing event needs, and one waiting deletion per selected checkpoint, oldest first, behind
whatever already waits for the VM (shared/vm_turns.py). Each deletion is an ordinary request
(requestId `<policy requestId>/<checkpointID>`) with its own events; as each ends, its outcome is
recorded in a row of the run. After a failed deletion the run stops: the deletions still waiting
are passed over (`skipped`). When the last one ended or was passed over, the run's
`ScVmm.CheckpointPolicy.Completed` event is written and its rows removed.

Rows, in the VM's partition: `p<key>` the run (the request's facts, the policy, the checkpoints to
delete and to keep, how many deletions are queued, whether it stopped); `o<key><index>` one
deletion's outcome. The key is a hash of the policy's requestId.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from .events import EventWriter
from .logs import get_logger
from .policy import COMPLETED, Policy, Selection, policy_event
from .request import MAX_TEXT_FIELD
from .turn_rows import Waiting, request_text, vm_key
from .vm_turns import VmTurns

logger = get_logger(__name__)

SUCCEEDED, FAILED, SKIPPED = "succeeded", "failed", "skipped"
TEXT_PART = 30_000  # characters of one table property (the service's limit is 32 K UTF-16 units)
BATCH = 100  # operations in one table transaction


def policy_key(request_id: str) -> str:
    return hashlib.sha256(request_id.encode()).hexdigest()[:32]


def child_request_id(policy_request_id: str, checkpoint_id: str) -> str:
    """`<policy requestId>/<checkpointID>`; when that is longer than a requestId may be (256), the
    parts that do not fit are replaced by 16 hex digits of their SHA-256 (the event still names the
    checkpoint in `checkpointId`)."""
    whole = f"{policy_request_id}/{checkpoint_id}"
    if len(whole) <= MAX_TEXT_FIELD:
        return whole
    digest = hashlib.sha256(checkpoint_id.encode()).hexdigest()[:16]
    base = policy_request_id
    if len(base) + 17 > MAX_TEXT_FIELD:
        base = base[: MAX_TEXT_FIELD - 34] + "~" + hashlib.sha256(base.encode()).hexdigest()[:16]
    return f"{base}/{digest}"


def _put_text(row: dict, name: str, text: str) -> None:
    """A long text over as many properties as it needs: name, name_1, name_2 ..."""
    parts = [text[i : i + TEXT_PART] for i in range(0, len(text), TEXT_PART)] or [""]
    for i, part in enumerate(parts):
        row[name if i == 0 else f"{name}_{i}"] = part


def _get_text(row: dict, name: str) -> str:
    parts, i = [row.get(name, "")], 1
    while f"{name}_{i}" in row:
        parts.append(row[f"{name}_{i}"])
        i += 1
    return "".join(parts)


class PolicyRuns:
    """Starts policy runs, records their deletions' outcomes and closes them with their event."""

    def __init__(self, table: TableClient, turns: VmTurns, events: EventWriter, clock: Callable[[], float] = time.time):
        self._table = table
        self._turns = turns
        self._events = events
        self._clock = clock
        turns.policy_runs = self

    def started(self, resource_uri: str, request_id: str) -> bool:
        """Whether this policy request already has a run (a redelivery: it goes on from there)."""
        return self._row(vm_key(resource_uri), "p" + policy_key(request_id)) is not None

    def start(self, facts: dict, policy: Policy, selection: Selection | None) -> None:
        """Queue the run's deletions (`selection` None: the run exists already, go on with it)."""
        pk, key = vm_key(facts["resourceUri"]), policy_key(facts["requestId"])
        run = self._row(pk, "p" + key)
        if run is None:
            if selection is None:
                raise ValueError("a new policy run needs its selection")
            run = {"PartitionKey": pk, "RowKey": "p" + key, "queued": 0, "stopped": False}
            run["total"] = len(selection.delete)
            _put_text(run, "facts", json.dumps({**facts, "policy": policy.as_json()}, separators=(",", ":")))
            _put_text(run, "delete", json.dumps(selection.delete, separators=(",", ":")))
            _put_text(run, "kept", json.dumps(selection.keep, separators=(",", ":")))
            try:
                self._table.create_entity(run)
            except ResourceExistsError:
                run = self._row(pk, "p" + key)
        delete = json.loads(_get_text(run, "delete"))
        total = len(delete)
        waiting = []
        for index, checkpoint_id in enumerate(delete):
            child = {**facts, "requestId": child_request_id(facts["requestId"], checkpoint_id)}
            child["checkpointId"] = checkpoint_id
            waiting.append(Waiting(child["requestId"], request_text(child), key, index, total))
        queued = int(run.get("queued", 0))

        def progress(done: int) -> list:
            row = {"PartitionKey": pk, "RowKey": "p" + key, "queued": queued + done}
            return [("update", row, {"mode": UpdateMode.MERGE})]

        logger.info("policy run: %d deletions to queue (%d queued before)", total - queued, queued)
        self._turns.wait_all(facts["resourceUri"], waiting[queued:], by=facts["requestId"], extra=progress)

    def ended(self, pk: str, key: str, index: int, total: int, outcome: str) -> None:
        """One deletion of run `key` ended (or was passed over): record it; after the last, close the run."""
        row = {"PartitionKey": pk, "RowKey": f"o{key}{index:05d}", "outcome": outcome, "index": index}
        self._table.upsert_entity(row, mode=UpdateMode.REPLACE)
        if outcome == FAILED:
            self._table.upsert_entity({"PartitionKey": pk, "RowKey": "p" + key, "stopped": True}, mode=UpdateMode.MERGE)
        if index >= total - 1:
            self._close(pk, key)

    def stopped(self, pk: str, key: str) -> bool:
        run = self._row(pk, "p" + key)
        return run is None or bool(run.get("stopped"))

    def _close(self, pk: str, key: str) -> None:
        run = self._row(pk, "p" + key)
        if run is None:
            return  # closed already
        facts = json.loads(_get_text(run, "facts"))
        delete, kept = json.loads(_get_text(run, "delete")), json.loads(_get_text(run, "kept"))
        query = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
        rows = list(self._table.query_entities(query, parameters={"pk": pk, "low": f"o{key}", "high": f"o{key}~"}))
        outcomes = {int(r["index"]): r["outcome"] for r in rows}
        lists: dict[str, list] = {SUCCEEDED: [], FAILED: [], SKIPPED: []}
        for index, checkpoint_id in enumerate(delete):
            lists[outcomes.get(index, SKIPPED)].append(checkpoint_id)
        policy = Policy(facts["policy"].get("keepLatest"), facts["policy"].get("namePattern"), False)
        event = policy_event(
            COMPLETED,
            facts,
            policy,
            self._clock(),
            deleted=lists[SUCCEEDED],
            kept=kept,
            failed=lists[FAILED],
            skipped=lists[SKIPPED],
        )
        self._events.write(event)  # first: a crash before the rows go repeats the event (same id)
        logger.info(
            "policy run completed: %d deleted, %d failed, %d skipped, %d kept",
            len(lists[SUCCEEDED]),
            len(lists[FAILED]),
            len(lists[SKIPPED]),
            len(kept),
        )
        keys = [r["RowKey"] for r in rows] + ["p" + key]
        for i in range(0, len(keys), BATCH):
            try:
                self._table.submit_transaction(
                    [("delete", {"PartitionKey": pk, "RowKey": k}) for k in keys[i : i + BATCH]]
                )
            except TableTransactionError:  # some were removed already (a repeated close): one by one
                for k in keys[i : i + BATCH]:
                    self._table.delete_entity(pk, k)

    def _row(self, pk: str, row_key: str) -> dict | None:
        try:
            return dict(self._table.get_entity(pk, row_key))
        except ResourceNotFoundError:
            return None
