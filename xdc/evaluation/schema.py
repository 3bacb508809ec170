"""The result document's JSON Schema (xdc/schemas/eval_result.schema.json) and a validator for it.

`jsonschema` is used when installed; otherwise a small validator covering the keywords the schema uses (type,
const, enum, required, properties, additionalProperties, items, minimum, maximum, pattern, $ref to $defs).
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_ID = "xdc-eval-result/1"

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


@cache
def result_schema() -> dict[str, Any]:
    return json.loads(resources.files("xdc").joinpath("schemas/eval_result.schema.json").read_text())


def validate_record(record: dict[str, Any]) -> None:
    """Raise ValueError naming the first place where `record` breaks the result schema."""
    schema = result_schema()
    try:
        import jsonschema
    except ImportError:
        _check(record, schema, schema, "record")
        return
    try:
        jsonschema.validate(record, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "record"
        raise ValueError(f"{where}: {exc.message}") from None


def _check(value: Any, node: dict[str, Any], root: dict[str, Any], where: str) -> None:
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        _check(value, root["$defs"][name], root, where)
    if "const" in node and value != node["const"]:
        raise ValueError(f"{where}: must be {node['const']!r}, got {value!r}")
    if "enum" in node and value not in node["enum"]:
        raise ValueError(f"{where}: must be one of {node['enum']}, got {value!r}")
    if "type" in node:
        kinds = node["type"] if isinstance(node["type"], list) else [node["type"]]
        if not any(_TYPES[kind](value) for kind in kinds):
            raise ValueError(f"{where}: must be {' or '.join(kinds)}, got {type(value).__name__}")
    if _TYPES["number"](value):
        if "minimum" in node and value < node["minimum"]:
            raise ValueError(f"{where}: {value} is below the minimum {node['minimum']}")
        if "maximum" in node and value > node["maximum"]:
            raise ValueError(f"{where}: {value} is above the maximum {node['maximum']}")
    if isinstance(value, str) and "pattern" in node and not re.search(node["pattern"], value):
        raise ValueError(f"{where}: {value!r} does not match {node['pattern']}")
    if isinstance(value, dict):
        _check_object(value, node, root, where)
    if isinstance(value, list) and "items" in node:
        for index, item in enumerate(value):
            _check(item, node["items"], root, f"{where}[{index}]")


def _check_object(value: dict, node: dict[str, Any], root: dict[str, Any], where: str) -> None:
    for key in node.get("required", ()):
        if key not in value:
            raise ValueError(f"{where}: {key!r} is required")
    properties = node.get("properties", {})
    extra = node.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            _check(item, properties[key], root, f"{where}.{key}")
        elif extra is False:
            raise ValueError(f"{where}: unexpected key {key!r}")
        elif isinstance(extra, dict):
            _check(item, extra, root, f"{where}.{key}")
