"""The Logic Apps expression language, parsed (tests/support/workflow_runs.py evaluates it)."""

import re


class WorkflowError(Exception):
    """What fails an action in Logic Apps: a missing property read without ?, a bad argument, invalid JSON."""


_TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|(-?\d+(?:\.\d+)?)|([A-Za-z_$][\w$]*)|(\?\[|[()\[\],.}]))")


def _tokens(text: str, start: int):
    """(kind, value, end) from `start`; kind is str, num, name or the punctuation itself."""
    pos = start
    while pos < len(text):
        if text[pos:].strip() == "":
            return
        match = _TOKEN.match(text, pos)
        if not match:
            raise NotImplementedError(f"cannot read the expression at {text[pos:]!r}")
        string, number, name, punct = match.groups()
        pos = match.end()
        if string is not None:
            yield "str", string[1:-1].replace("''", "'"), pos
        elif number is not None:
            yield "num", float(number) if "." in number else int(number), pos
        elif name is not None:
            yield "name", name, pos
        else:
            yield punct, punct, pos


class ExpressionParser:
    """Parses one expression from text[start:], reading tokens only as far as it needs: `end` is where
    the expression stopped (at a closing } of @{...}, or the end of the text)."""

    def __init__(self, text: str, start: int = 0):
        self.source = _tokens(text, start)
        self.unread = True  # the next token is read when asked for, never beyond the expression's end
        self.next = None
        self.last_end = start

    def peek(self):
        if self.unread:
            self.next, self.unread = next(self.source, None), False
        return self.next[0] if self.next else None

    def take(self, kind=None):
        self.peek()
        token = self.next
        if token is None or (kind is not None and token[0] != kind):
            raise NotImplementedError(f"expected {kind!r}, found {token!r}")
        self.last_end, self.unread = token[2], True
        return token

    def expression(self):
        kind, value, _ = self.take()
        if kind in ("str", "num"):
            node = ("lit", value)
        elif kind == "name" and value in ("true", "false", "null"):
            node = ("lit", {"true": True, "false": False, "null": None}[value])
        elif kind == "name":
            self.take("(")
            args = []
            while self.peek() != ")":
                args.append(self.expression())
                if self.peek() == ",":
                    self.take(",")
            self.take(")")
            node = ("call", value, args)
        else:
            raise NotImplementedError(f"unexpected {value!r}")
        while self.peek() in ("[", "?[", "."):
            kind = self.take()[0]
            if kind == ".":
                node = ("get", node, ("lit", self.take("name")[1]), False)
            else:
                key = self.expression()
                self.take("]")
                node = ("get", node, key, kind == "?[")
        return node

    def end(self) -> int:
        return self.last_end
