"""The lineage page in a real headless Chromium (Debian's): its JavaScript fetched the
collector's API and drew every dataset and task, with the edges between them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
from collector_util import (
    CollectorClient,
    collector_fixture,  # noqa: F401 - the `collector` fixture
    needs_chromium,
    render_page,
    rendered_graph,
)
from test_collector_api import three_tasks

from definity_spark import wire
from definity_spark.collector import Collector

pytestmark = [pytest.mark.browser, needs_chromium]


def test_page_draws_datasets_tasks_and_edges(collector: Collector, tmp_path: Path) -> None:
    three_tasks(collector.url)
    # a long path-like name is drawn in full (it is the dataset's identity)
    long_name = "file:/data/warehouse/very/long/path/to/the/partitioned/table/of/events"
    client = CollectorClient(collector.url)
    for payload in (wire.TaskStart("task-D", "nightly", "export"),
                    wire.Transformation("task-D", 1, long_name, {"out.report": ["v"]}),
                    wire.TaskEnd("task-D")):
        assert requests.post(collector.url + payload.endpoint, json=payload.to_json(),
                             timeout=10).status_code == 200
    expected = client.lineage()

    screenshot = Path(os.environ.get("DEFINITY_SCREENSHOT_DIR", str(tmp_path))) / "lineage.png"
    dom = render_page(collector.url + "/", str(tmp_path), screenshot=str(screenshot))
    drawn = rendered_graph(dom)

    assert drawn["rendered"] == "true", dom[:2000]
    assert drawn["nodes"] == {n["id"]: (n["kind"], n["label"]) for n in expected["nodes"]}
    labels = {label for _, label in drawn["nodes"].values()}
    assert {"ingest", "transform", "report", "export", "shared_db.table_a", "raw.events",
            long_name} <= labels
    assert drawn["edges"] == {(e["source"], e["target"]) for e in expected["edges"]}
    assert "6 tasks" not in dom and "4 tasks" in dom  # the status line counts from the API
    # the tasks table lists every task id
    for task in client.tasks():
        assert f'data-task-id="{task["task_id"]}"' in dom
    assert screenshot.exists() and screenshot.stat().st_size > 5000


def test_page_with_no_data_says_so(collector: Collector, tmp_path: Path) -> None:
    dom = render_page(collector.url + "/", str(tmp_path))
    drawn = rendered_graph(dom)
    assert drawn["rendered"] == "true" and drawn["nodes"] == {}
    assert "No tasks yet" in dom and collector.url in dom
