"""The monitoring the deployment brings: the workbook (infra/workbook.json), the three log alert rules
(infra/app/alerts.bicep) and the optional custom SCVMM role (infra/app/scvmm-role-definition.bicep).

Every KQL query is read with a small reader (no Kusto engine here) and checked against what the app
sends to Application Insights, read from the app's own source rather than from a list kept here:
metric and span names and their attributes from shared/telemetry.py (its syntax tree, with the
Azure Monitor exporter's own rule for which span attributes become customDimensions), function names
from function_app.py, log texts from the logger calls in shared/. A query may read only the tables
the app and the Functions host fill, filter `name` only on names those tables get from the app,
read only customDimensions keys the app sets there, match `message` only against texts the app
logs, and use no identifier that is not a column of its tables, a name it defines or a word of KQL.
The tests that change one name and expect a complaint show that the checks can fail.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

# The exporter's own rule for which span attributes become columns instead of customDimensions.
from azure.monitor.opentelemetry.exporter.export.trace._exporter import _is_standard_attribute

from tests.support.bicep import (
    _skip_balanced,
    module_blocks,
    module_params,
    params,
    split_items,
    string_literal,
    strip_comments,
)
from tests.support.paths import ROOT

INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
WORKBOOK_JSON = INFRA / "workbook.json"
WORKBOOK_BICEP = INFRA / "app" / "workbook.bicep"
ALERTS_BICEP = INFRA / "app" / "alerts.bicep"
ROLE_BICEP = INFRA / "app" / "scvmm-role-definition.bicep"
PARAMETERS = INFRA / "main.parameters.json"
TELEMETRY = ROOT / "shared" / "telemetry.py"
FUNCTION_APP = ROOT / "function_app.py"
OBSERVABILITY = ROOT / "docs" / "observability.md"
DEPLOY = ROOT / "docs" / "deploy.md"
EVENT_SCHEMA = ROOT / "schemas" / "event.schema.json"

# What the app needs on Microsoft.ScVmm (docs/deploy.md, "A custom role for the SCVMM machines").
SCVMM_ACTIONS = {
    "Microsoft.ScVmm/virtualMachineInstances/deleteCheckpoint/action",
    "Microsoft.ScVmm/virtualMachineInstances/read",
    "Microsoft.ScVmm/locations/operationstatuses/read",
}

# ---------------------------------------------------------------------------------------------
# Application Insights: the tables a query may read and their columns (the component's schema)
# ---------------------------------------------------------------------------------------------

COMMON_COLUMNS = {
    "timestamp", "itemType", "itemCount", "itemId", "customDimensions", "operation_Id", "operation_ParentId",
    "operation_Name", "operation_SyntheticSource", "session_Id", "user_Id", "user_AuthenticatedId",
    "user_AccountId", "application_Version", "client_Type", "client_Model", "client_OS", "client_IP",
    "client_City", "client_StateOrProvince", "client_CountryOrRegion", "client_Browser", "cloud_RoleName",
    "cloud_RoleInstance", "appId", "appName", "iKey", "sdkVersion",
}  # fmt: skip
TABLE_COLUMNS = {
    "customMetrics": {"name", "value", "valueCount", "valueSum", "valueMin", "valueMax", "valueStdDev"},
    "dependencies": {
        "id", "target", "type", "name", "data", "success", "resultCode", "duration", "performanceBucket",
        "customMeasurements",
    },
    "requests": {
        "id", "source", "name", "url", "success", "resultCode", "duration", "performanceBucket", "customMeasurements",
    },
    "traces": {"message", "severityLevel", "customMeasurements"},
    "customEvents": {"name", "customMeasurements"},
    "exceptions": {
        "problemId", "handledAt", "type", "message", "assembly", "method", "outerType", "outerMessage",
        "outerAssembly", "outerMethod", "innermostType", "innermostMessage", "innermostAssembly", "innermostMethod",
        "severityLevel", "details", "customMeasurements",
    },
}  # fmt: skip
TABLES = set(TABLE_COLUMNS)

# The words of KQL these queries use (operators, keywords, functions). A new one is added here.
KQL_WORDS = {
    "let", "where", "summarize", "by", "extend", "project", "order", "sort", "asc", "desc", "union", "join", "kind",
    "inner", "innerunique", "leftouter", "rightouter", "fullouter", "leftanti", "leftsemi", "on", "and", "or",
    "not", "in", "has", "contains", "startswith", "endswith", "matches", "regex", "take", "top", "limit",
    "count", "sum", "sumif", "countif", "dcount", "min", "max", "minif", "maxif", "avg", "percentile",
    "percentiles", "arg_max", "arg_min", "make_list", "make_set", "take_any", "take_anyif", "tostring", "toint",
    "todouble", "tolower", "toupper", "toscalar", "totimespan", "iff", "case", "isempty", "isnotempty", "isnull",
    "isnotnull", "coalesce", "strcat", "extract", "trim", "bin", "ago", "now", "round", "format_datetime",
    "row_number", "prev", "pack", "true", "false", "null", "datetime", "timespan",
}  # fmt: skip
# Where a table (or a let-bound tabular name) can follow: `(` after these is a sub-query, not a call.
SOURCE_INTRODUCERS = {"in", "union", "toscalar", "join", "lookup"} | {
    "inner", "innerunique", "leftouter", "rightouter", "fullouter", "leftanti", "leftsemi", "rightanti", "rightsemi",
}  # fmt: skip
MESSAGE_OPERATORS = {"has", "contains", "startswith", "endswith", "has_cs", "contains_cs", "startswith_cs", "=="}
NAME_OPERATORS = {"==", "=~", "!=", "in", "in~", "!in"}


# ---------------------------------------------------------------------------------------------
# What the app emits, from its source
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Emitted:
    metrics: frozenset[str]  # metric names
    spans: frozenset[str]  # names of the internal spans (client spans are renamed by the exporter)
    metric_attributes: frozenset[str]
    span_attributes: frozenset[str]  # as set on the spans, before the exporter's filter
    event_attributes: frozenset[str]  # attributes of span events
    functions: frozenset[str]  # the function names, the host's `requests` rows' `name`
    log_texts: tuple[str, ...]  # format strings of every logger call in shared/
    event_types: frozenset[str]

    def names(self, table: str) -> set[str]:
        """Values the `name` column of `table` takes for what the app (and the host for it) sends."""
        return {
            "customMetrics": set(self.metrics),
            "dependencies": set(self.spans),
            "requests": set(self.functions),
        }.get(table, set())

    def attributes(self, table: str) -> set[str]:
        """customDimensions keys the app sets on the rows of `table`."""
        if table == "customMetrics":  # the metric exporter keeps every attribute
            return set(self.metric_attributes)
        if table == "dependencies":  # the trace exporter moves the standard ones to columns
            return {a for a in self.span_attributes if not _is_standard_attribute(a)}
        if table == "traces":  # span events
            return {a for a in self.event_attributes if not _is_standard_attribute(a)}
        return set()


def _module_constants(tree: ast.Module) -> dict[str, object]:
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return found


def _dict_keys(nodes) -> set[str]:
    return {
        key.value
        for node in nodes
        for d in ast.walk(node)
        if isinstance(d, ast.Dict)
        for key in d.keys
        if isinstance(key, ast.Constant) and isinstance(key.value, str)
    }


def _loop_values(tree: ast.Module, call: ast.Call, name: str, constants: dict) -> set[str]:
    """Values of loop variable `name` around `call`: the loop iterates over a module constant."""
    for loop in ast.walk(tree):
        if (
            isinstance(loop, ast.For)
            and isinstance(loop.target, ast.Name)
            and loop.target.id == name
            and isinstance(loop.iter, ast.Name)
            and any(n is call for n in ast.walk(loop))
        ):
            return set(constants[loop.iter.id])
    raise AssertionError(f"cannot tell the values of {name!r} at line {call.lineno}")


def _string_arg(tree, call: ast.Call, arg: ast.expr, constants: dict) -> set[str]:
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return {arg.value}
    if isinstance(arg, ast.Subscript) and isinstance(arg.value, ast.Name):  # ARM_SPANS[call]
        return set(constants[arg.value.id].values())
    if isinstance(arg, ast.Name):
        return _loop_values(tree, call, arg.id, constants)
    raise AssertionError(f"line {call.lineno}: a name this reader cannot resolve: {ast.dump(arg)}")


def _logger_texts(path: Path) -> list[str]:
    texts = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"debug", "info", "warning", "error", "exception", "critical"}
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "logger"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            texts.append(node.args[0].value)
    return texts


@cache
def emitted() -> Emitted:
    tree = ast.parse(TELEMETRY.read_text(encoding="utf-8"))
    constants = _module_constants(tree)
    metrics, spans, metric_attrs, span_attrs, event_attrs = set(), set(), set(), set(), set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        attr = node.func.attr
        if attr.startswith("create_") and attr != "create_task" and node.args:  # meter.create_counter(...)
            metrics |= _string_arg(tree, node, node.args[0], constants)
        elif attr in {"start_as_current_span", "start_span"}:
            client = any(
                k.arg == "kind" and isinstance(k.value, ast.Attribute) and k.value.attr == "CLIENT"
                for k in node.keywords
            )
            if not client:
                spans |= _string_arg(tree, node, node.args[0], constants)
        elif attr in {"add", "record"} and len(node.args) > 1:  # an instrument's measurement
            metric_attrs |= _dict_keys(node.args[1:])
        elif attr == "set_attribute":
            span_attrs |= _string_arg(tree, node, node.args[0], constants)
        elif attr == "add_event":
            event_attrs |= _dict_keys(node.args[1:])

    functions = set()
    for node in ast.walk(ast.parse(FUNCTION_APP.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "function_name":
            functions.add(node.args[0].value)

    log_texts = [text for path in sorted((ROOT / "shared").glob("*.py")) for text in _logger_texts(path)]
    log_texts.append("requestId=")  # the prefix of a request's lines (shared/logs.py, request_scope)
    schema = json.loads(EVENT_SCHEMA.read_text(encoding="utf-8"))
    return Emitted(
        frozenset(metrics),
        frozenset(spans),
        frozenset(metric_attrs),
        frozenset(span_attrs),
        frozenset(event_attrs),
        frozenset(functions),
        tuple(log_texts),
        frozenset(schema["properties"]["type"]["enum"]),
    )


def test_the_source_reader_finds_what_the_app_emits():
    e = emitted()
    assert {"checkpoint.requests", "checkpoint.duration", "checkpoint.operations.oldest_age"} <= e.metrics
    assert {"checkpoint.submit", "checkpoint.poll"} == e.spans
    assert {"outcome", "error.code", "kind", "http.response.status_code"} <= e.metric_attributes
    assert {"requestId", "correlationId", "status", "arm.call", "x-ms-request-id", "url.full"} <= e.span_attributes
    assert "url.full" not in e.attributes("dependencies") and "arm.call" in e.attributes("dependencies")
    assert e.event_attributes == {"error.code"}
    assert e.functions == {"submit_checkpoint_deletion", "poll_checkpoint_operations", "report_poisoned_requests"}
    assert any("the request landed in the poison queue" in t for t in e.log_texts)


# ---------------------------------------------------------------------------------------------
# A small KQL reader
# ---------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<comment>//[^\n]*)
    |(?P<str>@"[^"]*(?:""[^"]*)*"|@'[^']*'|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    |(?P<num>\d+(?:\.\d+)?(?:ms|microseconds?|ticks?|[dhms])?\b)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*~?)
    |(?P<op>==|!=|=~|!~|<=|>=|!in~?|!has|!contains|!startswith|[-+*/%<>=|(),;.\[\]{}:!@$])
    """,
    re.VERBOSE,
)
_DIMENSION = re.compile(r"""customDimensions\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*(?:"([^"]*)"|'([^']*)')\s*\]|\[)""")
_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


def _unquote(token: str) -> str:
    if token.startswith("@"):
        return token[2:-1]
    return re.sub(r"\\(.)", r"\1", token[1:-1])


def tokens(kql: str) -> list[tuple[str, str]]:
    out, i = [], 0
    while i < len(kql):
        m = _TOKEN.match(kql, i)
        if not m:
            raise ValueError(f"cannot read KQL at {kql[i : i + 30]!r}")
        if m.lastgroup not in ("ws", "comment"):
            out.append((m.lastgroup, m.group()))
        i = m.end()
    return out


@dataclass
class QueryFacts:
    tables: set[str]
    unknown_sources: set[str]
    names: set[str]  # string literals `name` is compared with
    messages: set[str]  # string literals `message` is matched against
    dimensions: set[str]  # customDimensions keys read
    unknown_identifiers: set[str]
    problems: list[str]


def read_query(kql: str) -> QueryFacts:
    """What a query reads; workbook parameters ({TimeRange}, {Name:format}) must be replaced first."""
    problems = []
    dimensions = set()
    for m in _DIMENSION.finditer(kql):
        key = m.group(1) or m.group(2) or m.group(3)
        if key is None:
            problems.append(f"customDimensions read with a computed key at {kql[m.start() : m.start() + 40]!r}")
        else:
            dimensions.add(key)
    toks = tokens(_DIMENSION.sub("customDimensions", kql))
    idents = [(i, t) for i, (k, t) in enumerate(toks) if k == "ident"]

    def kind(j):
        return toks[j][0] if 0 <= j < len(toks) else "end"

    def text(j):
        return toks[j][1] if 0 <= j < len(toks) else ""

    lets = {text(i + 1) for i, t in idents if t == "let" and text(i + 2) == "="}
    defined = {t for i, t in idents if text(i + 1) == "=" and kind(i + 1) == "op"}
    members = {i for i, t in idents if text(i - 1) == "." and kind(i - 1) == "op"}

    sources = set()
    for i, (k, t) in enumerate(toks):
        if k != "ident" or i in members:
            continue
        before, after = text(i - 1), text(i + 1)
        at_start = i == 0 or before == ";" or (before == "=" and text(i - 3) == "let")
        in_group = before == "(" and (kind(i - 2) != "ident" or text(i - 2) in SOURCE_INTRODUCERS)
        after_join = before in SOURCE_INTRODUCERS - {"in", "toscalar"} and after == "on"
        if (at_start or in_group) and after in {"|", ")", ";", ""} or after_join:
            sources.add(t)
        if t == "union":  # its bare operands, up to the first pipe (the parenthesised ones are groups)
            j, depth = i + 1, 0
            while j < len(toks) and not (depth == 0 and text(j) in {"|", ";"}):
                depth += {"(": 1, ")": -1}.get(text(j), 0)
                if depth == 0 and kind(j) == "ident" and text(j + 1) in {",", "|", ";", ""} and text(j - 1) != "=":
                    sources.add(text(j))
                j += 1
    tables = sources & TABLES
    unknown_sources = sources - TABLES - lets

    names, messages = set(), set()
    for i, t in idents:
        if t not in ("name", "message") or i in members:
            continue
        op = text(i + 1)
        literals = []
        if t == "name" and op in NAME_OPERATORS:
            j = i + 2
            if text(j) == "(":
                j += 1
                while kind(j) == "str" or text(j) == ",":
                    if kind(j) == "str":
                        literals.append(_unquote(text(j)))
                    j += 1
            elif kind(j) == "str":
                literals.append(_unquote(text(j)))
            names |= set(literals)
        elif t == "message" and op in MESSAGE_OPERATORS and kind(i + 2) == "str":
            messages.add(_unquote(text(i + 2)))

    columns = set().union(*(TABLE_COLUMNS[t] for t in tables), COMMON_COLUMNS) if tables else COMMON_COLUMNS
    known = KQL_WORDS | lets | defined | TABLES | columns
    if "join" in (t for _, t in idents):  # a join names the right side's copy of a column <name>1
        known |= {name + "1" for name in defined | columns}
    unknown = {t for i, t in idents if i not in members and t not in known}
    return QueryFacts(tables, unknown_sources, names, messages, dimensions, unknown, problems)


def message_is_logged(literal: str, e: Emitted) -> bool:
    """A text the app logs: part of a logger call's format, or of a line `event <type> ...`."""
    if any(literal in text for text in e.log_texts):
        return True
    return any(("event " + t).startswith(literal) or literal.startswith("event " + t) for t in e.event_types)


def query_problems(kql: str, e: Emitted | None = None) -> list[str]:
    """What is wrong with a query (parameters replaced) against what the app emits; empty = fine."""
    e = e or emitted()
    facts = read_query(kql)
    problems = list(facts.problems)
    if not facts.tables:
        problems.append("reads no table")
    if facts.unknown_sources:
        problems.append(f"reads tables that are not Application Insights tables: {sorted(facts.unknown_sources)}")
    allowed_names = set().union(*(e.names(t) for t in facts.tables)) if facts.tables else set()
    if facts.names - allowed_names:
        problems.append(f"filters `name` on values its tables never get: {sorted(facts.names - allowed_names)}")
    allowed_keys = set().union(*(e.attributes(t) for t in facts.tables)) if facts.tables else set()
    if facts.dimensions - allowed_keys:
        problems.append(f"reads customDimensions keys the app does not set: {sorted(facts.dimensions - allowed_keys)}")
    if facts.messages and "traces" not in facts.tables:
        problems.append("matches `message` without reading traces")
    for literal in sorted(facts.messages):
        if not message_is_logged(literal, e):
            problems.append(f"matches `message` against a text the app does not log: {literal!r}")
    if facts.unknown_identifiers:
        problems.append(f"names no column, definition or KQL word: {sorted(facts.unknown_identifiers)}")
    return problems


# ---------------------------------------------------------------------------------------------
# The workbook
# ---------------------------------------------------------------------------------------------


@cache
def workbook() -> dict:
    return json.loads(WORKBOOK_JSON.read_text(encoding="utf-8"))


def walk_items(items):
    for item in items:
        yield item
        if item.get("type") == 12:  # a group
            yield from walk_items(item["content"].get("items", []))


def workbook_parameters() -> dict[str, dict]:
    return {
        p["name"]: p
        for item in walk_items(workbook()["items"])
        if item["type"] == 9
        for p in item["content"]["parameters"]
    }


def query_items() -> list[dict]:
    return [item for item in walk_items(workbook()["items"]) if item["type"] == 3]


def substitute(kql: str) -> tuple[str, set[str]]:
    """The query as the workbook runs it, with stand-ins for its parameters; and the names used."""
    used = set()

    def value(m):
        name, fmt = m.group(1), m.group(2)
        used.add(name)
        if name == "TimeRange":
            return "1h" if fmt == "grain" else "> ago(1d)"
        return "x"

    return _PARAM.sub(value, kql), used


def test_workbook_document_structure():
    doc = workbook()
    assert doc["version"] == "Notebook/1.0"
    items = list(walk_items(doc["items"]))
    assert items and all("type" in item and "content" in item for item in items)
    names = [item.get("name") for item in items]
    assert all(names) and len(names) == len(set(names)), "every item has a name of its own"
    assert len(query_items()) >= 8
    for item in query_items():
        content = item["content"]
        assert content["version"] == "KqlItem/1.0", item["name"]
        assert content["query"].strip(), item["name"]
        assert content["queryType"] == 0 and content["resourceType"] == "microsoft.insights/components", item["name"]
        assert content.get("title"), item["name"]
        assert content.get("visualization"), item["name"]


def test_workbook_parameters_are_declared_and_used():
    declared = workbook_parameters()
    assert declared["TimeRange"]["type"] == 4  # time range picker
    assert declared["RequestId"]["type"] == 1  # text box
    used = set()
    for item in query_items():
        _, names = substitute(item["content"]["query"])
        _, in_title = substitute(item["content"]["title"])
        used |= names | in_title
        source = item["content"].get("timeContextFromParameter")
        assert source is None or source in declared, item["name"]
        visibility = item.get("conditionalVisibility")
        assert visibility is None or visibility["parameterName"] in declared, item["name"]
    assert used <= set(declared), sorted(used - set(declared))
    assert set(declared) <= used, f"declared but unused: {sorted(set(declared) - used)}"


def test_find_request_box_shows_one_requests_trace_and_log():
    uses = [item for item in query_items() if "{RequestId" in item["content"]["query"]]
    assert len(uses) == 1
    item = uses[0]
    assert item["conditionalVisibility"] == {"parameterName": "RequestId", "comparison": "isNotEqualTo", "value": ""}
    query = item["content"]["query"]
    # the value lands in a KQL string, escaped
    assert re.search(r'"\{RequestId:escapejson\}"', query)
    kql, _ = substitute(query)
    facts = read_query(kql)
    assert {"dependencies", "traces"} <= facts.tables
    assert {"requestId", "correlationId"} <= facts.dimensions
    assert "operation_ParentId" in kql  # the ARM calls and span events under the request's spans
    assert 'startswith "requestId="' in kql  # its log lines


@pytest.mark.parametrize("item", query_items(), ids=lambda item: item["name"])
def test_workbook_query_reads_only_what_the_app_emits(item):
    kql, _ = substitute(item["content"]["query"])
    assert query_problems(kql) == []


def test_workbook_has_the_charts_the_operators_asked_for():
    facts = {item["name"]: read_query(substitute(item["content"]["query"])[0]) for item in query_items()}
    everything = list(facts.values())
    metrics_read = set().union(*(f.names for f in everything))
    # deletions by outcome, durations, in flight and oldest, 429s and pacing, ARM calls
    assert {
        "checkpoint.requests",
        "checkpoint.duration",
        "checkpoint.operations.in_flight",
        "checkpoint.operations.oldest_age",
        "arm.throttled",
        "arm.pacing.delay",
        "arm.calls",
    } <= metrics_read
    # failures by error code, with the messages from the log
    assert any("error.code" in f.dimensions and "traces" in f.tables for f in everything)
    # percentiles of the time from submission to the terminal event
    assert any("percentile(" in item["content"]["query"] and "checkpoint.submit" in facts[item["name"]].names
               for item in query_items())  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The checks can fail
# ---------------------------------------------------------------------------------------------


def _some_query(fragment: str) -> str:
    for item in query_items():
        kql, _ = substitute(item["content"]["query"])
        if fragment in kql:
            return kql
    raise AssertionError(f"no workbook query has {fragment!r}")


@pytest.mark.parametrize(
    ("fragment", "changed", "complaint"),
    [
        ('name == "checkpoint.requests"', 'name == "checkpoint.request"', "filters `name`"),
        ('"checkpoint.operations.oldest_age"', '"checkpoint.operations.oldestAge"', "filters `name`"),
        ('name in ("checkpoint.submit", "checkpoint.poll")', 'name in ("checkpoint.submit", "checkpoint.pol")',
         "filters `name`"),
        ("customMetrics\n", "customMetric\n", "not Application Insights tables"),
        ('customDimensions["error.code"]', 'customDimensions["error_code"]', "customDimensions keys"),
        ("customDimensions.outcome", "customDimensions.requestId", "customDimensions keys"),
        ("sum(valueSum)", "sum(valueSums)", "names no column"),
        ('message has "event ScVmm.CheckpointDelete.Failed"', 'message has "event ScVmm.CheckpointDelete.Fail3d"',
         "does not log"),
        ("customDimensions.requestId", "customDimensions[field]", "computed key"),
    ],
)  # fmt: skip
def test_a_misspelled_name_is_caught(fragment, changed, complaint):
    kql = _some_query(fragment)
    assert query_problems(kql) == []
    wrong = kql.replace(fragment, changed)
    assert wrong != kql
    assert any(complaint in p for p in query_problems(wrong)), query_problems(wrong)


def test_a_metric_the_app_stops_emitting_is_caught():
    e = emitted()
    without = Emitted(
        e.metrics - {"arm.throttled"}, e.spans, e.metric_attributes, e.span_attributes, e.event_attributes,
        e.functions, e.log_texts, e.event_types,
    )  # fmt: skip
    kql = _some_query('"arm.throttled"')
    assert query_problems(kql, e) == []
    assert any("arm.throttled" in p for p in query_problems(kql, without))


def test_the_reader_finds_tables_in_every_position():
    facts = read_query(
        "let a = traces | project message;\n"
        "let n = toscalar(requests | count);\n"
        "union customEvents, (exceptions | take 1), a\n"
        "| join kind=leftouter dependencies on operation_Id\n"
        "| join kind=inner (customMetrics | take 1) on operation_Id\n"
        "| where operation_Id in (pageViews)"
    )
    assert facts.tables == {"traces", "requests", "customEvents", "exceptions", "dependencies", "customMetrics"}
    assert facts.unknown_sources == {"pageViews"}


# ---------------------------------------------------------------------------------------------
# The Bicep: the workbook, the alert rules, the custom role
# ---------------------------------------------------------------------------------------------


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def resource_blocks(text: str, type_prefix: str) -> dict[str, str]:
    """symbol -> body of each `resource symbol '<type>@<version>' = [if (...)] { ... }` of that type."""
    code = strip_comments(text)
    blocks = {}
    for m in re.finditer(rf"^resource\s+(\w+)\s+'{re.escape(type_prefix)}@[^']+'\s*=\s*(?:if\s*\(.*?\)\s*)?\{{", code,
                         re.MULTILINE):  # fmt: skip
        start = m.end() - 1
        blocks[m.group(1)] = code[start + 1 : _skip_balanced(code, start) - 1]
    return blocks


def prop(body: str, name: str) -> str | None:
    m = re.search(rf"^\s*{name}:\s*(.+?)\s*$", body, re.MULTILINE)
    return m.group(1) if m else None


def alert_queries() -> dict[str, str]:
    """rule symbol -> its KQL as written (a query given to format() keeps its {0})."""
    found = {}
    for symbol, body in resource_blocks(read(ALERTS_BICEP), "Microsoft.Insights/scheduledQueryRules").items():
        m = re.search(r"\bquery:\s*(?:format\()?'''(.*?)'''", body, re.DOTALL)
        assert m, f"{symbol}: the query is not a ''' string"
        found[symbol] = m.group(1)
    return found


def test_main_deploys_the_workbook_on_the_component():
    main = module_blocks(read(MAIN))
    path, body = main["workbook"]
    assert INFRA / path == WORKBOOK_BICEP
    assert "applicationInsightsName: monitoring.outputs.applicationInsightsName" in body
    code = strip_comments(read(WORKBOOK_BICEP))
    m = re.findall(r"loadTextContent\('([^']+)'\)", code)
    assert m and (WORKBOOK_BICEP.parent / m[0]).resolve() == WORKBOOK_JSON.resolve()
    [body] = resource_blocks(code, "Microsoft.Insights/workbooks").values()
    assert prop(body, "kind") == "'shared'"
    assert prop(body, "serializedData") == "loadTextContent('../workbook.json')"
    assert prop(body, "sourceId") == "toLower(applicationInsights.id)"
    assert "resource applicationInsights 'Microsoft.Insights/components@" in code
    assert prop(body, "name").startswith("guid(")  # a workbook's name is a GUID


def test_the_workbook_fits_loadTextContent():
    assert len(read(WORKBOOK_JSON)) < 131072  # Bicep's limit for loadTextContent


ALERT_PARAMETERS = {
    # rule symbol -> (threshold param, window param, severity param)
    "failureRate": ("failureRateThresholdPercent", "failureRateWindowSize", "failureRateSeverity"),
    "poisonedRequests": ("poisonedRequestsThreshold", "poisonedRequestsWindowSize", "poisonedRequestsSeverity"),
    "oldestOperation": ("oldestOperationAgeSeconds", "oldestOperationWindowSize", "oldestOperationSeverity"),
}


def test_the_three_alert_rules_are_parameterised():
    text = read(ALERTS_BICEP)
    declared = params(text)
    rules = resource_blocks(text, "Microsoft.Insights/scheduledQueryRules")
    assert set(rules) == set(ALERT_PARAMETERS)
    for symbol, (threshold, window, severity) in ALERT_PARAMETERS.items():
        body = rules[symbol]
        assert prop(body, "kind") == "'LogAlert'", symbol
        assert prop(body, "threshold") == threshold, symbol
        assert prop(body, "windowSize") == window, symbol
        assert prop(body, "severity") == severity, symbol
        assert prop(body, "enabled") == "enabled", symbol
        assert prop(body, "evaluationFrequency") == "evaluationFrequency", symbol
        assert prop(body, "actions") == "actions", symbol
        assert re.search(r"scopes:\s*\[\s*applicationInsights\.id\s*\]", body), symbol
        assert prop(body, "metricMeasureColumn") == "'AggregatedValue'", symbol
        assert {threshold, window, severity} <= set(declared), symbol
    for name in ("enabled", "actionGroupId", "evaluationFrequency"):
        assert name in declared
    assert declared["actionGroupId"] == "''"  # optional
    assert re.search(r"actionGroups:\s*empty\(actionGroupId\)\s*\?\s*\[\]\s*:\s*\[\s*actionGroupId\s*\]",
                     strip_comments(text))  # fmt: skip


def test_main_passes_every_alert_parameter_from_its_own_parameter():
    main = read(MAIN)
    path, body = module_blocks(main)["alerts"]
    assert INFRA / path == ALERTS_BICEP
    given = module_params(body)
    declared_main = params(main)
    alert_params = params(read(ALERTS_BICEP))
    assert set(alert_params) <= set(given), sorted(set(alert_params) - set(given))
    for name in alert_params:
        if name in {"applicationInsightsName", "location", "tags", "namePrefix"}:
            continue
        assert given[name] in declared_main, f"{name} = {given[name]} is not a parameter of main.bicep"
    assert given["applicationInsightsName"] == "monitoring.outputs.applicationInsightsName"
    assert declared_main["alertsEnabled"] == "true"
    assert declared_main["alertActionGroupId"] == "''"


@pytest.mark.parametrize("symbol", sorted(ALERT_PARAMETERS))
def test_alert_query_reads_only_what_the_app_emits(symbol):
    kql = alert_queries()[symbol].replace("{0}", "5")
    assert query_problems(kql) == []
    assert "AggregatedValue" in kql


def test_alert_queries_watch_what_they_say():
    queries = {symbol: read_query(kql.replace("{0}", "5")) for symbol, kql in alert_queries().items()}
    assert queries["failureRate"].names == {"checkpoint.requests"}
    assert '"failed"' in alert_queries()["failureRate"] and "outcome" in queries["failureRate"].dimensions
    assert queries["poisonedRequests"].messages == {"the request landed in the poison queue"}
    assert queries["oldestOperation"].names == {"checkpoint.operations.oldest_age"}
    failure_rate = resource_blocks(read(ALERTS_BICEP), "Microsoft.Insights/scheduledQueryRules")["failureRate"]
    assert "''', failureRateMinimumRequests)" in failure_rate  # {0}


def test_a_misspelled_alert_log_text_is_caught():
    kql = alert_queries()["poisonedRequests"]
    wrong = kql.replace("poison queue", "poisson queue")
    assert wrong != kql
    assert any("does not log" in p for p in query_problems(wrong))


# ---------------------------------------------------------------------------------------------
# Least privilege: the custom SCVMM role
# ---------------------------------------------------------------------------------------------


def role_actions(text: str) -> list[str]:
    m = re.search(r"^var actions = \[(.*?)\]", strip_comments(text), re.MULTILINE | re.DOTALL)
    assert m, "var actions = [...] not found"
    return [string_literal(item) for item in split_items(m.group(1))]


def documented_actions() -> set[str]:
    text = read(DEPLOY)
    m = re.search(r"^### A custom role for the SCVMM machines\n(.*?)(?=^#)", text, re.MULTILINE | re.DOTALL)
    assert m, "docs/deploy.md has no section 'A custom role for the SCVMM machines'"
    return set(re.findall(r"`(Microsoft\.ScVmm/[A-Za-z/]+)`", m.group(1)))


def test_the_custom_role_has_exactly_the_documented_actions():
    actions = role_actions(read(ROLE_BICEP))
    assert len(actions) == len(set(actions))
    assert set(actions) == SCVMM_ACTIONS
    assert documented_actions() == SCVMM_ACTIONS
    code = strip_comments(read(ROLE_BICEP))
    assert re.search(r"^targetScope = 'subscription'$", code, re.MULTILINE)
    [body] = resource_blocks(code, "Microsoft.Authorization/roleDefinitions").values()
    assert re.search(r"assignableScopes:\s*\[\s*subscription\(\)\.id\s*\]", body)
    assert re.search(r"actions:\s*actions\s*$", body, re.MULTILINE)
    assert re.search(r"notActions:\s*\[\]", body) and re.search(r"dataActions:\s*\[\]", body)


def test_a_role_with_an_extra_action_is_caught():
    text = read(ROLE_BICEP).replace(
        "  'Microsoft.ScVmm/virtualMachineInstances/read'\n",
        "  'Microsoft.ScVmm/virtualMachineInstances/read'\n  'Microsoft.ScVmm/virtualMachineInstances/*'\n",
    )
    assert set(role_actions(text)) != SCVMM_ACTIONS


def test_the_custom_role_is_behind_a_parameter_and_replaces_the_built_in_one():
    main = read(MAIN)
    code = strip_comments(main)
    assert params(main)["scvmmCustomRole"] == "false"
    assert re.search(
        r"^module scvmmCustomRoleDefinition 'app/scvmm-role-definition\.bicep' = if \(scvmmCustomRole\) \{",
        code,
        re.MULTILINE,
    )
    assert "scope: subscription(scvmmSubscription)" in module_blocks(main)["scvmmCustomRoleDefinition"][1]
    assert re.search(
        r"^var scvmmRoleDefinitionId = scvmmCustomRole \? scvmmCustomRoleDefinition\.outputs\.roleDefinitionId"
        r" : scvmmVmContributorRoleId$",
        code,
        re.MULTILINE,
    )
    for symbol in ("scvmmRoleResourceGroup", "scvmmRoleSubscription"):
        assert "roleDefinitionId: scvmmRoleDefinitionId" in module_blocks(main)[symbol][1], symbol


# ---------------------------------------------------------------------------------------------
# The docs say it
# ---------------------------------------------------------------------------------------------


def kusto_blocks(path: Path) -> list[str]:
    return [block.strip() for block in re.findall(r"^```kusto\n(.*?)^```", read(path), re.MULTILINE | re.DOTALL)]


def test_observability_docs_show_every_workbook_and_alert_query():
    blocks = kusto_blocks(OBSERVABILITY)
    for item in query_items():
        assert item["content"]["query"].strip() in blocks, f"{item['name']}: its KQL is not in {OBSERVABILITY.name}"
        assert item["content"]["title"] in read(OBSERVABILITY), item["name"]
    for symbol, kql in alert_queries().items():
        assert kql.strip() in blocks, f"alert {symbol}: its KQL is not in {OBSERVABILITY.name}"


def test_deploy_docs_name_every_new_parameter():
    text = read(DEPLOY)
    main = params(read(MAIN))
    new = [p for p in main if p.startswith("alert") or p.startswith("scvmmCustomRole")]
    assert len(new) >= 14
    for name in new:
        assert f"`{name}`" in text, name
    given = json.loads(read(PARAMETERS))["parameters"]
    assert given["scvmmCustomRole"]["value"] == "${SCVMM_CUSTOM_ROLE=false}"
    assert given["alertsEnabled"]["value"] == "${ALERTS_ENABLED=true}"
    assert given["alertActionGroupId"]["value"] == "${ALERT_ACTION_GROUP_ID}"
