"""The rules the ARM emulator checks requests by, from the project's own record of the operation
(``arm_operation.json`` beside this module): the paths of the deleteCheckpoint action and of the VM
instance GET, the api-version, whether the body is required, and schema validators of the record's
definitions (``VirtualMachineDeleteCheckpoint``, ``ErrorResponse``, ``VirtualMachineInstance`` ...).

The record is ours, written from Microsoft's OpenAPI document of Microsoft.ScVmm;
tests/contract/test_spec_drift.py compares the two whenever that document is at hand."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

__all__ = ["RECORD_FILE", "SpecRules", "load_record", "load_spec_rules"]

RECORD_FILE = Path(__file__).with_name("arm_operation.json")


def load_record() -> dict:
    """The operation record (a fresh copy: callers may change it)."""
    return json.loads(RECORD_FILE.read_text(encoding="utf-8"))


@dataclass
class SpecRules:
    """Path templates, api-version and schemas of the deleteCheckpoint operation and the VM
    instance GET."""

    path_template: str
    api_version: str
    body_required: bool
    instance_path_template: str
    definitions: dict = field(repr=False)
    body_definition: str = "VirtualMachineDeleteCheckpoint"
    _validators: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def body_validator(self) -> Any:
        """Validator of the deleteCheckpoint request body."""
        return self.validator_for(self.body_definition)

    def validator_for(self, name: str) -> Any:
        """Validator for a definition of the record (``"ErrorResponse"``, ``"VirtualMachineInstance"``)."""
        if name not in self._validators:
            if name not in self.definitions:
                raise KeyError(f"{name!r} is not a definition of {RECORD_FILE.name}")
            schema = {"$ref": f"#/definitions/{name}", "definitions": self.definitions}
            self._validators[name] = jsonschema.Draft4Validator(schema)
        return self._validators[name]

    def path_regex(self, template: str | None = None) -> re.Pattern:
        """Regex of ``template`` (default: the deleteCheckpoint path) with a ``resourceUri`` group."""
        parts = re.split(r"(\{[^}]+\})", template or self.path_template)
        out = []
        for p in parts:
            if p == "{resourceUri}":
                out.append(r"(?P<resourceUri>.+?)")
            elif p.startswith("{"):
                out.append(r"[^/]+")
            else:
                out.append(re.escape(p))
        return re.compile("^" + "".join(out) + "$", re.IGNORECASE)


def load_spec_rules() -> SpecRules:
    """The rules of the operation record."""
    record = load_record()
    submit, instance = record["deleteCheckpoint"], record["instanceGet"]
    return SpecRules(
        path_template=submit["path"],
        api_version=record["apiVersion"],
        body_required=bool(submit["body"]["required"]),
        instance_path_template=instance["path"],
        definitions=record["definitions"],
        body_definition=submit["body"]["definition"],
    )
