"""`checkpointctl checkpoints RESOURCE_URI`: a VM's checkpoints in chain order (the oldest first), read from
ARM with the caller's own credentials, and which of them a retention policy would delete.

The order and the selection are the app's own (shared.policy.chain_order and select), so what this shows
is what a policy request for the VM would delete now. It reads only; it never touches the queues.
"""

from __future__ import annotations

import argparse
import json

from shared.arm_answers import MAX_NAME
from shared.policy import Policy, PolicyInvalid, chain_order, checkpoint_id, parse_policy, select
from shared.request import resource_uri_problem

from . import arm
from .cmd_enqueue import keep_latest_number
from .connection import UsageError
from .console import EXIT_FAILED, EXIT_OK, error, note, out
from .events import compact_json, printable
from .options import add_command

MAX_COLUMN = 40  # columns are padded to at most this many characters (longer text is shown whole)

EXAMPLES = """\
examples:
  # the checkpoints of a machine, oldest first, signed in with `az login` (or any DefaultAzureCredential)
  python -m checkpointctl checkpoints \\
      /subscriptions/<sub>/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm1

  # which of them `enqueue --keep-latest 3 --name-pattern 'nightly-*'` would delete now
  python -m checkpointctl checkpoints /subscriptions/<sub>/.../machines/vm1 --keep-latest 3 --name-pattern 'nightly-*'

  # one JSON object per checkpoint, for jq
  python -m checkpointctl checkpoints /subscriptions/<sub>/.../machines/vm1 --json | jq -r .checkpointID

Reads GET {ARM endpoint}{RESOURCE_URI}/providers/Microsoft.ScVmm/virtualMachineInstances/default and
orders properties.infrastructureProfile.checkpoints by their parent links, as the app orders them for a
policy (docs/policies.md, "chain order"). The identity needs read access to the machine (Reader).
Exit codes: 0 listed; 1 ARM refused (401, 403), has no such VM (404), failed, answered garbage or could
not be reached, or no token could be had; 2 bad usage. REQUESTS_CA_BUNDLE and HTTPS_PROXY apply.
"""


def add_parser(commands) -> None:
    command = add_command(
        commands,
        "checkpoints",
        help="list a VM's checkpoints, oldest first, read from ARM",
        description="List a VM's checkpoints in chain order (the oldest first), read from ARM with your "
        "Azure credentials; with --keep-latest or --name-pattern, mark what that policy would delete.",
        epilog=EXAMPLES,
    )
    command.add_argument("resource_uri", metavar="RESOURCE_URI", help="ARM resource id of the machine")
    command.add_argument("--json", action="store_true", help="print one JSON object per checkpoint")
    policy = command.add_argument_group("a retention policy to try (nothing is deleted)")
    policy.add_argument("--keep-latest", type=keep_latest_number, metavar="K", help="keep the newest K (0 to 1000)")
    policy.add_argument("--name-pattern", metavar="P", help="only checkpoints whose name matches this glob")
    where = command.add_argument_group("ARM")
    where.add_argument(
        "--arm-endpoint", metavar="URL", help=f"https only (default: env ARM_ENDPOINT, else {arm.DEFAULT_ARM_ENDPOINT})"
    )
    where.add_argument(
        "--api-version", metavar="V", default=arm.DEFAULT_API_VERSION, help=f"(default {arm.DEFAULT_API_VERSION})"
    )
    where.add_argument(
        "--credential",
        choices=arm.CREDENTIALS,
        default="default",
        help="DefaultAzureCredential (env, workload identity, managed identity, az login, ...), "
        "ManagedIdentityCredential (AZURE_CLIENT_ID: a user-assigned one), or the Azure CLI's sign-in "
        "(default: default)",
    )
    where.add_argument(
        "--scope",
        metavar="SCOPE",
        help="token scope (default: https://management.azure.com/.default, or for a *.usgovcloudapi.net or "
        "*.chinacloudapi.cn endpoint https://<its host>/.default, as the app asks)",
    )
    command.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    problem = resource_uri_problem(args.resource_uri)
    if problem:
        raise UsageError(f"RESOURCE_URI: {problem}")
    policy = _policy(args)
    endpoint = arm.arm_endpoint(args.arm_endpoint)
    version = arm.api_version(args.api_version)
    scope = arm.scope_for(endpoint, args.scope)
    credential = arm.credential(args.credential)
    try:
        listed = arm.read_instance(endpoint, args.resource_uri, version, credential, scope)
    except arm.ArmReadError as exc:
        error(str(exc))
        return EXIT_FAILED
    finally:
        credential.close()

    read = _as_the_app_reads(listed)
    ordered = chain_order(list(read))
    doomed = set(select(policy, ordered).delete) if policy else set()
    rows = []
    for position, entry in enumerate(ordered, start=1):
        shown = read[entry]
        row = {"position": position, "checkpointID": checkpoint_id(entry)}
        row |= {name: shown.get(name) for name in ("name", "description", "parentCheckpointID")}
        if policy:
            row["policy"] = "delete" if row["checkpointID"] in doomed else "keep"
        rows.append(row)
    if args.json:
        for row in rows:
            out(compact_json(row))
    else:
        _table(rows, policy is not None)
    _summary(args.resource_uri, listed, rows, policy, len(doomed))
    return EXIT_OK


class _Entry(dict):
    """A listed checkpoint as the app reads it; hashed by identity, to find the listed entry again."""

    __hash__ = object.__hash__


def _as_the_app_reads(listed: list) -> dict[_Entry, dict]:
    """Each listed entry as the app reads it for a policy (shared/arm_answers.py: objects only, their
    checkpointID, name and parentCheckpointID when strings, cut at MAX_NAME), mapped to the listed entry, so
    that the order and the selection are the app's and what is shown is what ARM said."""
    read = {}
    for entry in listed:
        if isinstance(entry, dict):
            fields = {name: entry.get(name) for name in ("checkpointID", "name", "parentCheckpointID")}
            read[_Entry({name: value[:MAX_NAME] for name, value in fields.items() if isinstance(value, str)})] = entry
    return read


def _policy(args: argparse.Namespace) -> Policy | None:
    """The policy of --keep-latest and --name-pattern, checked with the app's rules; None without them."""
    rules = {"keepLatest": args.keep_latest, "namePattern": args.name_pattern}
    if all(value is None for value in rules.values()):
        return None
    try:
        return parse_policy({"policy": {rule: value for rule, value in rules.items() if value is not None}})
    except PolicyInvalid as invalid:
        flag = {"policy.keepLatest": "--keep-latest", "policy.namePattern": "--name-pattern"}.get(invalid.target)
        raise UsageError(f"{flag or invalid.target}: {invalid}") from None


def _text(value) -> str:
    return "-" if value is None or value == "" else printable(value)


def _table(rows: list[dict], with_policy: bool) -> None:
    columns = {"POS": "position", "CHECKPOINT ID": "checkpointID", "NAME": "name", "PARENT": "parentCheckpointID"}
    if with_policy:
        columns["POLICY"] = "policy"
    cells = [[_text(row[key]) for key in columns.values()] for row in rows]
    if not cells:
        return
    widths = [min(MAX_COLUMN, max(len(text) for text in column)) for column in zip(*cells, columns, strict=True)]
    for line in [list(columns), *cells]:
        out("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip())


def _summary(resource_uri: str, listed: list, rows: list[dict], policy: Policy | None, doomed: int) -> None:
    note(f"{len(rows)} checkpoint(s) of {resource_uri}, oldest first")
    if left_out := len(listed) - len(rows):
        note(
            f"{left_out} listed entr{'y' if left_out == 1 else 'ies'} left out: no usable checkpointID, or one listed twice"
        )
    if policy is not None:
        rules = json.dumps(policy.as_json(), ensure_ascii=False)
        note(f"the policy {rules} would delete {doomed} and keep {len(rows) - doomed}; nothing was deleted")
