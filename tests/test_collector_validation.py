"""The collector's validation over real HTTP: 400 naming the field, 401 on a bad token.

One collector per module (with a token) keeps this fast; every case posts for real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from collector_util import running_collector

from definity_spark import wire
from definity_spark.collector import Collector, PayloadError, validate

TOKEN = "test-collector-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

START = {"task_id": "t-1", "status": "start", "app_name": "pipe", "task_name": "job",
         "task_type": "spark"}
TF = {"task_id": "t-1", "tf_id": 1, "status": "end", "query_str": "INSERT ...",
      "input_datasets": {"db.a": {"columns": ["id"]}}, "output": {"name": "db.b"}}
DATASET = {"task_id": "t-1", "tf_id": 1, "ds_name": "db.b", "ds_type": "table",
           "metadata": [{"info_type": "schema_field", "info_value": "id-INTEGER", "info_num": 0}]}
METRICS = {"task_id": "t-1", "metrics": [{"asset_name": "db.b", "asset_type": "table",
                                          "metric_type": "cnt", "value": 10}]}


@pytest.fixture(scope="module")
def collector(tmp_path_factory: Any) -> Iterator[Collector]:
    db = str(tmp_path_factory.mktemp("collector") / "collector.db")
    with running_collector(db, token=TOKEN) as started:
        yield started


def post(collector: Collector, endpoint: str, body: Any, headers: dict[str, str] = AUTH,
         raw: bytes = None) -> requests.Response:
    data = raw if raw is not None else json.dumps(body).encode("utf-8")
    return requests.post(collector.url + endpoint, data=data, timeout=10,
                         headers={"Content-Type": "application/json", **headers})


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(base))
    for key, value in changes.items():
        if value is DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


DROP = object()

# (endpoint, body or raw bytes, words the error message must contain)
MALFORMED = [
    ("/log/task", b"{not json", ["not valid JSON"]),
    ("/log/task", b"", ["empty"]),
    ("/log/task", b"[1, 2]", ["JSON object", "array"]),
    ("/log/task", b'{"task_id": "t", "status": "end", "x": NaN}', ["NaN"]),
    ("/log/task", b'{"task_id": "t", "status": "end", "x": -Infinity}', ["-Infinity"]),
    ("/log/task", b'\xef\xbb\xbf{"task_id": "t", "status": "end"}', ["not valid JSON", "BOM"]),
    ("/log/task", b'\xff{}', ["not UTF-8"]),
    ("/log/task", with_(START, task_id=DROP), ["task_id", "missing"]),
    ("/log/task", with_(START, task_id=12), ["task_id", "string", "number"]),
    ("/log/task", with_(START, task_id=""), ["task_id", "non-empty"]),
    ("/log/task", with_(START, status="running"), ["status", "start", "end", "running"]),
    ("/log/task", with_(START, status=DROP), ["status", "missing"]),
    ("/log/task", with_(START, app_name=DROP), ["app_name", "start"]),
    ("/log/task", with_(START, task_name=DROP), ["task_name"]),
    ("/log/task", with_(START, task_type=DROP), ["task_type"]),
    ("/log/task", with_(START, app_name=["x"]), ["app_name", "string", "array"]),
    ("/log/task", with_(START, env=1), ["env", "string"]),
    ("/log/task", with_(START, app_pit={"d": 1}), ["app_pit", "string"]),
    ("/log/task", with_(START, tags=["a:b"]), ["tags", "object"]),
    ("/log/task", with_(START, tags={"team": 1}), ["tags.team", "string"]),
    ("/log/tf", with_(TF, tf_id="1"), ["tf_id", "integer", "string"]),
    ("/log/tf", with_(TF, tf_id=1.5), ["tf_id", "integer"]),
    ("/log/tf", with_(TF, tf_id=True), ["tf_id", "integer", "boolean"]),
    ("/log/tf", with_(TF, tf_id=DROP), ["tf_id", "missing"]),
    ("/log/tf", with_(TF, status="start"), ["status", "end"]),
    ("/log/tf", with_(TF, task_id=None), ["task_id", "string", "null"]),
    ("/log/tf", with_(TF, query_str=5), ["query_str", "string"]),
    ("/log/tf", with_(TF, input_datasets=["db.a"]), ["input_datasets", "object"]),
    ("/log/tf", with_(TF, input_datasets=DROP), ["input_datasets", "missing"]),
    ("/log/tf", with_(TF, input_datasets={"db.a": ["id"]}), ["input_datasets.db.a", "object"]),
    ("/log/tf", with_(TF, input_datasets={"db.a": {"columns": "id"}}),
     ["input_datasets.db.a.columns", "array"]),
    ("/log/tf", with_(TF, input_datasets={"db.a": {"columns": [1]}}),
     ["input_datasets.db.a.columns[0]", "string"]),
    ("/log/tf", with_(TF, output="db.b"), ["output", "object"]),
    ("/log/tf", with_(TF, output={}), ["output.name", "missing"]),
    ("/log/tf", with_(TF, output={"name": 3}), ["output.name", "string"]),
    ("/log/dataset", with_(DATASET, ds_name=DROP), ["ds_name", "missing"]),
    ("/log/dataset", with_(DATASET, tf_id="1"), ["tf_id", "integer"]),
    ("/log/dataset", with_(DATASET, ds_type=1), ["ds_type", "string"]),
    ("/log/dataset", with_(DATASET, metadata={"id": "INTEGER"}), ["metadata", "array"]),
    ("/log/dataset", with_(DATASET, metadata=DROP), ["metadata", "missing"]),
    ("/log/dataset", with_(DATASET, metadata=["id-INTEGER"]), ["metadata[0]", "object"]),
    ("/log/dataset", with_(DATASET, metadata=[{"info_value": "id-INTEGER", "info_num": 0}]),
     ["metadata[0].info_type", "missing"]),
    ("/log/dataset", with_(DATASET, metadata=[{"info_type": "schema_field", "info_value": "id",
                                               "info_num": 0}]),
     ["metadata[0].info_value", "<column>-<TYPE>"]),
    ("/log/dataset", with_(DATASET, metadata=[{"info_type": "schema_field",
                                               "info_value": "id-INTEGER", "info_num": "0"}]),
     ["metadata[0].info_num", "integer"]),
    ("/log/dataset", with_(DATASET, metadata=[{"info_type": "schema_field",
                                               "info_value": "id-INTEGER"}]),
     ["metadata[0].info_num", "missing"]),
    ("/log/metrics", with_(METRICS, metrics=DROP), ["metrics", "missing"]),
    ("/log/metrics", with_(METRICS, metrics={"cnt": 1}), ["metrics", "array"]),
    ("/log/metrics", with_(METRICS, metrics=[5]), ["metrics[0]", "object"]),
    ("/log/metrics", with_(METRICS, metrics=[{"asset_name": "db.b", "asset_type": "table",
                                              "metric_type": "cnt", "value": "10"}]),
     ["metrics[0].value", "number", "string"]),
    ("/log/metrics", with_(METRICS, metrics=[{"asset_name": "db.b", "asset_type": "table",
                                              "metric_type": "cnt"}]),
     ["metrics[0].value", "missing"]),
    ("/log/metrics", with_(METRICS, metrics=[{"asset_type": "table", "metric_type": "cnt",
                                              "value": 1}]),
     ["metrics[0].asset_name", "missing"]),
    ("/log/metrics", with_(METRICS, metrics=[{"asset_name": "db.b", "asset_type": "table",
                                              "metric_type": "cnt", "value": False}]),
     ["metrics[0].value", "number", "boolean"]),
]


@pytest.mark.parametrize("endpoint,body,words", MALFORMED,
                         ids=[f"{e}-{i}" for i, (e, _, _) in enumerate(MALFORMED)])
def test_malformed_payload_is_400_with_a_message_naming_the_field(
        collector: Collector, endpoint: str, body: Any, words: Any) -> None:
    before = collector.store.count()
    if isinstance(body, bytes):
        response = post(collector, endpoint, None, raw=body)
    else:
        response = post(collector, endpoint, body)
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    message = response.json()["error"]
    for word in words:
        assert word in message, (word, message)
    assert collector.store.count() == before  # nothing stored


def test_the_same_rules_without_http() -> None:
    with pytest.raises(PayloadError, match="tf_id"):
        validate("/log/tf", with_(TF, tf_id="1"))
    with pytest.raises(PayloadError, match="unknown endpoint"):
        validate("/log/lineage", TF)
    validate("/log/tf", TF)


@pytest.mark.parametrize("headers,words", [
    ({}, ["missing Authorization"]),
    ({"Authorization": "Bearer wrong-token"}, ["token rejected"]),
    ({"Authorization": f"Basic {TOKEN}"}, ["Bearer"]),
    ({"Authorization": "Bearer "}, ["Bearer"]),
])
def test_missing_or_wrong_token_is_401(collector: Collector, headers: dict[str, str],
                                       words: Any) -> None:
    before = collector.store.count()
    response = post(collector, "/log/task", START, headers=headers)
    assert response.status_code == 401
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    message = response.json()["error"]
    for word in words:
        assert word in message
    assert TOKEN not in response.text
    assert collector.store.count() == before


def test_token_is_checked_before_the_body(collector: Collector) -> None:
    # A client without the token learns nothing about the payload rules.
    response = post(collector, "/log/tf", None, headers={}, raw=b"garbage")
    assert response.status_code == 401


def test_unknown_endpoint_is_404_and_other_methods_405(collector: Collector) -> None:
    response = post(collector, "/log/lineage", TF)
    assert response.status_code == 404 and "/log/tf" in response.json()["error"]
    response = requests.put(collector.url + "/log/tf", json=TF, headers=AUTH, timeout=10)
    assert response.status_code == 405


@pytest.mark.parametrize("endpoint,body", [
    ("/log/task", START),
    ("/log/task", with_(START, env="dev", app_pit="2025-09-01", tags={"team": "data"})),
    ("/log/task", {"task_id": "t-1", "status": "end"}),
    ("/log/tf", TF),
    ("/log/tf", with_(TF, query_str=DROP, input_datasets={})),
    ("/log/tf", with_(TF, input_datasets={"db.a": {}, "s3://b/k": {"columns": []}})),
    ("/log/dataset", DATASET),
    ("/log/dataset", with_(DATASET, tf_id=DROP, ds_type=DROP, metadata=[])),
    ("/log/dataset", with_(DATASET, metadata=[{"info_type": "owner", "info_value": "x"}])),
    ("/log/dataset", with_(DATASET, metadata=[
        {"info_type": "schema_field", "info_value": "event-type-STRING", "info_num": 0}])),
    ("/log/metrics", METRICS),
    ("/log/metrics", with_(METRICS, metrics=[])),
    ("/log/metrics", with_(METRICS, metrics=[{"asset_name": "a", "asset_type": "table",
                                              "metric_type": "bytes", "value": 1.5}])),
])
def test_valid_payloads_are_accepted_and_stored_exactly(collector: Collector, endpoint: str,
                                                        body: dict[str, Any]) -> None:
    response = post(collector, endpoint, body)
    assert response.status_code == 200, response.text
    seq = response.json()["seq"]
    stored = [p for p in collector.store.payloads() if p["seq"] == seq]
    assert stored[0]["endpoint"] == endpoint
    assert stored[0]["body"] == body
    assert stored[0]["raw"] == json.dumps(body)


def test_unknown_extra_fields_are_accepted_and_kept(collector: Collector) -> None:
    body = with_(TF, tf_id=77, future_field={"nested": [1, 2]}, spark_version="3.5.9")
    response = post(collector, "/log/tf", body)
    assert response.status_code == 200
    stored = collector.store.payloads(endpoint="/log/tf")[-1]
    assert stored["body"]["future_field"] == {"nested": [1, 2]}
    assert stored["body"]["spark_version"] == "3.5.9"


def test_every_wire_payload_passes_validation(collector: Collector) -> None:
    # The plugin's own wire model and the collector agree on the contract.
    payloads = [
        wire.TaskStart("w-1", "pipe", "job", env="dev", app_pit="2025-09-01",
                       tags={"team": "data"}),
        wire.Transformation("w-1", 1, "db.out", {"db.in": ["id", "name"], "db.other": None},
                            query_str="CREATE TABLE db.out AS SELECT ..."),
        wire.DatasetSchema("w-1", "db.out", [("id", "INTEGER"), ("name", "STRING")], tf_id=1,
                           ds_type="table"),
        wire.Metrics("w-1", [wire.Metric("db.out", "cnt", 2)]),
        wire.TaskEnd("w-1"),
    ]
    for payload in payloads:
        response = post(collector, payload.endpoint, payload.to_json())
        assert response.status_code == 200, (payload, response.text)
