"""Column lineage in the local collector: stored with its tf, walked upstream across
transformations and applications (``GET /api/columns``), and shown when a column is
clicked on the lineage page (real headless Chromium).

The payloads are the plugin's own: plan facts recorded from real Spark runs
(tests/fixtures/plans) through the extraction rules, ``columns.column_lineage`` and
``task.build_payloads``, posted over HTTP as two applications: the first writes
``default.t1`` and ``default.t2`` (from parquet paths), the second reads them into
``default.t_cte``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests
from collector_util import (
    CollectorClient,
    collector_fixture,  # noqa: F401 - the `collector` fixture
    needs_chromium,
    render_page,
    rendered_graph,
)
from unit.replay import load, replay

from definity_spark import wire
from definity_spark.collector import Collector
from definity_spark.lineage.columns import column_lineage
from definity_spark.lineage.rules import WRITE, extract
from definity_spark.task import build_payloads

VERSION = "spark35"


def _write_with_columns(scenario: str) -> Any:
    (write,) = [o.lineage for o in replay(VERSION, scenario) if o.kind == WRITE]
    facts = next(f for f in load(VERSION, scenario)
                 if f.command is not None and f.plan and extract(f).kind == WRITE)
    columns = column_lineage(facts, [c for c, _ in write.output.schema])
    return dataclasses.replace(write, column_lineage=columns)


def _post_app(url: str, task_id: str, app: str, scenarios: list[str]) -> None:
    bodies: list[Any] = [wire.TaskStart(task_id, app, app)]
    for tf_id, scenario in enumerate(scenarios, start=1):
        bodies.extend(build_payloads(task_id, tf_id, _write_with_columns(scenario)))
    bodies.append(wire.TaskEnd(task_id))
    for payload in bodies:
        response = requests.post(url + payload.endpoint, json=payload.to_json(), timeout=10)
        assert response.status_code == 200, response.text


def _two_apps(url: str) -> None:
    _post_app(url, "task-load", "load-app", ["parquet_partitioned", "ctas_sql",
                                             "save_as_table"])
    _post_app(url, "task-report", "report-app", ["ctas_cte"])


def _upstream(url: str, dataset: str, column: str) -> dict[str, Any]:
    response = requests.get(url + "/api/columns", params={"dataset": dataset,
                                                          "column": column}, timeout=10)
    assert response.status_code == 200
    return response.json()


def test_column_upstream_joins_applications_by_dataset(collector: Collector) -> None:
    _two_apps(collector.url)
    up = _upstream(collector.url, "default.t_cte", "name")
    # t_cte.name <- t1.name (report-app) <- events.name (load-app) <- base.name (load-app)
    assert {(e["source"], e["target"], e["kind"]) for e in up["edges"]} == {
        ("default.t1|name", "default.t_cte|name", "direct"),
        ("file:/TMP/data/events|name", "default.t1|name", "direct"),
        ("file:/TMP/data/base|name", "file:/TMP/data/events|name", "direct"),
    }
    apps = {e["target"]: [t["app_name"] for t in e["tfs"]] for e in up["edges"]}
    assert apps["default.t_cte|name"] == ["report-app"]
    assert apps["default.t1|name"] == ["load-app"]
    depth = {n["id"]: n["depth"] for n in up["nodes"]}
    assert depth["file:/TMP/data/base|name"] == 3
    # what decided the rows, per hop: the join of t1 and the CTE, the CTAS's WHERE
    decided = {(d["dataset"], d["column"]) for n in up["nodes"] for d in n["decided_by"]}
    assert decided == {("default.t1", "id"), ("default.t2", "grp"),
                       ("file:/TMP/data/events", "grp")}

    total = _upstream(collector.url, "default.t_cte", "total")
    assert {(e["source"], e["target"]) for e in total["edges"]} == {
        ("default.t2|amount", "default.t_cte|total"),
        ("file:/TMP/data/base|amount", "default.t2|amount"),
    }
    # stored with its tf, as sent
    task = CollectorClient(collector.url).task("task-report")
    (tf,) = task["transformations"]
    assert tf["column_lineage"]["columns"][1]["direct"] == {"default.t2": ["amount"]}


def test_a_source_column_has_no_upstream(collector: Collector) -> None:
    _two_apps(collector.url)
    up = _upstream(collector.url, "file:/TMP/data/base", "name")
    assert up["edges"] == [] and [n["id"] for n in up["nodes"]] == ["file:/TMP/data/base|name"]
    missing = requests.get(collector.url + "/api/columns", params={"dataset": "x"}, timeout=10)
    assert missing.status_code == 400


@pytest.mark.parametrize("bad,message", [
    ({"version": 1, "columns": "x"}, "'column_lineage.columns' must be an array"),
    ({"version": 1, "columns": [{"name": "a", "direct": {"t": "c"}}]},
     "'column_lineage.columns[0].direct.t' must be an array of strings"),
    ({"columns": []}, "missing required field 'column_lineage.version'"),
    ([], "'column_lineage' must be an object"),
])
def test_malformed_column_lineage_is_rejected(collector: Collector, bad: Any,
                                              message: str) -> None:
    body = wire.Transformation("t", 1, "out", {"in": ["a"]}).to_json()
    body["column_lineage"] = bad
    response = requests.post(collector.url + wire.TF, json=body, timeout=10)
    assert response.status_code == 400 and message in response.json()["error"]


def test_a_database_of_schema_version_1_gains_the_column(tmp_path: Path) -> None:
    import sqlite3

    from definity_spark.collector.store import Store

    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE tfs (task_id TEXT NOT NULL, tf_id INTEGER NOT NULL, seq "
                 "INTEGER NOT NULL, received_at TEXT NOT NULL, status TEXT, query_str TEXT, "
                 "inputs TEXT NOT NULL, output_name TEXT NOT NULL, PRIMARY KEY (task_id, "
                 "tf_id))")
    conn.commit()
    conn.close()
    store = Store(path)
    body = wire.Transformation("t", 1, "out", {"in": ["a"]}, column_lineage={
        "version": 1, "columns": [{"name": "a", "direct": {"in": ["a"]}}]}).to_json()
    store.add(wire.TF, json.dumps(body).encode(), body)
    assert store.column_upstream("out", "a")["edges"][0]["source"] == "in|a"
    store.close()


@pytest.mark.browser
@needs_chromium
def test_clicking_a_column_shows_its_upstream_columns(collector: Collector,
                                                      tmp_path: Path) -> None:
    _two_apps(collector.url)
    # the page opens #column=<dataset>|<column> by clicking that column's link in the
    # dataset's schema table, as a user would
    dom = render_page(collector.url + "/#column=default.t_cte%7Cname", str(tmp_path))
    drawn = rendered_graph(dom)
    assert drawn["rendered"] == "true"
    assert ("task:task-report", "dataset:default.t_cte") in drawn["edges"]
    assert 'data-column="default.t_cte|name"' in dom  # showColumn finished
    # the dataset's columns are links
    assert re.search(r'class="col-link" data-dataset="default.t_cte" data-column="total"', dom)
    rows = set(re.findall(r'<tr class="up-edge" data-source="([^"]+)" data-target="([^"]+)" '
                          r'data-kind="(\w+)"', dom))
    assert rows == {
        ("default.t1|name", "default.t_cte|name", "direct"),
        ("file:/TMP/data/events|name", "default.t1|name", "direct"),
        ("file:/TMP/data/base|name", "file:/TMP/data/events|name", "direct"),
    }
    assert "report-app tf 1" in dom and "load-app tf 2" in dom
    assert "Rows decided by" in dom and "default.t2 \u00b7 grp" in dom
