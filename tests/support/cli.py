"""What the checkpointctl tests share: resource ids, running the command in-process, and events."""

from __future__ import annotations

import json
import time

from checkpointctl import main
from shared.events import outcome_event

URI = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm1"
URI2 = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm2"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def event(status: str, request_id: str, uri: str = URI, error: dict | None = None) -> str:
    facts = {"requestId": request_id, "resourceUri": uri, "checkpointId": "cp-1", "submittedAt": time.time()}
    return json.dumps(outcome_event(status, facts, time.time(), error))
