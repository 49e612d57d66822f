"""The extraction worker: one session's callbacks, read one at a time, into the sink.

A worker thread takes each callback from its source: the JVM gatherer's queue
(``FactGatherer.next``, one py4j call, which for a plain write also answers both reading
phases), or, with the Python fallback listener, the hand-off queue the listener fills.
It reads the callback's facts (``FactReader``), classifies them (``rules.extract``),
folds nested executions into one logical write (``NestedWrites``) and hands each outcome
to the sink (``on_write`` / ``on_query_failed`` / optional ``on_read``). Marks
(``SessionObserver.drain``) travel through the same source, so a mark is processed after
every callback queued before it. The same worker runs in the driver and, reading the
driver's JVM through its own py4j connection, in the helper process.

Structured Streaming: the JVM's ``StreamWatch`` hands its items through the same queue
(``StreamItem``: a run started, wrote its first data, ended an interval or itself), and
the writes of a ``foreachBatch`` function as callbacks linked to their run
(``Callback.stream_run``); ``lineage/streams.py`` turns them into the run's
transformation and metrics.

Nested writes (the data write of a CTAS or ``saveAsTable``) arrive while their outer
command still runs: their plan is read when the root's callback has arrived (``_defer``),
and the outer command, whose query is the one just read, is read without it (``light``).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import replace
from typing import Any, Callable

from definity_spark._internal import contained
from definity_spark.lineage import quality, streams
from definity_spark.lineage.model import InputLineage, WriteLineage
from definity_spark.lineage.nesting import NestedWrites
from definity_spark.lineage.rules import FAILED, READ, WRITE, Options, Outcome, extract
from definity_spark.spark import listener as _listener
from definity_spark.spark.facts import FactReader, Reading, stream_item

logger = logging.getLogger("definity_spark.spark")

HANDOFF_SIZE = 1000  # callbacks waiting (in the JVM's queue, or the Python listener's)
IDLE_RELEASE_SECONDS = 5.0  # a held write (see nesting.py) is final after this idle time
MAX_DEFERRED_GROUPS = 64  # nested writes waiting for their root (beyond: read at once)
PULL_WAIT_MS = 1000  # the worker's longest wait in the JVM (how soon it sees a stop)
TIMINGS_KEPT = 10000
# facts only the JVM gatherer reads (the py4j fallback reports without them): the scans'
# read metrics, how the execution ran and the data quality measures (docs/metrics.md)
GATHERER_ONLY = ("scans", "run", "observed")


class Mark:
    """A marker of ``drain()``: everything queued before it has been processed."""

    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n


class StreamItem:
    """An item of the JVM's ``StreamWatch``: a streaming query run started, wrote its
    first data, finished an interval, or ended (its text: ``facts.stream_item``)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


class _Run:
    """What the worker keeps of one streaming query run while it runs."""

    __slots__ = ("facts", "lineage", "inputs", "asset", "batch_outputs")

    def __init__(self, facts: streams.StreamFacts | None, lineage: WriteLineage | None,
                 inputs: tuple[InputLineage, ...], asset: str):
        self.facts = facts
        self.lineage = lineage
        self.inputs = inputs
        self.asset = asset
        self.batch_outputs: set[str] = set()  # foreachBatch writes reported (by output)


def _read_with_query(reading: Reading) -> bool:
    """The reading is a write whose plan (with its query and inputs) was read in full."""
    f = reading.facts
    return (f.succeeded and f.command is not None and f.plan is not None
            and not f.read_error and not (f.plan and f.plan[0].get("light")))


class ExtractionWorker:
    """Reads one session's callbacks on a thread of its own; see the module docstring."""

    def __init__(self, reader: FactReader, sink: Any, options: Options,
                 gatherer: Any = None, handoff_size: int = HANDOFF_SIZE,
                 on_mark: Callable[[int], None] | None = None,
                 tuning: _listener.Py4jTuning | None = None):
        self.reader = reader
        self._sink = sink
        self._options = options
        self._gatherer = gatherer  # None: the Python listener fills self.queue
        self.queue: queue.Queue = queue.Queue(maxsize=handoff_size)
        self._on_mark = on_mark
        self._tuning = tuning
        self._want_reads = callable(getattr(sink, "on_read", None))
        self._want_streams = callable(getattr(sink, "on_stream_metrics", None))
        self.light_reads = True  # False: every plan read in full (fixture recording)
        self._nesting = NestedWrites()
        # nested writes whose plan is read when their root arrives: root id -> readings
        self._deferred: dict[int, list[tuple[_listener.Callback, Reading]]] = {}
        self._releases: list[int] = []  # callbacks done with, for the gatherer to drop
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._last_item = time.monotonic()
        self.marks_done = 0
        self.jvm_dropped = 0  # callbacks the JVM's queue could not take (its count)
        self.stats: dict[str, int] = {"writes": 0, "failed_queries": 0, "reads": 0,
                                      "ignored": 0, "extraction_errors": 0, "partial": 0,
                                      "streams": 0, "stream_items": 0,
                                      "stream_batch_writes": 0, "stream_batch_repeats": 0}
        self._streams: dict[str, _Run] = {}  # streaming query runs, by run id
        self.extraction_ms: list[float] = []  # fact reading + rules, per callback
        # test hook: read every callback through py4j too (no gatherer) and keep the
        # differences from what the reader found (the integration suite requires none)
        self.cross_check = False
        self.fact_mismatches: list[dict[str, Any]] = []
        self._py4j_reader: FactReader | None = None
        # test/recording hook: called with every QueryFacts read (tests/fixtures)
        self.on_facts: Callable[[Any], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="definity-spark-extraction",
                                        daemon=True)
        self._thread.start()

    def mark(self, n: int, timeout: float) -> bool:
        """Queue a mark after everything queued so far (False: the queue stayed full)."""
        if self._gatherer is not None:
            return bool(self._gatherer.mark(n, int(max(0.0, timeout) * 1000)))
        try:
            self.queue.put(Mark(n), timeout=max(0.0, timeout))
            return True
        except queue.Full:
            return False

    def stop(self, timeout: float) -> None:
        """Process what was queued before this call, make held writes final, end."""
        deadline = time.monotonic() + timeout
        with contained("worker.stop"):
            self._stopping = True
            if not self.mark(0, min(1.0, timeout)) and self._gatherer is None:
                self.queue.put(None, timeout=min(1.0, timeout))  # the sentinel of _STOP
            thread = self._thread
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    logger.info("definity-spark: the extraction of a session did not end "
                                "within %.1f s", timeout)
                    return
            for outcome in self._nesting.flush():
                self._dispatch(outcome)
            if self._gatherer is not None and self._releases:
                self._gatherer.release(self._take_releases())

    def counts(self) -> dict[str, int]:
        """Its outcomes' counts and its reader's (phases read by the gatherer, answered
        with the callback, read through py4j after the gatherer failed)."""
        r = self.reader
        return dict(self.stats, gathered=r.gathered, eager_phases=r.eager_phases,
                    fallbacks=r.fallbacks)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the loop ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:  # nothing came: idle
                if time.monotonic() - self._last_item >= IDLE_RELEASE_SECONDS:
                    # a write held for a possible outer command (nesting.py) is final
                    self._last_item = time.monotonic()
                    self._release()
                continue
            if item is _STOP:
                return
            self._last_item = time.monotonic()
            if isinstance(item, StreamItem):
                self._stream(item)
                continue
            if isinstance(item, Mark):
                self._release()
                self.marks_done = max(self.marks_done, item.n)
                if self._on_mark is not None and item.n:
                    with contained("worker.on_mark"):
                        self._on_mark(item.n)
                if self._stopping and item.n == 0:
                    return
                continue
            self._handle(item)

    def _next(self) -> Any:
        """The next callback or mark; None when none came within a wait; _STOP when the
        source is gone."""
        g = self._gatherer
        if g is None:
            try:
                item = self.queue.get(timeout=PULL_WAIT_MS / 1000)
            except queue.Empty:
                return None
            return _STOP if item is None else item
        try:
            text = g.next(PULL_WAIT_MS, self._take_releases())
        except Exception as exc:  # noqa: BLE001 - the JVM went away (SparkContext stopped)
            if not self._stopping:
                logger.info("definity-spark: the query callbacks of a session are no longer "
                            "taken from the JVM (%s: %s)", type(exc).__name__, str(exc)[:200])
            return _STOP
        if text is None:
            return None
        try:
            return self._callback_of(str(text))
        except Exception as exc:  # noqa: BLE001 - a malformed answer: skip it
            logger.debug("gatherer answer not understood: %s", exc)
            return None

    def _callback_of(self, text: str) -> Any:
        """One answer of ``FactGatherer.next``: a callback (with both reading phases for a
        plain write) or a mark."""
        if text.startswith('{"stream'):  # StreamWatch's ("stream" or "stream_error")
            return StreamItem(text)
        line, _, phases = text.partition("\n")
        d = json.loads(line)
        if "mark" in d:
            return Mark(int(d["mark"]))
        self.jvm_dropped = int(d["dropped"])
        eager = None
        if phases:
            begun, _, finished = phases.partition("\n")
            eager = (begun, finished or None)
        return _listener.Callback(
            str(d["func"]), _listener.SeqRef(self._gatherer, int(d["seq"])), d["duration_ns"],
            d["error"], int(d["qe_id"]), eager, d.get("stream_run"))

    def _take_releases(self) -> str:
        """The callbacks done with since the last call, as ``FactGatherer`` takes them
        (comma-separated sequence numbers)."""
        release, self._releases = ",".join(map(str, self._releases)), []
        return release

    # -- one callback --------------------------------------------------------------------
    def _handle(self, cb: _listener.Callback) -> None:
        handed = False  # the callback was deferred or finished (which detaches it)
        try:
            with contained("worker.extract"):
                if self._tuning is not None:
                    self._tuning.server_connections()
                reading = self.reader.begin(cb.func_name, cb.qe, cb.duration_ns,
                                            cb.exception, eager=cb.eager)
                # a micro-batch's write runs nested in the batch's own execution, which is
                # never a callback: nothing to wait for
                if reading.nested_write and self.light_reads and cb.stream_run is None:
                    handed = True
                    self._defer(cb, reading)
                    return
                full_write = False  # a write of this statement was read with its query
                for icb, inner in self._claim_deferred(reading):
                    self._finish(icb, inner, light=full_write)
                    full_write = full_write or _read_with_query(inner)
                handed = True
                self._finish(cb, reading, light=full_write)
        finally:
            if not handed:
                self._detach(cb)

    def _finish(self, cb: _listener.Callback, reading: Reading, light: bool) -> None:
        """Phase 2 of one reading, then classify, pair and dispatch it."""
        try:
            with contained("worker.extract"):
                self.reader.finish(reading, light)
                facts = reading.facts
                if self.cross_check and self._gatherer is not None:
                    self._cross_check(cb, facts, light)
                if self.on_facts is not None:
                    self.on_facts(facts)
                if facts.read_error:
                    self.stats["extraction_errors"] += 1
                started = time.monotonic()
                outcome = extract(facts, self._options, want_reads=self._want_reads)
                reading.spent += time.monotonic() - started
                if len(self.extraction_ms) < TIMINGS_KEPT:  # both reading phases + rules
                    self.extraction_ms.append(reading.spent * 1000.0)
                if cb.stream_run is not None:
                    self._batch_write(cb.stream_run, outcome)
                    return
                for final in self._nesting.feed(outcome):
                    self._dispatch(final)
        finally:
            self._detach(cb)

    def _cross_check(self, cb: _listener.Callback, facts: Any, light: bool) -> None:
        if self._py4j_reader is None:
            self._py4j_reader = FactReader(self.reader.gateway, self.reader.jsession,
                                           self.reader.budget_ms, self.reader.max_plan_nodes)
        other = self._py4j_reader.read(cb.func_name, cb.qe, cb.duration_ns, cb.exception,
                                       light=light).to_json()
        mine = facts.to_json()
        for only_gathered in GATHERER_ONLY:
            mine.pop(only_gathered, None)
            other.pop(only_gathered, None)
        if mine != other and len(self.fact_mismatches) < 100:
            self.fact_mismatches.append({
                "func_name": cb.func_name, "root": facts.root_class,
                "differ": {k: (mine.get(k), other.get(k)) for k in mine
                           if mine.get(k) != other.get(k)}})

    def _detach(self, cb: _listener.Callback) -> None:
        with contained("worker.detach"):
            gateway = self.reader.gateway
            for obj in (cb.qe, cb.exception):
                if isinstance(obj, _listener.SeqRef):
                    if obj.fetched() is not None:
                        gateway.detach(obj.fetched())
                    self._releases.append(obj.seq)
                elif obj is not None and not isinstance(obj, str):
                    gateway.detach(obj)

    def _defer(self, cb: _listener.Callback, reading: Reading) -> None:
        root = reading.facts.root_execution_id
        self._deferred.setdefault(root, []).append((cb, reading))  # type: ignore[arg-type]
        while len(self._deferred) > MAX_DEFERRED_GROUPS:  # a root that never came
            oldest = next(iter(self._deferred))
            for icb, inner in self._deferred.pop(oldest):
                self._finish(icb, inner, light=False)

    def _claim_deferred(self, reading: Reading) -> list[tuple[_listener.Callback, Reading]]:
        """The nested writes whose root this callback is (as ``NestedWrites`` pairs them:
        by execution id, else, for an outer command without one (Spark 3.5), the oldest
        group whose QueryExecutions were created after it)."""
        if not self._deferred:
            return []
        f = reading.facts
        if f.execution_id is not None:
            return self._deferred.pop(f.execution_id, [])
        if not reading.wrapper:
            return []
        for key, group in self._deferred.items():
            if f.qe_id is None or all(r.facts.qe_id is None or r.facts.qe_id > f.qe_id
                                      for _, r in group):
                return self._deferred.pop(key)
        return []

    def _release(self) -> None:
        """Idle or drained: deferred and held writes are read and made final."""
        with contained("worker.release"):
            deferred, self._deferred = self._deferred, {}
            for group in deferred.values():
                for icb, inner in group:
                    self._finish(icb, inner, light=False)
            for outcome in self._nesting.release_held():
                self._dispatch(outcome)

    # -- Structured Streaming (lineage/streams.py; the JVM side: StreamWatch.java) ---------
    def _stream(self, item: StreamItem) -> None:
        """A run started (its facts), wrote its first data (its transformation), ended an
        interval or itself (its metrics; a failure counted and logged)."""
        with contained("worker.stream"):
            self.stats["stream_items"] += 1
            raw, facts = stream_item(item.text)
            kind, run_id = raw.get("stream"), str(raw.get("run_id"))
            if kind == "start":
                self.stats["streams"] += 1
                lineage, inputs = None, ()
                asset = str(raw.get("name") or raw.get("id"))
                if facts is not None:
                    inputs = streams.stream_inputs(facts, self._options)
                    lineage = streams.stream_lineage(facts, self._options)
                    asset = streams.asset_name(facts, self._options)
                self._streams[run_id] = _Run(facts, lineage, inputs, asset)
                return
            run = self._streams.get(run_id)
            if run is None:  # (its start was not read: a stream_error item)
                logger.debug("streaming item without its run: %s", item.text[:300])
                return
            if kind == "data":
                if run.lineage is not None:
                    self._dispatch(Outcome(WRITE, lineage=run.lineage, func_name="stream"))
                return
            end = kind == "end"
            if end:
                del self._streams[run_id]
            body = raw.get("body") or {}
            error = body.get("error") if end else None
            link = run.facts.link if run.facts is not None else None
            if self._want_streams:
                self._sink.on_stream_metrics(run.asset, streams.interval_metrics(body, end),
                                             link, end, error)
            if end and error:
                logger.info("definity-spark: streaming query %s failed: %s", run.asset,
                            str(error)[:300])

    def _batch_write(self, run_id: str, outcome: Outcome) -> None:
        """A write of a ``foreachBatch`` function: reported once per run and output,
        linked to its run, with the run's sources as inputs."""
        run = self._streams.get(run_id)
        if outcome.kind != WRITE or outcome.lineage is None or run is None \
                or run.facts is None:
            self.stats["ignored"] += 1
            return
        self.stats["stream_batch_writes"] += 1
        name = outcome.lineage.output.name
        if name in run.batch_outputs:
            self.stats["stream_batch_repeats"] += 1
            return
        run.batch_outputs.add(name)
        lineage = streams.link_batch_write(outcome.lineage, run.facts, run.inputs)
        self._dispatch(Outcome(WRITE, lineage=lineage, func_name=outcome.func_name))

    def _dispatch(self, outcome: Outcome) -> None:
        with contained("worker.sink"):
            if outcome.kind == WRITE and outcome.lineage is not None:
                self.stats["writes"] += 1
                lineage = outcome.lineage
                if lineage.partial:
                    self.stats["partial"] += 1
                if self._options.quality:
                    # the columns the setting asks for, by the write's exact name
                    lineage = replace(lineage, quality=quality.select(
                        self._options.quality, lineage.output.name,
                        [c for c, _ in lineage.output.schema], lineage.quality))
                self._sink.on_write(lineage)
            elif outcome.kind == FAILED:
                self.stats["failed_queries"] += 1
                logger.info("definity-spark: query failed (%s): %s", outcome.func_name,
                            (outcome.error or "")[:300])
                self._sink.on_query_failed(outcome.func_name, outcome.error or "")
            elif outcome.kind == READ:
                self.stats["reads"] += 1
                if self._want_reads:
                    self._sink.on_read(outcome.func_name, outcome.inputs)
            else:
                self.stats["ignored"] += 1
                logger.debug("query not reported (%s): %s", outcome.func_name, outcome.reason)


_STOP = object()
