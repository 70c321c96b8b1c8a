"""Just enough of the Logic Apps workflow definition language to read the two workflows in examples/."""

from tests.support.contract import load


class LogicApp:
    """Just enough of the workflow definition language for these two workflows: known expressions only."""

    def __init__(self, name: str):
        self.document = load(name)
        self.definition = self.document["definition"]

    def parameter_default(self, name: str):
        return self.definition["parameters"][name]["defaultValue"]

    def action(self, name: str) -> dict:
        return self.definition["actions"][name]


ENQUEUE_EXPRESSIONS = {
    "@triggerBody()?['resourceUri']": "resourceUri",
    "@triggerBody()?['checkpointId']": "checkpointId",
    "@coalesce(triggerBody()?['requestId'], workflow()?['run']?['name'])": "requestId",
    "@triggerBody()?['correlationId']": "correlationId",
    "@triggerOutputs()?['headers']?['traceparent']": "traceparent",
}
