"""The retention policy schemas as the policy tests read them, and what makes a policy event valid."""

from tests.support.schemas import SCHEMA_DOCS, schema_validator

URI = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/vm1"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
REQUEST_SCHEMA = SCHEMA_DOCS["policy-request.schema.json"]
EVENT_SCHEMA = SCHEMA_DOCS["policy-event.schema.json"]
REQUEST = schema_validator(REQUEST_SCHEMA)
EVENT = schema_validator(EVENT_SCHEMA)
EVENT_OF = {
    o: schema_validator({"$schema": EVENT_SCHEMA["$schema"], "$ref": EVENT_SCHEMA["$id"] + "#" + o.lower()})
    for o in ("Completed", "Failed")
}


def assert_valid(event: dict, outcome: str) -> None:
    assert not [e.message for e in EVENT.iter_errors(event)], event
    assert EVENT_OF[outcome].is_valid(event)
    assert not EVENT_OF["Failed" if outcome == "Completed" else "Completed"].is_valid(event)
    # What the schema cannot say:
    assert event["id"] == f"{event['data']['requestId']}:{outcome.lower()}"
    assert event["source"] == event["data"]["resourceUri"]
    lists = [i for name in ("deleted", "kept", "failed", "skipped") for i in event["data"][name]]
    assert len(lists) == len(set(lists))
