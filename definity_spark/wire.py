"""The wire model: the four payloads of the Definity reporting API, as typed objects.

Each payload knows its endpoint (``/log/task`` ...) and serialises itself with
``to_json()`` to exactly the documented JSON shape: ids are strings, ``tf_id`` an int,
optional fields are left out when unset (never sent as ``null``).

Nothing here touches Spark or the network; the delivery worker sends what these
objects produce, and the local collector validates against the same contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

TASK = "/log/task"
TF = "/log/tf"
DATASET = "/log/dataset"
METRICS = "/log/metrics"
ENDPOINTS = (TASK, TF, DATASET, METRICS)


@dataclass(frozen=True)
class TaskStart:
    task_id: str
    app_name: str
    task_name: str
    task_type: str = "spark"
    env: str | None = None
    app_pit: str | None = None
    tags: Mapping[str, str] | None = None

    endpoint = TASK

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "task_id": str(self.task_id),
            "status": "start",
            "app_name": self.app_name,
            "task_name": self.task_name,
            "task_type": self.task_type,
        }
        if self.env:
            body["env"] = self.env
        if self.app_pit:
            body["app_pit"] = self.app_pit
        if self.tags:
            body["tags"] = dict(self.tags)
        return body


@dataclass(frozen=True)
class TaskEnd:
    task_id: str

    endpoint = TASK

    def to_json(self) -> dict[str, Any]:
        return {"task_id": str(self.task_id), "status": "end"}


@dataclass(frozen=True)
class Transformation:
    """``POST /log/tf``: one write, its inputs (with the columns read) and its output."""

    task_id: str
    tf_id: int
    output_name: str
    # dataset name -> columns read (None: columns unknown, the key is left out)
    inputs: Mapping[str, Sequence[str] | None] = field(default_factory=dict)
    query_str: str | None = None
    # the optional ``column_lineage`` field (docs/column-lineage.md), already in its JSON
    # form; None leaves it out, so a tf without it is byte-for-byte what it always was
    column_lineage: Mapping[str, Any] | None = None
    # the optional ``stream`` field: the streaming query run the tf belongs to
    # ({"id", "run_id", "name"}; docs/metrics.md, "Streaming"); None leaves it out
    stream: Mapping[str, str] | None = None

    endpoint = TF

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "task_id": str(self.task_id),
            "tf_id": int(self.tf_id),
            "status": "end",
        }
        if self.query_str is not None:
            body["query_str"] = self.query_str
        inputs: dict[str, dict[str, Any]] = {}
        for name, columns in self.inputs.items():
            inputs[name] = {} if columns is None else {"columns": list(columns)}
        body["input_datasets"] = inputs
        body["output"] = {"name": self.output_name}
        if self.column_lineage is not None:
            body["column_lineage"] = dict(self.column_lineage)
        if self.stream is not None:
            body["stream"] = dict(self.stream)
        return body


@dataclass(frozen=True)
class DatasetSchema:
    """``POST /log/dataset``: the schema of a dataset, one ``schema_field`` per column."""

    task_id: str
    ds_name: str
    # (column name, TYPE) in column order, e.g. ("id", "INTEGER")
    fields: Sequence[tuple[str, str]]
    tf_id: int | None = None
    ds_type: str | None = None

    endpoint = DATASET

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"task_id": str(self.task_id)}
        if self.tf_id is not None:
            body["tf_id"] = int(self.tf_id)
        body["ds_name"] = self.ds_name
        if self.ds_type is not None:
            body["ds_type"] = self.ds_type
        body["metadata"] = [
            {"info_type": "schema_field", "info_value": f"{name}-{type_}", "info_num": i}
            for i, (name, type_) in enumerate(self.fields)
        ]
        return body


@dataclass(frozen=True)
class Metric:
    asset_name: str
    metric_type: str
    value: int | float
    asset_type: str = "table"

    def to_json(self) -> dict[str, Any]:
        return {
            "asset_name": self.asset_name,
            "asset_type": self.asset_type,
            "metric_type": self.metric_type,
            "value": self.value,
        }


@dataclass(frozen=True)
class Metrics:
    task_id: str
    metrics: Sequence[Metric]
    # optional, additive: the transformation these metrics are of (as /log/dataset's)
    tf_id: int | None = None

    endpoint = METRICS

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"task_id": str(self.task_id)}
        if self.tf_id is not None:
            body["tf_id"] = int(self.tf_id)
        body["metrics"] = [m.to_json() for m in self.metrics]
        return body


Payload = Union[TaskStart, TaskEnd, Transformation, DatasetSchema, Metrics]


@dataclass(frozen=True)
class RawPayload:
    """An already serialised payload (e.g. read back from a spool file for replay)."""

    endpoint: str
    body: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.body)


def envelope(payload: Payload | RawPayload) -> dict[str, Any]:
    """The JSONL record used by the file transport and the spool: endpoint + body."""
    return {"endpoint": payload.endpoint, "body": payload.to_json()}


def from_envelope(record: Mapping[str, Any]) -> RawPayload:
    endpoint = record.get("endpoint")
    body = record.get("body")
    if endpoint not in ENDPOINTS or not isinstance(body, dict):
        raise ValueError(f"not a definity payload record: {str(record)[:200]}")
    return RawPayload(endpoint=str(endpoint), body=body)


def numbered(bodies: Sequence[Any], tf_id: int) -> list[RawPayload]:
    """The payloads of one write (``[endpoint, body]`` pairs, serialised with ``tf_id``
    0 where the number was not known yet) with their transformation's number."""
    out = []
    for endpoint, body in bodies:
        if "tf_id" in body:
            body["tf_id"] = tf_id
        out.append(RawPayload(endpoint=endpoint, body=body))
    return out


__all__: list[str] = [
    "TASK", "TF", "DATASET", "METRICS", "ENDPOINTS", "TaskStart", "TaskEnd",
    "Transformation", "DatasetSchema", "Metric", "Metrics", "Payload", "RawPayload",
    "envelope", "from_envelope", "numbered",
]
