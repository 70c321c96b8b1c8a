"""A small Bicep reader: strings (with ${} interpolation), comments, brackets.

The Bicep compiler is not available here; tests/contract/test_infra.py reads the templates in
infra/ with this instead. It is strict on form: what it does not understand raises BicepReadError.
"""

from __future__ import annotations

import re


class BicepReadError(ValueError):
    """The text is not in a form this reader understands (or is not valid Bicep)."""


_CLOSE = {"(": ")", "[": "]", "{": "}"}


def _skip_string(text: str, i: int, interpolations: list[str] | None = None) -> int:
    """text[i] opens a string; the index just past it. Collects ${...} contents if asked."""
    if text.startswith("'''", i):  # multi-line string: no escapes, no interpolation
        end = text.find("'''", i + 3)
        if end < 0:
            raise BicepReadError(f"unterminated multi-line string at {i}")
        return end + 3
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
        elif c == "'":
            return j + 1
        elif text.startswith("${", j):
            end = _skip_balanced(text, j + 1)
            if interpolations is not None:
                interpolations.append(text[j + 2 : end - 1])
            j = end
        elif c == "\n":
            break
        else:
            j += 1
    raise BicepReadError(f"unterminated string at {i}: {text[i : i + 40]!r}")


def _skip_balanced(text: str, i: int) -> int:
    """text[i] is an opening bracket; the index just past its matching closing bracket."""
    stack = [_CLOSE[text[i]]]
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == "'":
            j = _skip_string(text, j)
            continue
        if c in _CLOSE:
            stack.append(_CLOSE[c])
        elif c in ")]}":
            expected = stack.pop()
            if c != expected:
                raise BicepReadError(f"{c!r} at {j} closes a bracket that wants {expected!r}")
            if not stack:
                return j + 1
        j += 1
    raise BicepReadError(f"bracket at {i} is never closed")


def strip_comments(text: str) -> str:
    """The text without // and /* */ comments (newlines kept), strings untouched."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "'":
            j = _skip_string(text, i)
            out.append(text[i:j])
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise BicepReadError(f"unterminated comment at {i}")
            out.append("\n" * text.count("\n", i, j))
            i = j + 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def check_balanced(text: str) -> None:
    """Raises BicepReadError unless every bracket and string in the (comment-free) text closes."""
    i = 0
    while i < len(text):
        c = text[i]
        if c == "'":
            i = _skip_string(text, i)
        elif c in _CLOSE:
            i = _skip_balanced(text, i)
        elif c in ")]}":
            raise BicepReadError(f"{c!r} at {i} closes nothing")
        else:
            i += 1


def split_items(body: str) -> list[str]:
    """Top-level items of an object or array body (separated by newlines or commas)."""
    items, start, j = [], 0, 0
    while j < len(body):
        c = body[j]
        if c == "'":
            j = _skip_string(body, j)
            continue
        if c in _CLOSE:
            j = _skip_balanced(body, j)
            continue
        if c in "\n,":
            items.append(body[start:j])
            start = j + 1
        j += 1
    items.append(body[start:])
    return [item.strip() for item in items if item.strip()]


def _object_properties(body: str) -> dict[str, str]:
    """`key: value` items of an object literal body; a repeated key is an error."""
    props: dict[str, str] = {}
    for item in split_items(body):
        m = re.fullmatch(r"(\w+|'[^'$]*')\s*:\s*(.+)", item, re.DOTALL)
        if not m:
            raise BicepReadError(f"not a `key: value` property: {item!r}")
        key = m.group(1).strip("'")
        if key in props:
            raise BicepReadError(f"property {key!r} given twice")
        props[key] = m.group(2).strip()
    return props


def string_literal(expr: str) -> str | None:
    """The value of a plain string literal ('...' without interpolation), else None."""
    m = re.fullmatch(r"'((?:[^'\\$]|\\.|\$(?!\{))*)'", expr.strip())
    return None if m is None else re.sub(r"\\(.)", r"\1", m.group(1))


def identifiers(expr: str) -> set[str]:
    """Root names an expression refers to (not members, not function names, not string text)."""
    names: set[str] = set()
    code: list[str] = []
    i = 0
    while i < len(expr):
        if expr[i] == "'":
            inner: list[str] = []
            i = _skip_string(expr, i, inner)
            for part in inner:
                names |= identifiers(part)
            code.append(" ")
        else:
            code.append(expr[i])
            i += 1
    text = "".join(code)
    for m in re.finditer(r"(?<![\w.])([A-Za-z_]\w*)\b(?!\s*\()", text):
        if m.group(1) not in {"true", "false", "null"}:
            names.add(m.group(1))
    return names


def declared_names(text: str) -> set[str]:
    """Names declared at the top of a Bicep file: params, vars, resources, modules."""
    return set(re.findall(r"^(?:param|var|resource|module)\s+(\w+)\b", strip_comments(text), re.MULTILINE))


def params(text: str) -> dict[str, str | None]:
    """A Bicep file's parameters: name -> default expression (None when it has none)."""
    found = {}
    for m in re.finditer(r"^param\s+(\w+)\s+\w+(?:\s*=\s*(.+?))?\s*$", strip_comments(text), re.MULTILINE):
        found[m.group(1)] = m.group(2)
    return found


def outputs(text: str) -> set[str]:
    return set(re.findall(r"^output\s+(\w+)\b", strip_comments(text), re.MULTILINE))


def app_settings(text: str) -> list[tuple[str, str]]:
    """(name, value expression) of each entry of the site's siteConfig.appSettings array.

    Strict on form, so that a setting cannot hide from it: exactly one `appSettings:` array, each
    entry an object literal with exactly `name` (a plain string literal) and `value`; no
    Microsoft.Web/sites/config 'appsettings' resource (which this reader would not see).
    """
    code = strip_comments(text)
    if re.search(r"Microsoft\.Web/sites/config|'config'|name\s*:\s*'appsettings'", code, re.IGNORECASE):
        raise BicepReadError(
            "app settings set through a sites/config resource: this reader only reads siteConfig.appSettings"
        )
    found = list(re.finditer(r"\bappSettings\s*:\s*", code))
    if len(found) != 1:
        raise BicepReadError(f"expected exactly one `appSettings:` property, found {len(found)}")
    start = found[0].end()
    if code[start : start + 1] != "[":
        raise BicepReadError(f"appSettings is not an array literal: {code[start : start + 40]!r}")
    end = _skip_balanced(code, start)
    body = code[start + 1 : end - 1]
    entries = []
    j = 0
    while j < len(body):
        c = body[j]
        if c.isspace() or c == ",":
            j += 1
            continue
        if c != "{":
            raise BicepReadError(f"appSettings entry is not an object literal: {body[j : j + 60]!r}")
        k = _skip_balanced(body, j)
        props = _object_properties(body[j + 1 : k - 1])
        if set(props) != {"name", "value"}:
            raise BicepReadError(f"appSettings entry must have exactly `name` and `value`, has {sorted(props)}")
        name = string_literal(props["name"])
        if name is None:
            raise BicepReadError(f"appSettings name must be a plain string literal, is {props['name']!r}")
        entries.append((name, props["value"]))
        j = k
    return entries


def module_blocks(text: str) -> dict[str, tuple[str, str]]:
    """module symbol -> (path, body) for each `module x 'path' = [if (...)] { ... }`."""
    code = strip_comments(text)
    blocks = {}
    for m in re.finditer(r"^module\s+(\w+)\s+'([^']+)'\s*=\s*", code, re.MULTILINE):
        i = m.end()
        if code.startswith("if", i):
            i = _skip_balanced(code, code.index("(", i))
            while code[i].isspace():
                i += 1
        if code[i] != "{":
            raise BicepReadError(f"module {m.group(1)}: expected '{{' at {code[i : i + 30]!r}")
        blocks[m.group(1)] = (m.group(2), code[i + 1 : _skip_balanced(code, i) - 1])
    return blocks


def module_params(body: str) -> dict[str, str]:
    m = re.search(r"^\s*params\s*:\s*\{", body, re.MULTILINE)
    if not m:
        return {}
    start = m.end() - 1
    return _object_properties(body[start + 1 : _skip_balanced(body, start) - 1])
