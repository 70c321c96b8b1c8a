"""Retention policies (issue 11): which of a VM's checkpoints a policy request deletes.

Pure and host-free (no I/O, no Functions imports). The submit step is meant to use it so:
`parse_policy` on the request object shared.request decoded (after its envelopes); `chain_order` on the
VM instance's `properties.infrastructureProfile.checkpoints`; `select` for what to delete, oldest first;
`policy_event` for the closing `ScVmm.CheckpointPolicy.Completed` or `.Failed` event. docs/policies.md
describes the shapes; schemas/policy-request.schema.json and schemas/policy-event.schema.json hold them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .events import rfc3339
from .request import MAX_TEXT_FIELD, _JsonNumber, _text_problem

MAX_KEEP_LATEST = 1000
POLICY_MEMBERS = ("keepLatest", "namePattern")
EVENT_TYPE_PREFIX = "ScVmm.CheckpointPolicy."
COMPLETED = "Completed"
FAILED = "Failed"

# A JSON integer as written: no fraction, no exponent (the decoder keeps numbers as their text).
_JSON_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")


@dataclass(frozen=True)
class Policy:
    keep_latest: int | None = None
    name_pattern: str | None = None
    dry_run: bool = False

    def as_json(self) -> dict:
        """The policy as events carry it (`data.policy`): only the rules given."""
        rules = {"keepLatest": self.keep_latest, "namePattern": self.name_pattern}
        return {name: value for name, value in rules.items() if value is not None}


@dataclass
class PolicyInvalid(Exception):
    """A request whose policy members are invalid: answered like any invalid request (`Failed` with
    `InvalidRequest`, `target` the field at fault, e.g. `policy.keepLatest`)."""

    message: str
    target: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Selection:
    delete: list[str]  # chain order: the oldest first, the order to delete them in
    keep: list[str]  # chain order


# --- the request --------------------------------------------------------------------------------------


def parse_policy(obj: dict) -> Policy | None:
    """The policy of a decoded request object, or None for an ordinary deletion; raises PolicyInvalid.

    `policy`, `dryRun`, `keepLatest` and `namePattern` given as null count as absent, as the request's
    other optional fields do. `dryRun` other than absent, null or false needs a `policy`: a request that
    asks for a dry run is never carried out as a real deletion.
    """
    if not isinstance(obj, dict):
        raise PolicyInvalid("the request must be a JSON object", "message")
    problems: list[tuple[str, str]] = []
    repeated = getattr(obj, "names", ())  # request.py's marker of members named more than once
    problems += [(n, f"the request has more than one member named {n}") for n in ("policy", "dryRun") if n in repeated]
    policy, dry_run = obj.get("policy"), obj.get("dryRun")
    if dry_run is not None and not isinstance(dry_run, bool):
        problems.append(("dryRun", "dryRun must be true or false"))
    if policy is None:
        if dry_run is True:
            problems.append(("dryRun", "dryRun is for policy requests only; this request has no policy"))
        _raise_first(problems)
        return None
    if obj.get("checkpointId") is not None:
        problems.append(("policy", "a request names either a checkpointId or a policy, not both"))
    if not isinstance(policy, dict):
        problems.append(("policy", 'policy must be a JSON object, such as {"keepLatest": 3}'))
        _raise_first(problems)
    keep_latest, name_pattern = policy.get("keepLatest"), policy.get("namePattern")
    inner = getattr(policy, "names", ())
    problems += [(f"policy.{n}", f"policy has more than one member named {n}") for n in POLICY_MEMBERS if n in inner]
    if unknown := [name for name in policy if name not in POLICY_MEMBERS]:
        problems.append(("policy", _unknown_members(unknown)))
    if keep_latest is not None:
        keep_latest = _integer(keep_latest)
        if keep_latest is None or not 0 <= keep_latest <= MAX_KEEP_LATEST:
            message = f"policy.keepLatest must be an integer from 0 to {MAX_KEEP_LATEST}, without fraction or exponent"
            problems.append(("policy.keepLatest", message))
    if name_pattern is not None and (problem := _text_problem("policy.namePattern", name_pattern)):
        problems.append(("policy.namePattern", problem))
    if policy.get("keepLatest") is None and name_pattern is None:
        problems.append(("policy", "policy needs keepLatest, namePattern or both"))
    _raise_first(problems)
    return Policy(keep_latest=keep_latest, name_pattern=name_pattern, dry_run=dry_run is True)


def _raise_first(problems: list[tuple[str, str]]) -> None:
    """Every problem in the message (as request.py does), the first one's field as the target."""
    if problems:
        raise PolicyInvalid("; ".join(message for _, message in problems), problems[0][0])


def _unknown_members(names: list) -> str:
    """Names the first unknown member only (the message goes into an event), and counts the others."""
    name = names[0]
    shown = repr(name[:64] if isinstance(name, str) else name)  # repr escapes what an event cannot carry
    hint = " (dryRun goes beside policy, at the top of the request)" if name == "dryRun" else ""
    more = f" and {len(names) - 1} more unknown member(s)" if len(names) > 1 else ""
    return f"policy has no member {shown}{hint}{more}; its members are keepLatest and namePattern"


def _integer(value) -> int | None:
    """An integer from a JSON number: Python's int (not bool) or request.py's number kept as its text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, _JsonNumber) and len(value.text) <= 8 and _JSON_INTEGER.fullmatch(value.text):
        return int(value.text)
    return None


# --- the checkpoints ---------------------------------------------------------------------------------


def checkpoint_id(entry) -> str | None:
    """The entry's checkpointID when a deletion request could name it (1..256 printable characters)."""
    cid = entry.get("checkpointID") if isinstance(entry, dict) else None
    return cid if isinstance(cid, str) and 1 <= len(cid) <= MAX_TEXT_FIELD and cid.isprintable() else None


def chain_order(checkpoints: list[dict]) -> list[dict]:
    """The entries of `checkpoints` in chain order, the root (oldest) first; never raises, never loops.

    A clean chain comes out root first, each entry after its parent, whatever order it was listed in.
    Anything else, deterministically:
    - entries that are no object, or have no checkpointID (a non-empty string), are left out; so are
      those whose checkpointID a request could not carry (more than 256 characters, not printable),
      though they still link their neighbours;
    - the same checkpointID more than once: the first listed entry is the checkpoint, the others are left out;
    - a root is an entry whose parentCheckpointID is absent, null or "". Roots come first, in listed
      order, each followed by everything that descends from it, depth first; children of one parent
      (a tree: Hyper-V branches when an older checkpoint was applied) in listed order;
    - then entries whose parent is not in the list (or is no string), in listed order, each with its
      descendants, as roots of their own;
    - last, entries no root reaches (cycles, an entry that is its own parent, what hangs off a cycle),
      in listed order.
    """
    if not isinstance(checkpoints, list | tuple):
        return []
    entries = [c for c in checkpoints if isinstance(c, dict)]
    first: dict[str, int] = {}  # checkpointID -> the index of its first entry
    for i, entry in enumerate(entries):
        cid = entry.get("checkpointID")
        if isinstance(cid, str) and cid:
            first.setdefault(cid, i)
    placed = sorted(first.values())
    children: dict[int, list[int]] = {i: [] for i in placed}
    roots, orphans = [], []
    for i in placed:
        parent = entries[i].get("parentCheckpointID")
        if parent is None or parent == "":
            roots.append(i)
        elif isinstance(parent, str) and parent in first:
            children[first[parent]].append(i)
        else:
            orphans.append(i)
    order: list[int] = []
    seen: set[int] = set()
    for start in roots + orphans:
        stack = [start]
        while stack:
            i = stack.pop()
            if i not in seen:  # always true (each entry has one parent); a guard all the same
                seen.add(i)
                order.append(i)
                stack.extend(reversed(children[i]))
    order += [i for i in placed if i not in seen]
    return [entries[i] for i in order if checkpoint_id(entries[i]) is not None]


def name_matches(pattern: str | None, name) -> bool:
    """`namePattern` on a checkpoint's name: a case-insensitive glob (fnmatch: * ? [seq] [!seq]) on the
    whole name; no pattern matches every checkpoint, a checkpoint without a (string) name matches none."""
    if pattern is None:
        return True
    return isinstance(name, str) and fnmatchcase(name.casefold(), pattern.casefold())


def select(policy: Policy, ordered: list[dict]) -> Selection:
    """What `policy` deletes from checkpoints in chain order (`chain_order`'s result).

    The candidates are the checkpoints whose name matches namePattern (all of them without one); the
    newest keepLatest candidates are kept, the others deleted, oldest first. Non-candidates are kept.
    Entries without a usable checkpointID, and repeats of one, are in neither list. A Policy with neither
    rule (parse_policy never makes one) deletes nothing.
    """
    ids: list[str] = []
    seen: set[str] = set()
    candidates: list[str] = []
    for entry in ordered:
        cid = checkpoint_id(entry)
        if cid is None or cid in seen:
            continue
        seen.add(cid)
        ids.append(cid)
        if name_matches(policy.name_pattern, entry.get("name")):
            candidates.append(cid)
    if policy.keep_latest is None and policy.name_pattern is None:
        candidates = []
    doomed = set(candidates[: max(0, len(candidates) - max(0, policy.keep_latest or 0))])
    return Selection(delete=[c for c in ids if c in doomed], keep=[c for c in ids if c not in doomed])


# --- the closing event -------------------------------------------------------------------------------


def policy_event(
    outcome: str,
    facts: dict,
    policy: Policy,
    now: float,
    *,
    deleted=(),
    kept=(),
    failed=(),
    skipped=(),
    error: dict | None = None,
) -> dict:
    """The `ScVmm.CheckpointPolicy.<outcome>` event (`Completed` or `Failed`) of a policy request.

    `facts` holds the request's requestId and resourceUri, and its correlationId and traceparent when it
    had them; the lists are checkpoint ids in chain order; `error` (Failed only, required there) is an
    error as shared.arm_answers.arm_error or app_error makes it. `now` is epoch seconds.
    """
    if outcome not in (COMPLETED, FAILED):
        raise ValueError(f"no policy event has the outcome {outcome!r}")
    if (error is None) != (outcome == COMPLETED):
        raise ValueError("a Failed policy event needs an error, a Completed one has none")
    data = {"requestId": facts["requestId"]}
    if facts.get("correlationId") is not None:
        data["correlationId"] = facts["correlationId"]
    data |= {"resourceUri": facts["resourceUri"], "policy": policy.as_json(), "dryRun": policy.dry_run}
    data |= {"deleted": list(deleted), "kept": list(kept), "failed": list(failed), "skipped": list(skipped)}
    if error is not None:
        data["error"] = error
    event = {
        "specversion": "1.0",
        "type": EVENT_TYPE_PREFIX + outcome,
        "source": facts["resourceUri"],
        "id": f"{facts['requestId']}:{outcome.lower()}",
        "time": rfc3339(now),
        "datacontenttype": "application/json",
    }
    if facts.get("traceparent"):
        event["traceparent"] = facts["traceparent"]
    event["data"] = data
    return event
