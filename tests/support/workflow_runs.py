"""Runs a Logic Apps workflow definition once on sample inputs (see tests/support/logic_apps.py)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote
from zoneinfo import ZoneInfo

from jsonschema import Draft4Validator

from tests.support.workflow_expressions import ExpressionParser, WorkflowError

if TYPE_CHECKING:
    from tests.support.logic_apps import LogicApp

# Windows time zone ids (what Logic Apps takes) of the zones the tests use.
WINDOWS_TIME_ZONES = {
    "UTC": "UTC",
    "W. Europe Standard Time": "Europe/Berlin",
    "Pacific Standard Time": "America/Los_Angeles",
    "Tokyo Standard Time": "Asia/Tokyo",
}


@dataclass
class Run:
    """What one run did: each action's status and outputs (inside a Foreach: of its last iteration), and the
    connector calls it made, in order."""

    statuses: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    bodies: dict = field(default_factory=dict)
    calls: list = field(default_factory=list)


class Scope:
    """The values expressions read during a run."""

    def __init__(self, parameters: dict, trigger: dict, now: datetime, run_name: str, run: Run):
        self.parameters, self.trigger, self.now, self.run_name, self.run = parameters, trigger, now, run_name, run
        self.items: list = []

    # -- evaluation --

    def value(self, value):
        """A JSON value of the definition, its expressions evaluated."""
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if not isinstance(value, str):
            return value
        if value.startswith("@@"):
            return value[1:]
        if value.startswith("@") and not value.startswith("@{"):
            parser = ExpressionParser(value, 1)
            node = parser.expression()
            if parser.peek() is not None:
                raise NotImplementedError(f"trailing text in {value!r}")
            return self.evaluate(node)
        return self.interpolate(value)

    def interpolate(self, text: str) -> str:
        out, pos = [], 0
        while (start := text.find("@{", pos)) >= 0:
            out.append(text[pos:start])
            parser = ExpressionParser(text, start + 2)
            node = parser.expression()
            if parser.peek() != "}":
                raise NotImplementedError(f"unclosed @{{ in {text!r}")
            parser.take("}")
            out.append(self.text_of(self.evaluate(node)))
            pos = parser.end()
        return "".join(out) + text[pos:]

    @staticmethod
    def text_of(value) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, dict | list):
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        raise NotImplementedError(f"the text of {value!r}")

    def evaluate(self, node):
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "get":
            _, target, key, optional = node
            target, key = self.evaluate(target), self.evaluate(key)
            if target is None and optional:
                return None
            if isinstance(target, dict) and isinstance(key, str):
                if key in target:
                    return target[key]
                if optional:
                    return None
            if isinstance(target, list) and isinstance(key, int) and -1 < key < len(target):
                return target[key]
            raise WorkflowError(f"no member {key!r} in {target!r}")
        _, name, args = node
        function = getattr(self, "fn_" + name, None)
        if function is None:
            raise NotImplementedError(f"the function {name}()")
        return function(*[self.evaluate(a) for a in args])

    def condition(self, expression) -> bool:
        """An If action's expression: an expression string, or the designer's and/or/not object form."""
        if isinstance(expression, str):
            return self.value(expression) is True
        ((name, operands),) = expression.items()
        if name == "and":
            return all([self.condition(o) for o in operands])
        if name == "or":
            return any([self.condition(o) for o in operands])
        if name == "not":
            return not self.condition(operands)
        function = getattr(self, "fn_" + name, None)
        if function is None:
            raise NotImplementedError(f"the condition {name}")
        return function(*self.value(operands)) is True

    # -- the functions the workflows use (https://learn.microsoft.com/azure/logic-apps/workflow-definition-language-functions-reference) --

    def fn_parameters(self, name):
        if name not in self.parameters:
            raise WorkflowError(f"no parameter {name!r}")
        return self.parameters[name]

    def fn_item(self):
        return self.items[-1]

    def fn_outputs(self, name):
        if name not in self.run.outputs:
            raise WorkflowError(f"the action {name} has not run")
        return self.run.outputs[name]

    def fn_body(self, name):
        if name not in self.run.bodies:
            raise WorkflowError(f"the action {name} has not run, or has no body")
        return self.run.bodies[name]

    def fn_triggerBody(self):
        return self.trigger.get("body")

    def fn_triggerOutputs(self):
        return self.trigger

    def fn_workflow(self):
        return {"name": "workflow", "run": {"name": self.run_name}}

    def fn_utcNow(self):
        return self.now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.now.microsecond:06d}0Z"

    def fn_convertFromUtc(self, timestamp, zone, format="o"):
        if zone not in WINDOWS_TIME_ZONES:
            raise NotImplementedError(f"the time zone {zone!r}")
        match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,7}))?Z", timestamp)
        if not match:
            raise WorkflowError(f"convertFromUtc() of {timestamp!r}")
        moment = datetime.fromisoformat(match[1]).replace(
            tzinfo=UTC, microsecond=int((match[2] or "0").ljust(7, "0")) // 10
        )
        local = moment.astimezone(ZoneInfo(WINDOWS_TIME_ZONES[zone]))
        return _net_format(local, format)

    def fn_concat(self, *parts):
        if not all(isinstance(p, str) for p in parts):
            raise NotImplementedError(f"concat() of {parts!r}")
        return "".join(parts)

    def fn_split(self, text, separator):
        return text.split(separator)

    def fn_last(self, collection):
        return collection[-1] if collection else None

    def fn_take(self, collection, count):
        return collection[:count]

    def fn_uriComponent(self, text):
        return quote(text, safe="")  # .NET's Uri.EscapeDataString: all but A-Z a-z 0-9 - . _ ~, as UTF-8

    def fn_encodeURIComponent(self, text):
        return quote(text, safe="")

    def fn_if(self, condition, when_true, when_false):
        if not isinstance(condition, bool):
            raise WorkflowError(f"if() of {condition!r}")
        return when_true if condition else when_false

    def fn_empty(self, value):
        return value is None or len(value) == 0

    def fn_equals(self, a, b):
        return a == b

    def fn_startsWith(self, text, prefix):
        return text.casefold().startswith(prefix.casefold())  # not case-sensitive

    def fn_and(self, *values):
        return all(values)

    def fn_or(self, *values):
        return any(values)

    def fn_not(self, value):
        return not value

    def fn_coalesce(self, *values):
        return next((v for v in values if v is not None), None)

    def fn_string(self, value):
        return self.text_of(value)

    def fn_length(self, value):
        return len(value)

    def fn_union(self, *collections):
        out = []  # each item once, in the order first met: union(x, x) is how a workflow drops duplicates
        for item in (item for collection in collections for item in collection):
            if item not in out:
                out.append(item)
        return out

    def fn_removeProperty(self, obj, name):
        return {k: v for k, v in obj.items() if k != name}


def functions_used(definition) -> set[str]:
    """The functions every expression of a definition calls; raises NotImplementedError when one of them, or
    the expression, is beyond this interpreter."""
    found: set[str] = set()

    def calls(node):
        if node[0] == "call":
            found.add(node[1])
            for arg in node[2]:
                calls(arg)
        elif node[0] == "get":
            calls(node[1])
            calls(node[2])

    def walk(value):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and value.startswith("@") and not value.startswith(("@@", "@{")):
            parser = ExpressionParser(value, 1)
            calls(parser.expression())
            if parser.peek() is not None:
                raise NotImplementedError(f"trailing text in {value!r}")
        elif isinstance(value, str):
            pos = 0
            while (start := value.find("@{", pos)) >= 0:
                parser = ExpressionParser(value, start + 2)
                calls(parser.expression())
                parser.take("}")
                pos = parser.end()

    walk(definition)
    if unknown := {name for name in found if not hasattr(Scope, "fn_" + name)}:
        raise NotImplementedError(f"the functions {sorted(unknown)}")
    return found


def _net_format(moment: datetime, format: str) -> str:
    """.NET date formatting: 'o', or a custom pattern of yyyy MM dd HH mm ss and literal - : T."""
    if format == "o":
        return moment.isoformat(timespec="microseconds")
    out, pos = [], 0
    for token in re.findall(r"yyyy|MM|dd|HH|mm|ss|[-:T ]", format):
        out.append(
            moment.strftime(
                {"yyyy": "%Y", "MM": "%m", "dd": "%d", "HH": "%H", "mm": "%M", "ss": "%S"}.get(token, token)
            )
        )
        pos += len(token)
    if pos != len(format):
        raise NotImplementedError(f"the date format {format!r}")
    return "".join(out)


def run_workflow(
    app: LogicApp,
    parameters: dict | None = None,
    *,
    now: datetime | None = None,
    run_name: str = "08584512345678901234567890CU12",
    trigger_body=None,
) -> Run:
    """Runs the workflow once: its parameters' defaults overridden by `parameters`, the trigger fired with
    `trigger_body` at `now`."""
    values = {name: spec.get("defaultValue") for name, spec in app.definition["parameters"].items()}
    if unknown := set(parameters or {}) - set(values):
        raise KeyError(f"the workflow has no parameters {sorted(unknown)}")
    values["$connections"] = app.document["parameters"]["$connections"]["value"]
    values |= parameters or {}
    run = Run()
    scope = Scope(values, {"body": trigger_body, "headers": {}}, now or datetime.now(UTC), run_name, run)
    _run_actions(app.definition["actions"], scope)
    return run


def _run_actions(actions: dict, scope: Scope) -> bool:
    """Runs a set of actions in runAfter order; False when one of them failed."""
    done: dict[str, str] = {}
    while len(done) < len(actions):
        ready = [
            name
            for name, action in actions.items()
            if name not in done and all(before in done for before in action.get("runAfter", {}))
        ]
        if not ready:
            raise NotImplementedError(f"runAfter of {sorted(set(actions) - set(done))} names no action here")
        for name in ready:
            action = actions[name]
            if all(done[b] in statuses for b, statuses in action.get("runAfter", {}).items()):
                done[name] = _run_action(name, action, scope)
            else:
                done[name] = "Skipped"
            scope.run.statuses[name] = done[name]
    return "Failed" not in done.values()


def _run_action(name: str, action: dict, scope: Scope) -> str:
    kind = action["type"]
    try:
        if kind == "Compose":
            scope.run.outputs[name] = scope.value(action["inputs"])
        elif kind == "ParseJson":
            inputs = scope.value(action["inputs"])
            content = inputs["content"]
            if isinstance(content, str):
                try:
                    content = json.loads(content)
                except ValueError as error:
                    raise WorkflowError(f"{name}: not JSON") from error
            if not Draft4Validator(inputs["schema"]).is_valid(content):  # Parse JSON reads draft-04
                raise WorkflowError(f"{name}: the content does not match the schema")
            scope.run.outputs[name] = {"body": content}
            scope.run.bodies[name] = content
        elif kind == "ApiConnection":
            scope.run.calls.append({"action": name, **scope.value(action["inputs"])})
            scope.run.outputs[name] = {"body": None}
            scope.run.bodies[name] = None
        elif kind == "Foreach":
            items = scope.value(action["foreach"])
            if not isinstance(items, list):
                raise WorkflowError(f"{name}: foreach of {items!r}")
            ok = True
            for item in items:
                scope.items.append(item)
                ok = _run_actions(action["actions"], scope) and ok
                scope.items.pop()
            return "Succeeded" if ok else "Failed"
        elif kind == "Switch":
            value = scope.value(action["expression"])
            branch = next((c for c in action["cases"].values() if c["case"] == value), action.get("default", {}))
            return "Succeeded" if _run_actions(branch.get("actions", {}), scope) else "Failed"
        elif kind == "If":
            branch = action if scope.condition(action["expression"]) else action.get("else", {})
            return "Succeeded" if _run_actions(branch.get("actions", {}), scope) else "Failed"
        else:
            raise NotImplementedError(f"the action type {kind}")
    except WorkflowError:
        return "Failed"
    return "Succeeded"
