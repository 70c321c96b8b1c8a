"""One operation per VM at a time, in order: each request's turn on its VM, kept in a table.

SCVMM runs one job per VM and refuses a second one (409). So that the app never collides with
itself, across all its instances, every deletion takes its VM's turn before its POST and gives it
back after its terminal event. A request whose VM is busy waits in the table, in arrival order,
without holding a worker: its message is consumed; when the turn comes to it, the request is put
on the requests queue again and runs as if it had just arrived.

One partition per VM (the key: a hash of the resourceUri, case-folded) holds:
- `turn`: who holds the VM (`holder`, a requestId, "" when nobody does but requests wait), since
  when, the range of waiting requests `head`..`tail`, and the holder's `operation` once ARM accepted
  it (`note_operation`); absent when the VM is free and nobody waits;
- `w<seq>`: a waiting request (the request's JSON, as it goes back on the requests queue);
- `r<hash of requestId>`: which waiting entry a requestId has, so that a request delivered twice
  waits once;
- the rows of policy runs (shared/policy_runs.py), which wait here as one deletion per checkpoint.

Every change of `turn` is conditional on its ETag, so two instances cannot both take a VM. A
handover names the next holder in the table first and then puts its request on the queue (the other
order let a fast delivery find itself still waiting and be consumed). The `turn` row keeps who
handed the VM on (`by`) and the request sent (`handed`): a crash between the two is mended when
`by` is delivered again (its message or tracking record stays until the handover is done), which
sends the request again unless it has arrived (it clears `handed` when it does); at worst it runs
twice, and ARM's 409 and verification settle the repeat.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from .logs import get_logger
from .turn_rows import (
    TURN,
    Turn,
    Waiting,
    request_key,
    request_text,
    seq_of,
    turn_entity,
    turn_op,
    vm_key,
    waiting_key,
)

logger = get_logger(__name__)

ATTEMPTS = 20  # conditional writes lost to other instances in a row before giving up (transient)
SKIPPED = "skipped"  # the outcome of a policy deletion passed over (its run stopped)
HANDOVER_BATCH = 30
RESEND_AFTER = 600.0  # seconds a request handed its VM may take to arrive before it is sent again  # waiting entries looked at per handover (skipped policy deletions are passed over)


class TurnsBusy(Exception):
    """The VM's turn row kept changing under us; the caller retries later (a transient failure)."""


class VmTurns:
    """The turns of every VM, in one table; `requests` is the requests queue (handovers go there).

    `policy_runs` (set after construction) is told of every policy deletion that ends or is passed
    over, and says which runs have stopped (their remaining deletions are skipped)."""

    def __init__(self, table: TableClient, requests, clock: Callable[[], float] = time.time):
        self._table = table
        self._requests = requests
        self._clock = clock
        self.policy_runs = None

    # --- taking a turn -------------------------------------------------------------------------------

    def take(self, facts: dict, redelivered: bool = False) -> Turn | None:
        """The VM's turn for this request, or None: the request now waits (or already did, or ended)
        and its message may be consumed. `redelivered`: the queue delivers this message again (an
        earlier delivery may have crashed). Raises TurnsBusy or a storage error (both transient)."""
        pk, rid = vm_key(facts["resourceUri"]), facts["requestId"]
        for _ in range(ATTEMPTS):
            try:  # a free VM has no turn row: taking it is one call
                made = self._table.create_entity(turn_entity(pk, facts["resourceUri"], rid, self._clock()))
                return Turn(tag=made.get("etag"))
            except ResourceExistsError:
                pass
            turn = self._get(pk, TURN)
            if turn is None:
                continue  # given back meanwhile
            if turn["holder"] == rid:
                if turn.get("handed"):  # it arrived: a redelivery of the one that handed it on sends nothing
                    self._arrived(turn)
                elif not redelivered:  # a second copy of a message (a send retried after a lost answer)
                    logger.warning("a second copy of this request's message is dropped: the request runs already")
                    return None
                placed = {
                    "policy": turn.get("policy", ""),
                    "index": turn.get("index", 0),
                    "total": turn.get("total", 0),
                }
                return Turn(**placed, operation=turn.get("operation") or "")
            if turn.get("by") == rid:  # this request ended and handed the VM on
                if redelivered:  # a crash may have cut the handover short: finish it
                    self._finish_handover(turn, rid)
                else:
                    logger.warning("this request ended already (it handed its VM on): a copy of it is dropped")
                return None
            appended = self._append(turn, [Waiting(rid, request_text(facts))])
            if appended is None:
                continue  # the turn row changed meanwhile
            if appended:
                logger.info("the VM is busy (held by requestId=%s): this request waits its turn", turn["holder"])
            if turn["holder"] == "":
                self.advance(facts["resourceUri"], by=rid)  # nobody holds the VM: the first waiting request gets it
            return None
        raise TurnsBusy(f"the turn of {facts['resourceUri']} kept changing")

    def wait_all(
        self, resource_uri: str, waiting: list[Waiting], by: str, extra: Callable[[int], list] | None = None
    ) -> None:
        """Append `waiting` (a policy's deletions, in order) behind whatever waits for the VM, in
        batches; `extra(done)` gives rows written with each batch (the run's progress). Entries that
        already wait are left as they are. Then hands the VM on if nobody holds it."""
        pk = vm_key(resource_uri)
        done = 0
        while done < len(waiting):
            chunk = waiting[done : done + 45]
            for _ in range(ATTEMPTS):
                turn = self._get(pk, TURN)
                if turn is None:
                    turn = turn_entity(pk, resource_uri, "", self._clock())
                rows = extra(done + len(chunk)) if extra else []
                if self._append(turn, chunk, rows) is not None:
                    break
            else:
                raise TurnsBusy(f"the turn of {resource_uri} kept changing")
            done += len(chunk)
        turn = self._get(pk, TURN)
        if turn is not None and turn.get("by") == by and turn["holder"]:
            self._finish_handover(turn, by)  # a redelivery: the handover it began may have been cut short
        else:
            self.advance(resource_uri, by=by)

    def _append(self, turn: dict, waiting: list[Waiting], rows: list | None = None) -> bool | None:
        """Adds `waiting` at the tail in one transaction: True, False when (one of) them already
        waited (nothing written), None when the turn row changed meanwhile (try again)."""
        seq = turn["tail"]
        ops = []
        for entry in waiting:
            key = request_key(entry.request_id)
            ops.append(("create", {"PartitionKey": turn["PartitionKey"], "RowKey": key, "seq": seq}))
            row = {"PartitionKey": turn["PartitionKey"], "RowKey": waiting_key(seq), "requestId": entry.request_id}
            row |= {"request": entry.text, "policy": entry.policy, "index": entry.index, "total": entry.total}
            ops.append(("create", row))
            seq += 1
        updated = {**turn, "tail": seq}
        ops.insert(0, turn_op(updated, turn))
        ops += rows or []
        try:
            self._table.submit_transaction(ops)
            return True
        except TableTransactionError as exc:
            if exc.status_code == 412 or (exc.status_code == 409 and exc.index == 0):
                return None  # the turn row changed (or was created) under us
            if exc.status_code == 409:
                return False  # a request of these waits already
            raise

    def note_operation(self, resource_uri: str, request_id: str, record: str, tag: str | None) -> str | None:
        """Keep the tracking record of the operation ARM accepted for the holder `request_id` in its
        turn row, before it goes on the tracking queue: a redelivery of the request (its process died
        before the message was consumed) then follows that operation instead of POSTing again, which
        would meet the VM busy with it. Returns the row's new ETag when `tag` still was the row's (the
        give-back stays one call), else None."""
        pk = vm_key(resource_uri)
        row = {"PartitionKey": pk, "RowKey": TURN, "operation": record}
        if tag:
            try:
                done = self._table.update_entity(
                    row, mode=UpdateMode.MERGE, etag=tag, match_condition=MatchConditions.IfNotModified
                )
                return done.get("etag")
            except ResourceModifiedError:
                pass  # a request came to wait meanwhile: the give-back takes the long way
        turn = self._get(pk, TURN)
        if turn is None or turn["holder"] != request_id:
            logger.warning("the VM's turn is not this request's any more: its operation is not noted")
            return None
        self._table.update_entity(
            row, mode=UpdateMode.MERGE, etag=turn["etag"], match_condition=MatchConditions.IfNotModified
        )
        return None

    def noted_operation(self, resource_uri: str, request_id: str) -> str:
        """The operation noted for `request_id` while it holds its VM ("" when none is)."""
        turn = self._get(vm_key(resource_uri), TURN)
        return (turn.get("operation") or "") if turn is not None and turn["holder"] == request_id else ""

    # --- giving it back ------------------------------------------------------------------------------

    def give_back(self, resource_uri: str, request_id: str, outcome: str, tag: str | None = None) -> None:
        """The request ended (`outcome`: succeeded or failed): record it for its policy run, then hand
        the VM to the next waiting request, or free it. Idempotent: once given back, nothing happens
        but finishing a handover this request began (a crash cut it short)."""
        pk = vm_key(resource_uri)
        if tag:
            try:  # nothing changed since this request took the VM: nobody waits, it belonged to no policy
                self._table.delete_entity(pk, TURN, etag=tag, match_condition=MatchConditions.IfNotModified)
                return
            except ResourceModifiedError:
                pass
            except ResourceNotFoundError:
                return
        for _ in range(ATTEMPTS):
            turn = self._get(pk, TURN)
            if turn is None or turn["holder"] != request_id:
                self._finish_handover(turn, request_id)
                return
            if turn.get("policy") and self.policy_runs is not None:
                self.policy_runs.ended(pk, turn["policy"], turn.get("index", 0), turn.get("total", 0), outcome)
            try:
                if turn["head"] == turn["tail"]:
                    self._table.delete_entity(
                        pk, TURN, etag=turn["etag"], match_condition=MatchConditions.IfNotModified
                    )
                    return
                freed = {**turn, "holder": "", "policy": "", "index": 0, "total": 0, "by": request_id, "operation": ""}
                self._table.update_entity(
                    freed, mode=UpdateMode.REPLACE, etag=turn["etag"], match_condition=MatchConditions.IfNotModified
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
            self.advance(resource_uri, by=request_id)
            return
        raise TurnsBusy(f"the turn of {resource_uri} kept changing")

    def _finish_handover(self, turn: dict | None, request_id: str) -> None:
        """`request_id` comes again (a redelivery) after it began handing the VM on: nobody holds the VM
        yet (go on), or the request it chose does and may never have had its message (send it again)."""
        if turn is None:
            return
        if turn["holder"] == "" and turn.get("by") in (request_id, ""):
            self.advance(turn["resourceUri"], by=request_id)
        elif turn["holder"] and turn.get("by") == request_id and turn.get("handed"):
            self._requests.send_message(turn["handed"], time_to_live=-1)
            logger.warning("requestId=%s was handed the VM before a crash: its request is sent again", turn["holder"])

    def _arrived(self, turn: dict) -> None:
        row = {k: v for k, v in turn.items() if k != "etag"} | {"handed": ""}
        with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):  # at worst: sent once more
            self._table.update_entity(
                row, mode=UpdateMode.REPLACE, etag=turn["etag"], match_condition=MatchConditions.IfNotModified
            )

    def advance(self, resource_uri: str, by: str = "") -> None:
        """When nobody holds the VM: the next waiting request gets it, policy deletions of stopped runs
        passed over; no waiter: the VM is free. `by` is the request that hands the VM on.

        The table names the new holder first, and only then is its request put on the requests queue: a
        request whose message came first would find itself still waiting. A crash between the two is
        mended by `by` coming again (`_finish_handover`); at worst the request is sent twice."""
        pk = vm_key(resource_uri)
        conflicts = 0
        while conflicts < ATTEMPTS:
            turn = self._get(pk, TURN)
            if turn is None or turn["holder"] != "":
                return
            if turn["head"] >= turn["tail"]:
                try:
                    self._table.delete_entity(
                        pk, TURN, etag=turn["etag"], match_condition=MatchConditions.IfNotModified
                    )
                    return
                except (ResourceModifiedError, ResourceNotFoundError):
                    conflicts += 1
                    continue
            passed, chosen = self._next(pk, turn)
            last = chosen or (passed[-1] if passed else None)
            updated = {**turn, "head": seq_of(last) + 1 if last else turn["tail"], "by": by}
            if chosen is not None:
                updated |= {"holder": chosen["requestId"], "since": self._clock(), "handed": chosen["request"]}
                updated["operation"] = ""
                updated |= {k: chosen.get(k, d) for k, d in (("policy", ""), ("index", 0), ("total", 0))}
            ops = [turn_op(updated, turn)]
            for entry in [*passed, *([chosen] if chosen else [])]:
                ops.append(("delete", {"PartitionKey": pk, "RowKey": entry["RowKey"]}))
                ops.append(("delete", {"PartitionKey": pk, "RowKey": request_key(entry["requestId"])}))
            try:
                self._table.submit_transaction(ops)
            except TableTransactionError as exc:
                if exc.status_code not in (404, 409, 412):
                    raise
                conflicts += 1
                continue
            if chosen is not None:
                self._requests.send_message(chosen["request"], time_to_live=-1)
                logger.info("the VM's turn goes to requestId=%s", chosen["requestId"])
                return
        raise TurnsBusy(f"the turn of {resource_uri} kept changing")

    def sweep(self, stale_after: float, resend_after: float = RESEND_AFTER) -> int:
        """Mend turns that stopped moving (defence in depth: every path found keeps the holder's message
        or tracking record until it gives the turn back). A request handed the VM that has not arrived
        after `resend_after` seconds is sent again; a holder older than `stale_after` seconds (longer
        than any operation may run) is passed over and the VM handed on. Returns the turns mended."""
        now, mended = self._clock(), 0
        query = "RowKey eq @turn and since lt @before"
        for found in self._table.query_entities(query, parameters={"turn": TURN, "before": now - resend_after}):
            turn = dict(found) | {"etag": found.metadata["etag"]}
            if turn["holder"] and turn.get("handed"):
                try:  # once per resend_after: `since` moves on with it
                    row = {k: v for k, v in turn.items() if k != "etag"} | {"since": now}
                    self._table.update_entity(
                        row, mode=UpdateMode.REPLACE, etag=turn["etag"], match_condition=MatchConditions.IfNotModified
                    )
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue
                self._requests.send_message(turn["handed"], time_to_live=-1)
                logger.warning(
                    "requestId=%s was handed its VM and never came: its request is sent again", turn["holder"]
                )
                mended += 1
            elif turn["holder"] and now - turn["since"] > stale_after:
                logger.error(
                    "requestId=%s has held its VM for %.0f s: the VM goes on", turn["holder"], now - turn["since"]
                )
                self.give_back(turn["resourceUri"], turn["holder"], "failed")
                mended += 1
        return mended

    def _next(self, pk: str, turn: dict) -> tuple[list[dict], dict | None]:
        """The waiting entries passed over (deletions of stopped policy runs, recorded as skipped
        before they are removed) and the one that gets the VM (None: look further, or nobody waits)."""
        passed: list[dict] = []
        stopped: dict[str, bool] = {}
        for entry in self._waiting(pk, turn["head"], HANDOVER_BATCH):
            policy = entry.get("policy")
            if policy and self.policy_runs is not None:
                if policy not in stopped:
                    stopped[policy] = self.policy_runs.stopped(pk, policy)
                if stopped[policy]:
                    self.policy_runs.ended(pk, policy, entry.get("index", 0), entry.get("total", 0), SKIPPED)
                    passed.append(entry)
                    continue
            return passed, entry
        return passed, None

    # --- rows ----------------------------------------------------------------------------------------

    def _get(self, pk: str, row: str) -> dict | None:
        try:
            entity = self._table.get_entity(pk, row)
        except ResourceNotFoundError:
            return None
        found = dict(entity)
        found["etag"] = entity.metadata["etag"]
        return found

    def _waiting(self, pk: str, head: int, count: int) -> list[dict]:
        query = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
        params = {"pk": pk, "low": waiting_key(head), "high": "x"}
        pages = self._table.query_entities(query, parameters=params, results_per_page=count).by_page()
        return [dict(e) for e in next(pages, [])][:count]
