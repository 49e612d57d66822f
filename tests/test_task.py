"""TaskReporter: tf numbering, payload order, task end exactly once (pure, no Spark)."""

from typing import Any

from definity_spark.lineage.model import InputLineage, OutputLineage, WriteLineage
from definity_spark.task import TaskReporter, new_task_id


class ListDelivery:
    """A delivery that keeps what it is given (the reporter's only neighbour)."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def submit(self, payload: Any) -> bool:
        self.sent.append(payload.to_json() | {"_endpoint": payload.endpoint})
        return True

    def submit_many(self, payloads: Any) -> int:
        return sum(1 for payload in payloads if self.submit(payload))


def _lineage(out: str) -> WriteLineage:
    return WriteLineage(
        output=OutputLineage(name=out, ds_type="table", schema=(("id", "LONG"),)),
        inputs=(InputLineage(name="db.src", columns=("id",), metrics={"read_rows": 7}),),
        query_str="INSERT ...",
        metrics={"cnt": 7.0, "duration_ms": 12.5},
    )


def test_lifecycle_and_numbering():
    d = ListDelivery()
    r = TaskReporter(d, task_id="t-1", app_name="pipe", task_name="task", env="dev")
    r.start()
    r.start()  # idempotent
    r.on_write(_lineage("db.a"))
    r.on_query_failed("command", "boom")
    r.on_write(_lineage("db.b"))
    assert r.end() is True
    assert r.end() is False  # exactly once
    r.on_write(_lineage("db.c"))  # after the end: not reported

    endpoints = [p["_endpoint"] for p in d.sent]
    assert endpoints == ["/log/task", "/log/tf", "/log/dataset", "/log/metrics",
                         "/log/tf", "/log/dataset", "/log/metrics", "/log/metrics", "/log/task"]
    assert d.sent[0]["status"] == "start" and d.sent[-1] == {"task_id": "t-1", "status": "end",
                                                            "_endpoint": "/log/task"}
    tfs = [p for p in d.sent if p["_endpoint"] == "/log/tf"]
    assert [t["tf_id"] for t in tfs] == [1, 2]
    assert [t["output"]["name"] for t in tfs] == ["db.a", "db.b"]
    metrics = d.sent[3]["metrics"]
    assert {"asset_name": "db.a", "asset_type": "table", "metric_type": "cnt",
            "value": 7} in metrics
    assert {"asset_name": "db.src", "asset_type": "table", "metric_type": "read_rows",
            "value": 7} in metrics
    task_metrics = {m["metric_type"]: m["value"] for m in d.sent[-2]["metrics"]}
    assert task_metrics["failed_queries"] == 1 and task_metrics["transformations"] == 2


def test_task_ids_unique_and_keep_app_id():
    ids = {new_task_id("local-1700000000000") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("local-1700000000000-") for i in ids)
