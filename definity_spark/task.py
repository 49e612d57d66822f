"""The task room: one Spark application = one Definity task.

``TaskReporter`` is the sink the extraction room hands its results to. It numbers the
transformations of the task (``tf_id`` from 1), turns each ``WriteLineage`` into the
``/log/tf``, ``/log/dataset`` and ``/log/metrics`` payloads, and owns the task's
lifecycle: ``start()`` sends the task start, ``end()`` sends the task-level metrics and the
task end, exactly once, after everything else of the task was submitted.

Nothing here touches the JVM or the network: payloads go to the delivery worker.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from definity_spark import wire
from definity_spark._internal import contained
from definity_spark.lineage import columns, quality
from definity_spark.lineage.model import InputLineage, StreamLink, WriteLineage
from definity_spark.lineage.nesting import add_runs

log = logging.getLogger("definity_spark.task")

# Task-level metric types (docs/metrics.md). Asset: the task itself.
TASK_ASSET_TYPE = "task"
TF_ASSET_TYPE = "transformation"  # a transformation's run metrics, named by its output
M_FAILED_QUERIES = "failed_queries"
M_READ_ACTIONS = "read_actions"
M_TRANSFORMATIONS = "transformations"
M_PARTIAL_TRANSFORMATIONS = "partial_transformations"
M_DROPPED_EVENTS = "dropped_events"  # reports lost for good
M_DROPPED_QUERIES = "dropped_queries"  # query callbacks a full hand-off queue refused
M_STREAMING_QUERIES = "streaming_queries"  # streaming query runs (only when > 0)
M_FAILED_STREAMS = "failed_streams"  # of those, runs that ended with an error
STREAM_ASSET_TYPE = "stream"  # a streaming query's metrics (docs/metrics.md, "Streaming")


def new_task_id(app_id: str | None) -> str:
    """A task id unique across all tasks: the Spark application id plus a random part."""
    base = (app_id or "spark").replace(" ", "_")
    return f"{base}-{uuid.uuid4().hex[:12]}"


class TaskReporter:
    """Receives lineage for one task and submits its payloads, in order, to a delivery."""

    def __init__(
        self,
        delivery: Any,
        task_id: str,
        app_name: str,
        task_name: str,
        env: str | None = None,
        app_pit: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        self.delivery = delivery
        self.task_id = task_id
        self.app_name = app_name
        self.task_name = task_name
        self.env = env
        self.app_pit = app_pit
        self.tags = dict(tags or {})
        self._lock = threading.Lock()
        self._tf_id = 0
        self._started = False
        self._ended = False
        self._failed_queries = 0
        self._read_actions = 0
        self._partial = 0
        self._run: dict[str, float] = {}  # how the task's writes ran, together
        self._streams = 0  # streaming query runs ended, and those that failed
        self._failed_streams = 0
        self._stream_tf: dict[str, int] = {}  # a run's first tf here (its metrics' tf_id)
        self._extra_task_metrics: dict[str, float] = {}
        # the delivery helper numbers the transformations (number_in); after it died,
        # numbering here continues after _lost_upper
        self._remote: Any = None
        self._lost_upper = 0

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        with self._lock:
            if not self._start_locked():
                return
        log.info("definity-spark: task %s started (pipeline %r, task %r)",
                 self.task_id, self.app_name, self.task_name)

    def _start_locked(self) -> bool:
        if self._started:
            return False
        self._started = True
        self._submit(wire.TaskStart(
            task_id=self.task_id, app_name=self.app_name, task_name=self.task_name,
            task_type="spark", env=self.env, app_pit=self.app_pit, tags=self.tags or None,
        ))
        return True

    @property
    def started(self) -> bool:
        return self._started

    @property
    def ended(self) -> bool:
        return self._ended

    def add_task_metric(self, metric_type: str, value: float) -> None:
        """Record a task-level metric (e.g. events dropped) sent with the task end."""
        with self._lock:
            self._extra_task_metrics[metric_type] = value

    def end(self, timeout: float = 5.0) -> bool:
        """Send the task-level metrics and the task end, exactly once. True if it did.
        ``timeout``: for the helper's counts, when it numbers the transformations."""
        with self._lock:
            if self._ended or not self._started:
                return False
            self._ended = True
            self._counts_from_helper(timeout)
            task_metrics = {
                M_TRANSFORMATIONS: self._tf_id,
                M_FAILED_QUERIES: self._failed_queries,
                M_READ_ACTIONS: self._read_actions,
                M_PARTIAL_TRANSFORMATIONS: self._partial,
            }
            task_metrics.update(self._run)
            if self._streams:
                task_metrics[M_STREAMING_QUERIES] = self._streams
                task_metrics[M_FAILED_STREAMS] = self._failed_streams
            task_metrics.update(self._extra_task_metrics)
            self._submit(wire.Metrics(task_id=self.task_id, metrics=[
                wire.Metric(asset_name=self.task_name, asset_type=TASK_ASSET_TYPE,
                            metric_type=name, value=_number(value))
                for name, value in task_metrics.items()
            ]))
            self._submit(wire.TaskEnd(task_id=self.task_id))
        log.info("definity-spark: task %s ended (%d transformations)", self.task_id, self._tf_id)
        return True

    # ----------------------------------------------------------------- the sink
    def on_write(self, lineage: WriteLineage) -> None:
        """One logical write: number it and submit its tf, dataset and metrics payloads."""
        with contained("task.on_write"), self._lock:
            if self._ended:
                log.warning("definity-spark: a write to %s finished after the task ended; "
                            "not reported", lineage.output.name)
                return
            self._start_locked()  # (a write before the activation started the task)
            if lineage.partial:
                self._partial += 1
            if lineage.run:
                self._run = add_runs([self._run, lineage.run])
            if self._remote is not None and \
                    self._remote.submit_group(build_payloads(self.task_id, 0, lineage)):
                return  # numbered in the helper
            self._sync_numbering()
            self._tf_id += 1
            if lineage.stream is not None:
                self._stream_tf.setdefault(lineage.stream.run_id, self._tf_id)
            # together: through the helper process, one write to its socket
            self.delivery.submit_many(build_payloads(self.task_id, self._tf_id, lineage))

    def on_stream_metrics(self, asset: str, metrics: dict[str, float],
                          link: StreamLink | None, end: bool, error: str | None) -> None:
        """One interval of a streaming query run (or its end): one ``/log/metrics``
        payload, of its first transformation here where there is one; at its end the run
        is counted (and its failure: logged by the worker, the task goes on)."""
        with contained("task.on_stream_metrics"), self._lock:
            if self._ended:
                return
            self._start_locked()
            tf_id = None
            if link is not None:
                tf_id = (self._stream_tf.pop if end else self._stream_tf.get)(link.run_id, None)
            if end:
                self._streams += 1
                self._failed_streams += 1 if error else 0
            if metrics:
                self._submit(wire.Metrics(task_id=self.task_id, tf_id=tf_id, metrics=[
                    wire.Metric(asset_name=asset, asset_type=STREAM_ASSET_TYPE,
                                metric_type=name, value=_number(value))
                    for name, value in metrics.items()]))

    def on_query_failed(self, func_name: str, error: str) -> None:
        with self._lock:
            self._failed_queries += 1
        log.info("definity-spark: query %r failed, not reported as a transformation: %s",
                 func_name, (error or "")[:500])

    def on_read(self, func_name: str, inputs: Sequence[InputLineage]) -> None:
        with self._lock:
            self._read_actions += 1

    # ----------------------------------------------------------------- the helper numbers
    def number_in(self, helper: Any) -> None:
        """Hand the numbering of this task's transformations to the delivery helper
        (extraction in the helper, spark/helper.py); once."""
        with contained("task.number_in"), self._lock:
            if self._remote is not None or self._ended:
                return
            fields = {"task_id": self.task_id, "app_name": self.app_name,
                      "task_name": self.task_name, "env": self.env, "app_pit": self.app_pit,
                      "tags": self.tags or None, "tf": self._tf_id}
            if helper.take_numbering(self, fields):
                self._remote = helper

    def numbering_lost(self, upper: int) -> None:
        """The helper died: numbering continues here after ``upper`` (no lock: called
        while the helper's delivery hands over, which a writer may be waiting for)."""
        self._lost_upper = max(self._lost_upper, int(upper))
        self._remote = None

    def continue_from(self, tf_id: int) -> None:
        """In the helper: the driver numbered up to ``tf_id``; the task has started."""
        with self._lock:
            self._tf_id = max(self._tf_id, tf_id)
            self._started = True

    def on_group(self, bodies: list[Any]) -> None:
        """In the helper: one write of the driver (``[endpoint, body]``, ``tf_id`` 0)."""
        with contained("task.on_group"), self._lock:
            self._tf_id += 1
            self.delivery.submit_many(wire.numbered(bodies, self._tf_id))

    def counts(self) -> dict[str, Any]:
        with self._lock:
            return {"tf": self._tf_id, "failed": self._failed_queries,
                    "reads": self._read_actions, "partial": self._partial, "run": self._run,
                    "streams": self._streams, "failed_streams": self._failed_streams}

    def _sync_numbering(self) -> None:
        if self._remote is None and self._lost_upper > self._tf_id:
            self._tf_id = self._lost_upper

    def _counts_from_helper(self, timeout: float) -> None:
        """Before the task end (lock held): the helper's counts join this side's."""
        remote = self._remote
        if remote is not None:
            counts = None
            with contained("task.helper_counts"):
                counts = remote.task_counts(min(5.0, timeout))
            if counts is not None:
                self._tf_id = max(self._tf_id, int(counts.get("tf", 0)))
                self._failed_queries += int(counts.get("failed", 0))
                self._read_actions += int(counts.get("reads", 0))
                self._partial += int(counts.get("partial", 0))
                self._streams += int(counts.get("streams", 0))
                self._failed_streams += int(counts.get("failed_streams", 0))
                self._run = add_runs([self._run, counts.get("run") or {}])
                return
            self._remote = None
        self._sync_numbering()

    # ----------------------------------------------------------------- internals
    def _submit(self, payload: Any) -> None:
        with contained("task.submit"):
            self.delivery.submit(payload)


def build_payloads(task_id: str, tf_id: int, lineage: WriteLineage) -> list[Any]:
    """The three payloads of one transformation, in the order they are sent."""
    out = lineage.output
    payloads: list[Any] = [
        wire.Transformation(
            task_id=task_id,
            tf_id=tf_id,
            output_name=out.name,
            inputs={i.name: i.columns for i in lineage.inputs},
            query_str=lineage.query_str,
            column_lineage=None if lineage.column_lineage is None
            else columns.to_json(lineage.column_lineage),
            stream=None if lineage.stream is None else lineage.stream.to_json(),
        ),
        wire.DatasetSchema(
            task_id=task_id, tf_id=tf_id, ds_name=out.name, ds_type=out.ds_type,
            fields=list(out.schema),
        ),
    ]
    metrics: list[wire.Metric] = [
        wire.Metric(asset_name=out.name, metric_type=name, value=_number(value))
        for name, value in lineage.metrics.items()
    ]
    for i in lineage.inputs:
        metrics.extend(
            wire.Metric(asset_name=i.name, metric_type=name, value=_number(value))
            for name, value in i.metrics.items()
        )
    # data quality (opt-in): of each measured column, "<dataset>.<column>"
    metrics.extend(
        wire.Metric(asset_name=f"{out.name}.{column}", asset_type=quality.COLUMN_ASSET_TYPE,
                    metric_type=name, value=_number(value))
        for column, measures in lineage.quality.items() for name, value in measures.items()
    )
    # how it ran: of the transformation, named by its output (docs/metrics.md)
    metrics.extend(
        wire.Metric(asset_name=out.name, asset_type=TF_ASSET_TYPE, metric_type=name,
                    value=_number(value))
        for name, value in lineage.run.items()
    )
    if metrics:
        payloads.append(wire.Metrics(task_id=task_id, metrics=metrics,
                                     tf_id=tf_id))
    return payloads


def _number(value: float) -> float:
    # ints stay ints in JSON (row counts), fractions stay floats (durations)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
