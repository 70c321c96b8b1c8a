#!/usr/bin/env bash
# Put one checkpoint-deletion request on the app's requests queue from the command line, two ways:
#   1. the Azure CLI: `az storage message put --auth-mode login` (the deployed storage account
#      accepts no keys, so --auth-mode login is required);
#   2. the project's own tool: `python -m checkpointctl enqueue` (run from the repository root; it
#      validates the request with the app's own rules before sending; see docs/cli.md).
#
# usage: examples/enqueue_request.sh <resource uri> <checkpoint id> [request id] [correlation id]
#
# environment:
#   STORAGE_ACCOUNT   storage account name (azd: AZURE_STORAGE_ACCOUNT_NAME); used by both ways
#   REQUESTS_QUEUE    default: CHECKPOINT_REQUESTS_QUEUE, else checkpoint-delete-requests
#   PYTHON            Python with the repository's requirements (default: .venv/bin/python, else python3)
#   DRY_RUN=1         send nothing: print each message that would be sent on stdout, one per line
#                     (checkpointctl validates its message with --dry-run), the commands on stderr
#
# Your signed-in account needs "Storage Queue Data Message Sender" (or Contributor) on the queue.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 4 ]; then
  echo "usage: $0 <resource uri> <checkpoint id> [request id] [correlation id]" >&2
  exit 2
fi
RESOURCE_URI=$1
CHECKPOINT_ID=$2
REQUEST_ID=${3:-req-$(date -u +%Y%m%dT%H%M%SZ)-$$}
CORRELATION_ID=${4:-}
QUEUE=${REQUESTS_QUEUE:-${CHECKPOINT_REQUESTS_QUEUE:-checkpoint-delete-requests}}
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO_ROOT/.venv/bin/python" ]; then PYTHON=$REPO_ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
DRY_RUN=${DRY_RUN:-}
if [ -z "$DRY_RUN" ] && [ -z "${STORAGE_ACCOUNT:-}" ]; then
  echo "$0: set STORAGE_ACCOUNT (or DRY_RUN=1)" >&2
  exit 2
fi

# --- 1. Azure CLI ---------------------------------------------------------------------------------
# The message is the request's JSON (plain text; base64 would do too). It is built with Python's
# json module so that any character in the ids is quoted correctly (jq -n --arg ... works as well).
REQUEST_JSON=$("$PYTHON" -c '
import json, sys
resource_uri, checkpoint_id, request_id, correlation_id = sys.argv[1:5]
request = {"resourceUri": resource_uri, "checkpointId": checkpoint_id, "requestId": request_id}
if correlation_id:
    request["correlationId"] = correlation_id
print(json.dumps(request, separators=(",", ":")))
' "$RESOURCE_URI" "$CHECKPOINT_ID" "$REQUEST_ID" "$CORRELATION_ID")

AZ=(az storage message put --auth-mode login --account-name "${STORAGE_ACCOUNT:-<account>}"
    --queue-name "$QUEUE" --content "$REQUEST_JSON")
if [ -n "$DRY_RUN" ]; then
  printf 'would run:' >&2; printf ' %q' "${AZ[@]}" >&2; echo >&2
  echo "$REQUEST_JSON"
else
  "${AZ[@]}" --output none
  echo "sent requestId $REQUEST_ID with az" >&2
fi

# --- 2. checkpointctl ------------------------------------------------------------------------------
# The same deletion as a CloudEvent in base64 (what an Event Grid CloudEvents delivery looks like);
# the defaults are --envelope plain --encoding plain. Another requestId, since it is another request.
# The account URL is the public cloud's; elsewhere use your cloud's queue endpoint
# (az storage account show -n <account> --query primaryEndpoints.queue).
CTL=(enqueue --account-url "https://${STORAGE_ACCOUNT:-account}.queue.core.windows.net" --requests-queue "$QUEUE"
     --resource-uri "$RESOURCE_URI" --checkpoint-id "$CHECKPOINT_ID" --request-id "$REQUEST_ID-ctl"
     --envelope cloudevents --encoding base64)
if [ -n "$CORRELATION_ID" ]; then CTL+=(--correlation-id "$CORRELATION_ID"); fi
if [ -n "$DRY_RUN" ]; then CTL+=(--dry-run); fi
(cd "$REPO_ROOT" && "$PYTHON" -m checkpointctl "${CTL[@]}")
