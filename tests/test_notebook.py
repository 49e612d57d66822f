"""Notebook activation (issue 4, mode 3) in a real Jupyter kernel.

nbclient starts a real ipykernel and executes a notebook cell by cell, like "Run all":
create a session, ``definity_spark.activate(spark, ...)``, writes across cells, the
activation cell run a second time (users re-run cells), ``deactivate``, and a write after
deactivation. The collector must hold exactly one task, ended, with the two writes made
while active, in order.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from collector_util import CollectorClient, collector_fixture  # noqa: F401 - fixture "collector"

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.spark

ACTIVATE = """\
import definity_spark
handle = definity_spark.activate(spark, pipeline_name="notebook-pipeline", pit="2025-09-01",
                                 server_url=SERVER, token="nb-token")
handle.task_id
"""


def _notebook(server: str, out: str) -> Any:
    cells = [
        f"SERVER, OUT = {server!r}, {out!r}\n"
        "from pyspark.sql import SparkSession\n"
        "spark = (SparkSession.builder.master('local[1]').appName('notebook-app')\n"
        "         .config('spark.ui.enabled', 'false').getOrCreate())",
        ACTIVATE,
        "first_task = handle.task_id\n"
        "spark.range(20).selectExpr('id', 'id % 3 AS g').write.mode('overwrite')"
        ".parquet(OUT + '/events')",
        ACTIVATE,  # the activation cell, run again
        "assert handle.task_id == first_task, (handle.task_id, first_task)\n"
        "(spark.read.parquet(OUT + '/events').groupBy('g').count()\n"
        "      .write.mode('overwrite').parquet(OUT + '/event_counts'))",
        "assert handle.flush(30)\n"
        "definity_spark.deactivate(spark)",
        "spark.range(5).write.mode('overwrite').parquet(OUT + '/after_deactivate')\n"
        "print('DONE', first_task)",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def test_notebook_activate_rerun_deactivate(tmp_path: Path, collector: Any) -> None:
    out = str(tmp_path / "out")
    nb = _notebook(collector.url, out)
    saved = {k: os.environ.get(k) for k in list(os.environ) if k.startswith("DEFINITY_")}
    for key in saved:
        os.environ.pop(key)
    os.environ["PYSPARK_PYTHON"] = sys.executable
    try:
        client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        os.environ.update({k: v for k, v in saved.items() if v is not None})
    texts = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "DONE" in texts
    assert "nb-token" not in texts

    api = CollectorClient(collector.url)
    tasks = api.tasks()
    assert len(tasks) == 1, tasks
    task = tasks[0]
    assert task["status"] == "end"
    assert (task["app_name"], task["task_name"], task["app_pit"]) == \
        ("notebook-pipeline", "notebook-app", "2025-09-01")
    assert texts.split("DONE ")[1].strip() == task["task_id"]
    detail = api.task(task["task_id"])
    tfs = [(tf["tf_id"], sorted(n.rsplit("/", 1)[-1] for n in tf["input_datasets"]),
            tf["output"]["name"].rsplit("/", 1)[-1]) for tf in detail["transformations"]]
    assert tfs == [(1, [], "events"), (2, ["events"], "event_counts")], tfs
    statuses = [p["body"]["status"] for p in detail["raw"] if p["endpoint"].endswith("/task")]
    assert statuses == ["start", "end"]
