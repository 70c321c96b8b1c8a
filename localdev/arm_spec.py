"""What the ARM emulator takes from Microsoft's OpenAPI document of Microsoft.ScVmm (the spec
folder: ``scvmm-2024-06-01.json`` beside ``common-types-types.json``): the paths of the
deleteCheckpoint action and of the VM instance GET, the api-version, and schema validators.
Without the spec folder, built-in equivalents are used."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import jsonschema

__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_INSTANCE_PATH_TEMPLATE",
    "DEFAULT_PATH_TEMPLATE",
    "SpecRules",
    "load_spec_rules",
]

DEFAULT_API_VERSION = "2024-06-01"
DEFAULT_PATH_TEMPLATE = "/{resourceUri}/providers/Microsoft.ScVmm/virtualMachineInstances/default/deleteCheckpoint"
DEFAULT_INSTANCE_PATH_TEMPLATE = "/{resourceUri}/providers/Microsoft.ScVmm/virtualMachineInstances/default"
DEFAULT_BODY_SCHEMA: dict = {
    "type": "object",
    "properties": {"id": {"type": "string"}},
}
SPEC_FILE = "scvmm-2024-06-01.json"
COMMON_TYPES_FILE = "common-types-types.json"
OPERATION_ID = "VirtualMachineInstances_DeleteCheckpoint"
INSTANCE_OPERATION_ID = "VirtualMachineInstances_Get"
BODY_DEFINITION = "VirtualMachineDeleteCheckpoint"


@dataclass
class SpecRules:
    """Path templates, api-version and body validator of the deleteCheckpoint operation (and the
    path of the VM instance GET)."""

    path_template: str
    api_version: str
    body_validator: Any  # a jsonschema validator
    body_required: bool = True
    from_spec: bool = False
    validator_for: Callable[[str], Any] | None = field(default=None, repr=False)
    instance_path_template: str = DEFAULT_INSTANCE_PATH_TEMPLATE

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


def _builtin_rules() -> SpecRules:
    validator = jsonschema.Draft4Validator(DEFAULT_BODY_SCHEMA)
    return SpecRules(DEFAULT_PATH_TEMPLATE, DEFAULT_API_VERSION, validator, True, False)


def _find_operation(spec: dict, method: str, operation_id: str) -> tuple[str, dict] | None:
    for path, item in spec.get("paths", {}).items():
        op = item.get(method) if isinstance(item, dict) else None
        if op and op.get("operationId") == operation_id:
            return path, op
    return None


def load_spec_rules(spec_dir: str | Path | None) -> SpecRules:
    """Rules from the spec folder, or the built-in ones if it is absent."""
    if spec_dir is None:
        return _builtin_rules()
    spec_dir = Path(spec_dir)
    spec_path = spec_dir / SPEC_FILE
    if not spec_path.is_file():
        return _builtin_rules()

    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    spec_uri = "https://spec.local/specification/scvmm/resource-manager/Microsoft.ScVmm/stable/2024-06-01/" + SPEC_FILE

    def retrieve(uri: str) -> Resource:
        path = urlsplit(uri).path
        if path.endswith("common-types/resource-management/v5/types.json"):
            target = spec_dir / COMMON_TYPES_FILE
        else:
            target = spec_dir / Path(path).name
        return Resource(json.loads(target.read_text(encoding="utf-8")), specification=DRAFT4)

    registry = Registry(retrieve=retrieve).with_resource(spec_uri, Resource(spec, specification=DRAFT4))

    found = _find_operation(spec, "post", OPERATION_ID)
    if found is None:
        raise ValueError(f"{spec_path}: operation {OPERATION_ID} not found")
    template, post = found
    body_ref = None
    body_required = True
    for param in post.get("parameters", []):
        if param.get("in") == "body":
            body_ref = (param.get("schema") or {}).get("$ref")
            body_required = bool(param.get("required", False))
    instance = _find_operation(spec, "get", INSTANCE_OPERATION_ID)
    instance_template = instance[0] if instance else DEFAULT_INSTANCE_PATH_TEMPLATE
    api_version = spec.get("info", {}).get("version") or DEFAULT_API_VERSION
    body_ref = body_ref or f"#/definitions/{BODY_DEFINITION}"

    def validator_for(ref: str) -> Any:
        """Validator for a definition name (``"ErrorResponse"``) or a $ref as written in the spec."""
        if "#" not in ref and "/" not in ref:
            spec_defs = spec.get("definitions", {})
            if ref in spec_defs:
                ref = f"#/definitions/{ref}"
            else:
                ref = f"../../../../../common-types/resource-management/v5/types.json#/definitions/{ref}"
        return jsonschema.Draft4Validator({"$ref": urljoin(spec_uri, ref)}, registry=registry)

    body_validator = validator_for(body_ref)
    return SpecRules(template, api_version, body_validator, body_required, True, validator_for, instance_template)
