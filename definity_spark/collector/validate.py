"""Validation of reporting payloads against the Definity API contract.

The local collector is the reference every other room tests against, so it is strict
about what the contract (``shared/definity-api.md``) requires and lenient about what it
does not mention: a required field that is missing or has the wrong JSON type is a
``PayloadError`` whose message names the field (``"tf_id must be an integer, got
string"``); an unknown extra field is accepted and stored as sent.

Pure functions, no I/O: the HTTP handler and the ``--load`` importer both call
``parse_body`` + ``validate``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from definity_spark import wire

TASK_STATUSES = ("start", "end")
# The deepest nesting of arrays/objects a body may have: the contract's bodies go 4 deep
# (metrics -> [ -> { -> value); a hostile body 100000 deep would exhaust the recursion
# limit of the JSON decoder (a 500) or of anything that serialises it again.
MAX_DEPTH = 32
TF_STATUSES = ("end",)


class PayloadError(ValueError):
    """A payload that breaks the contract; ``str(err)`` is the message sent back."""


def _type_name(value: Any) -> str:
    # JSON's names, not Python's: the sender thinks in JSON.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN/Infinity by default; they are not JSON.
    raise PayloadError(f"body is not valid JSON: {name} is not a JSON value")


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode a request body into a JSON object, or raise ``PayloadError``."""
    if not raw:
        raise PayloadError("body is empty: expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not UTF-8: {exc}") from None
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except PayloadError:
        raise
    except RecursionError:
        raise PayloadError(f"body is nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise PayloadError(f"body must be a JSON object, got {_type_name(body)}")
    if _depth_exceeds(body, MAX_DEPTH):
        raise PayloadError(f"body is nested too deeply (at most {MAX_DEPTH} levels)")
    return body


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True when arrays/objects nest deeper than ``limit`` (checked without recursion: what
    is stored is serialised again, and that must not hit the interpreter's limit)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return False


def _field(body: Mapping[str, Any], name: str, path: str = "") -> Any:
    if name not in body:
        raise PayloadError(f"missing required field '{path}{name}'")
    return body[name]


def _string(body: Mapping[str, Any], name: str, path: str = "", required: bool = True,
            non_empty: bool = True) -> None:
    if not required and name not in body:
        return
    value = _field(body, name, path)
    if not isinstance(value, str):
        raise PayloadError(f"'{path}{name}' must be a string, got {_type_name(value)}")
    if non_empty and not value.strip():
        raise PayloadError(f"'{path}{name}' must be a non-empty string")


def _integer(body: Mapping[str, Any], name: str, path: str = "", required: bool = True) -> None:
    if not required and name not in body:
        return
    value = _field(body, name, path)
    # bool is an int in Python but not an integer in JSON; 1.0 is a number, not an integer.
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"'{path}{name}' must be an integer, got {_type_name(value)}")


def _status(body: Mapping[str, Any], allowed: tuple) -> str:
    _string(body, "status")
    status = body["status"]
    if status not in allowed:
        expected = " or ".join(f'"{s}"' for s in allowed)
        raise PayloadError(f"'status' must be {expected}, got {json.dumps(status)}")
    return status


def validate_task(body: Mapping[str, Any]) -> None:
    _string(body, "task_id")
    status = _status(body, TASK_STATUSES)
    if status == "start":
        for name in ("app_name", "task_name", "task_type"):
            if name not in body:
                raise PayloadError(f"missing required field '{name}' (required when status is"
                                   f' "start")')
            _string(body, name)
    else:
        # The end call needs only task_id and status; anything else given must still be typed.
        for name in ("app_name", "task_name", "task_type"):
            _string(body, name, required=False)
    _string(body, "env", required=False, non_empty=False)
    _string(body, "app_pit", required=False, non_empty=False)
    if "tags" in body:
        tags = body["tags"]
        if not isinstance(tags, dict):
            raise PayloadError(f"'tags' must be an object of string values, got {_type_name(tags)}")
        for key, value in tags.items():
            if not isinstance(value, str):
                raise PayloadError(f"'tags.{key}' must be a string, got {_type_name(value)}")


def validate_tf(body: Mapping[str, Any]) -> None:
    _string(body, "task_id")
    _integer(body, "tf_id")
    _status(body, TF_STATUSES)
    _string(body, "query_str", required=False, non_empty=False)
    inputs = _field(body, "input_datasets")
    if not isinstance(inputs, dict):
        raise PayloadError("'input_datasets' must be an object (dataset name -> {\"columns\": "
                           f"[...]}}), got {_type_name(inputs)}")
    for name, spec in inputs.items():
        if not name.strip():
            raise PayloadError("'input_datasets' has an empty dataset name")
        where = f"input_datasets.{name}"
        if not isinstance(spec, dict):
            raise PayloadError(f"'{where}' must be an object, got {_type_name(spec)}")
        if "columns" in spec:
            columns = spec["columns"]
            if not isinstance(columns, list):
                raise PayloadError(f"'{where}.columns' must be an array of strings, got "
                                   f"{_type_name(columns)}")
            for i, column in enumerate(columns):
                if not isinstance(column, str):
                    raise PayloadError(f"'{where}.columns[{i}]' must be a string, got "
                                       f"{_type_name(column)}")
    output = _field(body, "output")
    if not isinstance(output, dict):
        raise PayloadError("'output' must be an object {\"name\": ...}, got "
                           f"{_type_name(output)}")
    _string(output, "name", path="output.")
    if "column_lineage" in body:
        validate_column_lineage(body["column_lineage"])


def _column_map(value: Any, where: str) -> None:
    """``{dataset: [column, ...]}``."""
    if not isinstance(value, dict):
        raise PayloadError(f"'{where}' must be an object (dataset -> [columns]), got "
                           f"{_type_name(value)}")
    for name, cols in value.items():
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            raise PayloadError(f"'{where}.{name}' must be an array of strings")


def validate_column_lineage(value: Any) -> None:
    """The optional ``column_lineage`` field of /log/tf (docs/column-lineage.md)."""
    where = "column_lineage"
    if not isinstance(value, dict):
        raise PayloadError(f"'{where}' must be an object, got {_type_name(value)}")
    _integer(value, "version", path=f"{where}.")
    cols = _field(value, "columns", path=f"{where}.")
    if not isinstance(cols, list):
        raise PayloadError(f"'{where}.columns' must be an array, got {_type_name(cols)}")
    for i, col in enumerate(cols):
        item = f"{where}.columns[{i}]"
        if not isinstance(col, dict):
            raise PayloadError(f"'{item}' must be an object, got {_type_name(col)}")
        _string(col, "name", path=f"{item}.")
        for key in ("direct", "indirect"):
            if key in col:
                _column_map(col[key], f"{item}.{key}")
        for key in ("no_inputs", "truncated"):
            if key in col and not isinstance(col[key], bool):
                raise PayloadError(f"'{item}.{key}' must be a boolean")
    if "indirect_all" in value:
        _column_map(value["indirect_all"], f"{where}.indirect_all")
    if "partial" in value and not isinstance(value["partial"], bool):
        raise PayloadError(f"'{where}.partial' must be a boolean")
    _string(value, "reason", path=f"{where}.", required=False)


def validate_dataset(body: Mapping[str, Any]) -> None:
    _string(body, "task_id")
    _integer(body, "tf_id", required=False)
    _string(body, "ds_name")
    _string(body, "ds_type", required=False)
    metadata = _field(body, "metadata")
    if not isinstance(metadata, list):
        raise PayloadError(f"'metadata' must be an array, got {_type_name(metadata)}")
    for i, entry in enumerate(metadata):
        where = f"metadata[{i}]."
        if not isinstance(entry, dict):
            raise PayloadError(f"'metadata[{i}]' must be an object, got {_type_name(entry)}")
        _string(entry, "info_type", path=where)
        _string(entry, "info_value", path=where, non_empty=False)
        is_schema_field = entry["info_type"] == "schema_field"
        _integer(entry, "info_num", path=where, required=is_schema_field)
        if is_schema_field:
            value = entry["info_value"]
            column, sep, type_ = value.rpartition("-")
            if not sep or not column or not type_:
                raise PayloadError(f"'{where}info_value' of a schema_field must be "
                                   f"\"<column>-<TYPE>\", got {json.dumps(value)}")
            if entry["info_num"] < 0:
                raise PayloadError(f"'{where}info_num' must be a 0-based position, got "
                                   f"{entry['info_num']}")


def validate_metrics(body: Mapping[str, Any]) -> None:
    _string(body, "task_id")
    _integer(body, "tf_id", required=False)  # the plugin's: the tf the metrics are of
    metrics = _field(body, "metrics")
    if not isinstance(metrics, list):
        raise PayloadError(f"'metrics' must be an array, got {_type_name(metrics)}")
    for i, entry in enumerate(metrics):
        where = f"metrics[{i}]."
        if not isinstance(entry, dict):
            raise PayloadError(f"'metrics[{i}]' must be an object, got {_type_name(entry)}")
        _string(entry, "asset_name", path=where)
        _string(entry, "asset_type", path=where)
        _string(entry, "metric_type", path=where)
        value = _field(entry, "value", path=where)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PayloadError(f"'{where}value' must be a number, got {_type_name(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise PayloadError(f"'{where}value' must be a finite number")


VALIDATORS = {
    wire.TASK: validate_task,
    wire.TF: validate_tf,
    wire.DATASET: validate_dataset,
    wire.METRICS: validate_metrics,
}


def validate(endpoint: str, body: Mapping[str, Any]) -> None:
    """Check ``body`` against the contract of ``endpoint``; raise ``PayloadError`` if broken."""
    validator = VALIDATORS.get(endpoint)
    if validator is None:
        raise PayloadError(f"unknown endpoint {endpoint!r}; expected one of "
                           f"{', '.join(wire.ENDPOINTS)}")
    validator(body)


def schema_fields(metadata: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``schema_field`` metadata entries as ``{"name", "type", "position"}`` in column order."""
    fields = []
    for entry in metadata:
        if entry.get("info_type") != "schema_field":
            continue
        name, _, type_ = str(entry.get("info_value", "")).rpartition("-")
        fields.append({"name": name, "type": type_, "position": entry.get("info_num")})
    fields.sort(key=lambda f: f["position"] if isinstance(f["position"], int) else 0)
    return fields


__all__ = ["PayloadError", "parse_body", "validate", "schema_fields", "VALIDATORS"]
