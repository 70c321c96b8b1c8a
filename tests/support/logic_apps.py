"""Just enough of the Logic Apps workflow definition language to read the workflows in examples/.

`LogicApp` reads a workflow file; `run_workflow` (tests/support/workflow_runs.py) runs it once on sample
inputs with a small interpreter:
the expression language (literals, function calls, ['x'], ?['x'] and .x), string interpolation (@{...},
@@), and the action types Compose, ParseJson, ApiConnection (recorded, not sent), Foreach (in order),
Switch and If, each after its runAfter. Functions evaluate all their arguments, as Logic Apps does (if()
included). A function or action type it does not know is an error of the test, not of the workflow:
NotImplementedError. What fails an action in Logic Apps (a missing member read without ?, content that
does not match a Parse JSON schema) fails it here too.
"""

from tests.support.contract import load
from tests.support.workflow_runs import WINDOWS_TIME_ZONES, functions_used, run_workflow


class LogicApp:
    """A workflow file of examples/: its definition, parameters and actions (nested ones too)."""

    def __init__(self, name: str):
        self.document = load(name)
        self.definition = self.document["definition"]

    def parameter_default(self, name: str):
        return self.definition["parameters"][name]["defaultValue"]

    def action(self, name: str) -> dict:
        """The action of that name, at the top or inside a Foreach, Switch or If."""
        found = [action for action_name, action in _all_actions(self.definition["actions"]) if action_name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} actions named {name}")
        return found[0]


def _all_actions(actions: dict):
    for name, action in actions.items():
        yield name, action
        branches = [action, action.get("else", {}), action.get("default", {}), *action.get("cases", {}).values()]
        for branch in branches:
            yield from _all_actions(branch.get("actions", {}))


ENQUEUE_EXPRESSIONS = {
    "@triggerBody()?['resourceUri']": "resourceUri",
    "@triggerBody()?['checkpointId']": "checkpointId",
    "@coalesce(triggerBody()?['requestId'], workflow()?['run']?['name'])": "requestId",
    "@triggerBody()?['correlationId']": "correlationId",
    "@triggerOutputs()?['headers']?['traceparent']": "traceparent",
}


__all__ = ["ENQUEUE_EXPRESSIONS", "WINDOWS_TIME_ZONES", "LogicApp", "functions_used", "run_workflow"]
