"""Spark data types (their JSON form, as ``StructType.json()`` gives them) -> Definity TYPE.

Top-level atomic types: the upper-cased JSON type name (``integer`` -> ``INTEGER``,
``long`` -> ``LONG``, ``decimal(10,2)`` -> ``DECIMAL(10,2)``). Nested types (array, map,
struct, UDT): the upper-cased ``simpleString`` (``ARRAY<STRING>``,
``STRUCT<A:INT,B:STRING>``, ``MAP<STRING,BIGINT>``). Pure; see docs/naming.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# JSON name -> Spark's simpleString, for atomic types whose two spellings differ
_SIMPLE = {
    "integer": "int",
    "long": "bigint",
    "short": "smallint",
    "byte": "tinyint",
    "null": "void",
}


def type_name(json_type: Any) -> str:
    """Definity TYPE for one Spark JSON data type."""
    if isinstance(json_type, str):
        return json_type.upper()
    return simple_string(json_type).upper()


def simple_string(json_type: Any) -> str:
    """Spark's ``DataType.simpleString`` computed from the type's JSON form."""
    if isinstance(json_type, str):
        return _SIMPLE.get(json_type, json_type)
    if not isinstance(json_type, Mapping):
        return str(json_type)
    kind = json_type.get("type")
    if kind == "array":
        return f"array<{simple_string(json_type.get('elementType'))}>"
    if kind == "map":
        return (f"map<{simple_string(json_type.get('keyType'))},"
                f"{simple_string(json_type.get('valueType'))}>")
    if kind == "struct":
        inner = ",".join(f"{f.get('name')}:{simple_string(f.get('type'))}"
                         for f in json_type.get("fields", ()))
        return f"struct<{inner}>"
    if kind == "udt":
        return simple_string(json_type.get("sqlType"))
    return str(kind)


def schema_fields(struct_json: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(column, TYPE) for every top-level field of a ``StructType`` JSON, in order."""
    return [(str(f.get("name")), type_name(f.get("type"))) for f in struct_json.get("fields", ())]
