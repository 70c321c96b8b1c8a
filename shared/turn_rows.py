"""The rows of the VM turns table (shared/vm_turns.py): their keys, and the shapes of a turn and
of a waiting request."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from azure.core import MatchConditions

TURN = "turn"


@dataclass(frozen=True)
class Turn:
    """The right to run an operation on a VM. `tag` is the turn row's ETag when this request created
    it (a give-back then needs one call); `policy` names the policy run the deletion belongs to;
    `operation` is the tracking record an earlier delivery of this request noted once ARM accepted
    its deletion ("" when none did)."""

    tag: str | None = None
    policy: str = ""
    index: int = 0
    total: int = 0
    operation: str = ""


@dataclass(frozen=True)
class Waiting:
    """A request that waits for its VM; `policy`/`index`/`total` place a policy's deletion in its run."""

    request_id: str
    text: str
    policy: str = ""
    index: int = 0
    total: int = 0


def vm_key(resource_uri: str) -> str:
    """The VM's partition: resource ids are case-insensitive, and `/` may not be in a key."""
    return hashlib.sha256(resource_uri.casefold().encode()).hexdigest()[:40]


def request_key(request_id: str) -> str:
    return "r" + hashlib.sha256(request_id.encode()).hexdigest()[:40]


def waiting_key(seq: int) -> str:
    return f"w{seq:012d}"


def seq_of(entry: dict) -> int:
    """The place in line of a waiting row."""
    return int(entry["RowKey"][1:])


def request_text(facts: dict) -> str:
    """A request as it goes back on the requests queue: plain JSON with the fields it had."""
    names = ("resourceUri", "checkpointId", "requestId", "correlationId", "traceparent")
    return json.dumps({n: facts[n] for n in names if facts.get(n) is not None}, separators=(",", ":"))


def turn_entity(pk: str, resource_uri: str, holder: str, since: float) -> dict:
    """A new turn row: `holder` holds the VM and nobody waits."""
    entity = {"PartitionKey": pk, "RowKey": TURN, "holder": holder, "since": since, "head": 0, "tail": 0}
    entity |= {"resourceUri": resource_uri, "policy": "", "index": 0, "total": 0}
    # who handed the VM on last and the request it sent; the holder's accepted operation
    return entity | {"by": "", "handed": "", "operation": ""}


def turn_op(updated: dict, current: dict) -> tuple:
    """The transaction step that writes `updated` over `current` (a create when it has no ETag)."""
    row = {k: v for k, v in updated.items() if k != "etag"}
    if "etag" not in current:
        return ("create", row)
    return (
        "update",
        row,
        {"mode": "replace", "etag": current["etag"], "match_condition": MatchConditions.IfNotModified},
    )
