"""SessionObserver: listens to one SparkSession and hands each write to a sink.

Flow: Spark's listener bus -> ``PyQueryExecutionListener`` (snapshot, bounded hand-off
queue) -> the extraction worker thread (``FactReader`` reads the QueryExecution once,
``rules.extract`` classifies it, ``NestedWrites`` pairs nested executions) -> the sink
(``on_write`` / ``on_query_failed`` / optional ``on_read``). The observer never builds
payloads and never raises into the host: every boundary is ``contained``.

The JVM listener: by default (``spark.definity.listener.onBus``) ``start`` compiles the
``FactGatherer`` (facts.py, gatherer.py) and puts it on a queue of Spark's listener bus
that Spark runs anyway (``listener.register_on_bus``), watching the session's query
ends, so that no Python listener is registered and Spark starts no ``shared`` queue.
Otherwise, once the worker has compiled it, it swaps it in for the Python listener
(``listener.swap``). Callbacks are then queued inside the JVM, off Spark's listener bus
in microseconds, and a pump thread takes them (``FactGatherer.next``: one py4j call
each) into the same hand-off queue, as ``Callback``s naming their QueryExecution by
sequence number (``SeqRef``); the JVM drops it when the worker is done (``release``).
For a plain write (``facts.EAGER_ROOTS``, not nested) that same call also answers both
reading phases, so the worker reads it without another py4j call. A callback that
reaches both listeners during the swap is read once: its Python copy comes first and its
JVM copy is skipped. Without Janino (or ``jvm_reader`` off) the Python listener stays.

Reading in the helper process (``spark.definity.extraction.process``, spark/helper.py):
once the JVM listener is in place, the worker attaches the session to the delivery
helper (``_attach_helper``), and when nothing read here is still waiting for a later
callback (``_maybe_forward``) the pump writes each callback's text to the helper instead
of the hand-off queue. There another ``SessionObserver`` (``run_in_helper``, ``take``)
reads it with its own py4j connection and the driver's gatherer; drain marks come back
as ``helper_mark``. Once forwarding, the pump hands the gatherer over (``_hand_over``):
it sends the helper a last text, ``{"pull": ...}``, after everything it forwarded, and
ends; from then on the helper's worker takes the callbacks from the JVM itself
(``_pull``), so the driver's interpreter does nothing per query. If the helper dies,
``helper_lost`` reads here what it had not been given and starts the pump again.

Nested writes (the data write of a CTAS or ``saveAsTable``) arrive while their outer
command is still running. Their plan is read when the root's callback has arrived
(``_deferred``): then the JVM is no longer busy with the statement, and the outer
command, whose query is the one just read, is read without its query (``light``). One
plan serialisation per CTAS instead of two, neither competing with the statement.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import queue
import threading
import time
from typing import Any, Callable

from definity_spark._internal import contained
from definity_spark.lineage.nesting import NestedWrites
from definity_spark.lineage.rules import FAILED, READ, WRITE, Options, Outcome, extract
from definity_spark.spark import listener as _listener
from definity_spark.spark.facts import FactReader, Reading

logger = logging.getLogger("definity_spark.spark")

DEFAULT_HANDOFF_SIZE = 1000
DEFAULT_BUDGET_MS = 2000
DEFAULT_MAX_PLAN_NODES = 5000
IDLE_RELEASE_SECONDS = 5.0  # a held write (see nesting.py) is final after this idle time
MAX_DEFERRED_GROUPS = 64  # nested writes waiting for their root (beyond: read at once)
PUMP_WAIT_MS = 1000  # the pump's longest wait in the JVM (how soon it sees a stop)
# With this many callbacks waiting for the worker, the pump drops the plan that came with a
# callback (the worker asks for it again when it gets there): memory stays bounded by
# EAGER_BACKLOG plans, not by the hand-off queue's size.
EAGER_BACKLOG = 32
RELEASE_BATCH = 16  # in the helper: callbacks done with, released in one py4j call


class _Mark:
    """Hand-off queue marker of ``drain()``: everything before it has been taken."""

    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n


def _read_with_query(reading: Reading) -> bool:
    """The reading is a write whose plan (with its query and inputs) was read in full."""
    f = reading.facts
    return (f.succeeded and f.command is not None and f.plan is not None
            and not f.read_error and not (f.plan and f.plan[0].get("light")))


def _setting(settings: Any, name: str, default: Any) -> Any:
    value = getattr(settings, name, None) if settings is not None else None
    return default if value is None else value


class SessionObserver:
    """Observe one SparkSession; see the module docstring."""

    def __init__(self, spark: Any, settings: Any, sink: Any, helper: Any = None,
                 gateway: Any = None, handoff_size: int = DEFAULT_HANDOFF_SIZE):
        if gateway is not None:  # in the helper process: the session by reference
            self._jsession = spark
            self._gateway = gateway
            self._jsc = None
        elif getattr(spark, "_jsparkSession", None) is not None:  # a pyspark SparkSession
            self._jsession = spark._jsparkSession
            self._gateway = spark.sparkContext._gateway
            self._jsc = spark.sparkContext._jsc
        else:  # a py4j JavaObject of the JVM SparkSession
            from pyspark import SparkContext

            self._jsession = spark
            self._gateway = SparkContext._gateway
            self._jsc = SparkContext._active_spark_context._jsc  # type: ignore[union-attr]
        self._sink = sink
        self._options = Options(
            normalize_s3=bool(_setting(settings, "normalize_s3", True)),
            trim_partition_dirs=bool(_setting(settings, "trim_partition_dirs", True)),
            redaction_regex=_setting(settings, "redaction_regex", None),
        )
        self._queue: queue.Queue = queue.Queue(maxsize=handoff_size)
        self._tuning = _listener.Py4jTuning(self._gateway)
        self._listener = _listener.PyQueryExecutionListener(
            self._queue, on_first_call=self._tuning.callback_connection)
        self.jvm_reader = bool(_setting(settings, "jvm_listener", True))
        self.on_bus = True
        self.bus_queue: str | None = None  # the listener-bus queue the gatherer is on
        self._reader = FactReader(
            self._gateway, self._jsession,
            budget_ms=int(_setting(settings, "extraction_budget_ms", DEFAULT_BUDGET_MS)),
            max_plan_nodes=int(_setting(settings, "max_plan_nodes", DEFAULT_MAX_PLAN_NODES)),
            gather=self.jvm_reader, queue_size=self._queue.maxsize)
        # the JVM listener (module docstring), once swapped in, and its pump
        self._jvm_listener: Any = None
        self._pump: threading.Thread | None = None
        self._pump_stop = False
        self._jvm_dropped = 0
        self._releases: list[int] = []  # taken callbacks done with, sent by the pump
        self._swap_lock = threading.Lock()
        self._swapping = False
        # (qe id, function, duration) of Python callbacks read since the swap began
        self._overlap: collections.deque = collections.deque(maxlen=64)
        self._marks = itertools.count(1)
        self._marks_done = 0
        self.swap_between: Callable[[], None] | None = None  # test hook (listener.swap)
        self._nesting = NestedWrites()
        # nested writes whose plan is read when their root arrives: root id -> readings
        self._deferred: dict[int, list[tuple[_listener.Callback, Reading]]] = {}
        self.light_reads = True  # False: every plan read in full (fixture recording)
        self._want_reads = callable(getattr(sink, "on_read", None))
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0  # callbacks taken by the worker and not finished yet
        self._registered = False
        self._stopping = False
        self.stats: dict[str, int] = {"writes": 0, "failed_queries": 0, "reads": 0,
                                      "ignored": 0, "extraction_errors": 0, "partial": 0}
        self.extraction_ms: list = []  # time of the last extractions (bounded)
        # test/recording hook: called with every QueryFacts read (tests/fixtures)
        self.on_facts: Callable[[Any], None] | None = None
        # test hook: read every callback through py4j too (no gatherer) and keep the
        # differences from what the reader found (the integration suite requires none)
        self.cross_check = False
        self.fact_mismatches: list[dict[str, Any]] = []
        self._py4j_reader: FactReader | None = None
        # extraction in the helper process (``spark.definity.extraction.process``): the
        # ProcessDelivery that takes the JVM listener's callbacks once ``_forwarding``
        self._helper = helper if _setting(settings, "helper_process", False) else None
        self._remote_wanted = False  # attached: forward once nothing is held here
        self._forwarding = False
        self._local_items = 0  # callbacks the pump is putting into the local queue
        # the helper takes the callbacks from the JVM itself (_hand_over): in the driver,
        # the gatherer's count of callbacks taken then; in the helper, that its worker pulls
        self._handed_at: int | None = None
        self._pulling = False
        self._last_item = time.monotonic()  # the pulling worker's idle time (_release)
        self._last_mark = 0
        self._session_ref: Any = None  # the session's py4j reference the helper uses
        self.helper_key: int | None = None
        self.remote_stats: dict[str, Any] = {}  # the helper's observer's, at its last mark
        # the helper's per-callback times (worker entry to sink), sent with its marks
        self.handle_ms: list[float] = []
        # in the helper process: called with each mark's number once it is processed
        self.on_mark: Callable[[int], None] | None = None
        self._in_helper = False

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> bool:
        """Register the listener (idempotent per JVM session). True if this call did."""
        with contained("observer.start"):
            if self._registered:
                return False
            self._tuning.server_connections()
            if not self._register():
                return False
            self._registered = True
            self._stopping = False
            self._pump_stop = False
            self._ensure_worker()
            return True
        return False

    def _register(self) -> bool:
        """The JVM listener on one of the listener bus's queues, at once, when it can be
        (``spark.definity.listener.onBus``; the gatherer is compiled here, ~0.35 s the first
        time in a fresh JVM); else the Python listener, swapped for the JVM one later."""
        if self.jvm_reader and self.on_bus and \
                _listener.registered_owner(self._gateway, self._jsession) is None:
            with contained("observer.bus_register"):
                g = self._reader.gatherer()
                if g is not None:
                    queue_name = _listener.register_on_bus(self._gateway, self._jsession, g,
                                                           self)
                    if queue_name:
                        self.bus_queue = queue_name
                        self._jvm_listener = g
                        self._start_pump()
                        return True
        return _listener.register(self._gateway, self._jsession, self._listener, self)

    def stop(self, timeout: float = 5.0) -> bool:
        """Unregister, process what was received, flush pending nested writes."""
        ok = False
        with contained("observer.stop"):
            if not self._registered:
                return True
            deadline = time.monotonic() + timeout
            ok = self.drain(timeout)
            _listener.unregister(self._gateway, self._jsession, self)
            self._registered = False
            self._stopping = True
            self._stop_pump(deadline)
            self._queue.put(None)  # wake the worker so it exits; never blocks for long
            for outcome in self._nesting_flush():
                self._dispatch(outcome)
        return ok

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until Spark's listener bus is empty and every callback received so far has
        been processed (how tests are deterministic without sleeping)."""
        deadline = time.monotonic() + timeout
        with contained("observer.drain"):
            try:
                self._jsc.sc().listenerBus().waitUntilEmpty(int(max(0.0, timeout) * 1000))
            except Exception as exc:  # timeout of the bus: report, then still wait for ours
                logger.debug("listener bus did not drain: %s", exc)
            # after everything received so far: make held writes final
            n = next(self._marks)
            self._last_mark = n
            with self._swap_lock:
                left = max(0.0, deadline - time.monotonic())
                if self._jvm_listener is not None:  # after the callbacks the JVM queued
                    if not self._jvm_listener.mark(n, int(left * 1000)):
                        return False
                else:
                    try:
                        self._queue.put(_Mark(n), timeout=left)
                    except queue.Full:
                        return False
            with self._idle:
                while (self._marks_done < n or self._queue.unfinished_tasks > 0
                       or self._in_flight > 0):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._idle.wait(min(left, 0.05))
            return True
        return False

    @property
    def listener(self) -> _listener.PyQueryExecutionListener:
        return self._listener

    @property
    def listener_mode(self) -> str:
        """``jvm`` once the JVM listener is swapped in, else ``python``."""
        return "jvm" if self._jvm_listener is not None else "python"

    @property
    def dropped(self) -> int:
        """Callbacks lost because a hand-off queue was full (Python's or the JVM's)."""
        return int(self._listener.dropped) + self._jvm_dropped

    # -- the JVM listener ----------------------------------------------------------------
    def _swap_in(self) -> None:
        """On the worker, before its first callback: compile the gatherer (once per JVM)
        and swap it in as the session's listener, then start its pump."""
        with contained("observer.swap"):
            if not self.jvm_reader or self._jvm_listener is not None:
                return
            g = self._reader.gatherer()
            if g is None:
                return
            with self._swap_lock:
                if self._stopping or not self._registered:
                    return
                self._swapping = True  # Python callbacks read from now on are recorded
                if not _listener.swap(self._gateway, self._jsession, self, g,
                                      self.swap_between):
                    return
                self._jvm_listener = g
            self._start_pump()

    def _start_pump(self) -> None:
        self._pump = threading.Thread(target=self._pump_run, name="definity-spark-pump",
                                      daemon=True)
        self._pump.start()

    def _pump_run(self) -> None:
        """Take the JVM listener's callbacks into the hand-off queue (module docstring)."""
        g = self._jvm_listener
        try:
            self._tuning.server_connections()
            while not self._pump_stop:
                if self._forwarding and self._hand_over(g):
                    return
                text = g.next(PUMP_WAIT_MS, self._take_releases())
                if text is None:
                    continue
                text = str(text)
                if self._forward(text):
                    continue
                try:
                    item = self._callback_of(text, g)
                    while not self._pump_stop:  # the worker is behind: the JVM queue holds
                        try:
                            self._queue.put(item, timeout=0.5)
                            break
                        except queue.Full:
                            continue
                finally:
                    with self._lock:
                        self._local_items -= 1
        except Exception as exc:  # noqa: BLE001 - the JVM went away (SparkContext stopped)
            if not self._pump_stop:
                logger.info("definity-spark: the query callbacks of this session are no "
                            "longer taken from the JVM (%s: %s)", type(exc).__name__,
                            str(exc)[:200])

    def _callback_of(self, text: str, g: Any) -> Any:
        """The hand-off queue's item for one answer of ``FactGatherer.next``."""
        line, _, phases = text.partition("\n")
        d = json.loads(line)
        if "mark" in d:
            return _Mark(int(d["mark"]))
        self._jvm_dropped = int(d["dropped"])
        eager = None
        if phases:  # both reading phases came with it (FactGatherer.setEager)
            begun, _, finished = phases.partition("\n")
            backlog = self._queue.qsize() >= EAGER_BACKLOG
            eager = (begun, None if backlog or not finished else finished)
        return _listener.Callback(
            str(d["func"]), _listener.SeqRef(g, int(d["seq"])), d["duration_ns"],
            d["error"], time.monotonic(), int(d["qe_id"]), eager)

    # -- extraction in the helper process -------------------------------------------------
    def _forward(self, text: str) -> bool:
        """The pump: hand one answer of the JVM listener to the helper (True), or count it
        as going into the local queue (False)."""
        with self._lock:
            helper = self._helper if self._forwarding else None
            if helper is None:
                self._local_items += 1
                return False
        if helper.forward(self.helper_key, text):
            return True
        # the helper is gone (helper_lost() turns forwarding off): read it here
        with self._lock:
            self._local_items += 1
        return False

    def _hand_over(self, g: Any) -> bool:
        """The pump, forwarding: hand the gatherer to the helper and end (True). The
        ``pull`` text follows every callback forwarded before it, so the helper reads them
        first; callbacks the JVM queues meanwhile wait there for its first ``next``."""
        release = self._take_releases()
        if release:
            g.release(release)
        with self._lock:
            helper = self._helper if self._forwarding else None
            if helper is None:
                return False
            taken = int(g.taken())  # the pump is the only taker until the helper's first
            if not helper.forward(self.helper_key, json.dumps({"pull": taken}), always=True):
                return False
            self._handed_at = taken
            self._pump = None
        logger.debug("definity-spark: the helper takes the callbacks of session %s",
                     self.helper_key)
        return True

    def pulled_by_helper(self) -> int:
        """At most how many callbacks the helper took from the JVM itself."""
        handed_at = self._handed_at
        if handed_at is None or self._jvm_listener is None:
            return 0
        try:
            return max(0, int(self._jvm_listener.taken()) - handed_at)
        except Exception:  # noqa: BLE001 - the JVM is gone: no more callbacks either way
            return 0

    def _attach_helper(self) -> None:
        """On the worker, once the JVM listener is in place: let the helper read this
        session's callbacks. It connects to this JVM through py4j with the gateway's own
        address and secret (sent down the helper's socket, never in argv or environment),
        and uses the gatherer and the session by their py4j references."""
        helper, g = self._helper, self._jvm_listener
        if helper is None:
            return
        if g is None:
            self._helper = None
            return
        with contained("observer.helper_attach"):
            params = self._gateway.gateway_parameters
            self._session_ref = self._gateway.jvm.java.util.Objects.requireNonNull(
                self._jsession)
            self.helper_key = _listener.session_key(self._gateway, self._jsession)
            hand_over = getattr(self._sink, "number_in", None)
            if hand_over is not None:  # the helper numbers the task's transformations
                hand_over(helper)
            ok = helper.attach(self, {
                "key": self.helper_key,
                "gateway": {"address": params.address, "port": params.port,
                            "token": params.auth_token},
                "session": self._session_ref._target_id, "gatherer": g._target_id,
                "budget_ms": self._reader.budget_ms,
                "max_plan_nodes": self._reader.max_plan_nodes,
                "want_reads": self._want_reads, "light_reads": self.light_reads,
            })
            if ok:
                self._tuning.server_connections(force=True)  # the helper's connection
                self._remote_wanted = True
                logger.debug("definity-spark: callbacks of session %s are read in the helper",
                             self.helper_key)
                return
        self._helper = None

    def _maybe_forward(self) -> None:
        """The worker, between callbacks: from now on the pump forwards, when nothing the
        helper's order depends on is left here (queue empty, no nested write held)."""
        if not self._remote_wanted or self._forwarding:
            return
        with self._lock:
            if self._helper is None:
                return
            if self._local_items == 0 and self._queue.empty() and not self._deferred \
                    and self._nesting.idle():
                if self._overlap:
                    # callbacks read here from the Python listener during the swap: their
                    # JVM copies, still to come through the pump, are skipped there too
                    self._helper.forward(self.helper_key,
                                         json.dumps({"overlap": list(self._overlap)}))
                self._forwarding = True

    def helper_mark(self, n: int, stats: dict[str, Any], extraction_ms: Any = (),
                    handle_ms: Any = ()) -> None:
        """The helper processed the mark ``n`` (its reader thread calls this), with its
        counts and the extraction times since its last mark."""
        with self._idle:
            if stats:
                self.remote_stats = stats
            for mine, theirs in ((self.extraction_ms, extraction_ms),
                                 (self.handle_ms, handle_ms)):
                mine.extend(float(x) for x in theirs[:max(0, 10000 - len(mine))])
            self._marks_done = max(self._marks_done, n)
            self._idle.notify_all()

    def helper_lost(self, texts: list[str]) -> None:
        """The helper is gone: the callbacks it had not been given (``texts``) and later
        ones are read here; marks sent to it count as done (what it held is lost)."""
        with self._lock:
            self._forwarding = False
            self._remote_wanted = False
            self._helper = None
            handed, self._handed_at = self._handed_at is not None, None
        g = self._jvm_listener
        for text in texts:
            if text.startswith(('{"overlap"', '{"pull"')):
                continue
            with contained("observer.helper_lost"):
                self._queue.put(self._callback_of(text, g), timeout=1.0)
        if handed and g is not None and not self._pump_stop:
            with contained("observer.pump_restart"):
                # The JVM thread that served the helper's `next` may still be waiting in
                # it, for up to PUMP_WAIT_MS: a mark ends that wait, else it would take the
                # next callback and lose it with its answer. Then the pump, after the
                # callbacks above (in the queue already).
                g.mark(0, 100)
                self._start_pump()
        with self._idle:
            self._marks_done = max(self._marks_done, self._last_mark)
            self._idle.notify_all()

    def _detach_helper(self, timeout: float) -> None:
        helper, key = self._helper, self.helper_key
        if helper is None or not self._remote_wanted:
            return
        with contained("observer.helper_detach"):
            reply = helper.detach(key, timeout)
            if isinstance(reply.get("observer"), dict):
                self.remote_stats = reply["observer"]
        self._session_ref = None

    # in the helper process ------------------------------------------------------------
    def run_in_helper(self, g: Any, on_mark: Callable[[int], None]) -> None:
        """In the helper: read the callbacks ``take`` is given, with ``g`` (the driver's
        gatherer, by reference) as the reader's gatherer."""
        self._in_helper = True
        self.on_mark = on_mark
        self._jvm_listener = g
        self._reader.use_gatherer(g)
        self._registered = True
        self._ensure_worker()

    def take(self, text: str) -> None:
        """In the helper: one callback the driver's pump forwarded (waits when full)."""
        if text.startswith('{"overlap"'):  # read in the driver already (_maybe_forward)
            self._overlap.extend(tuple(x) for x in json.loads(text)["overlap"])
            return
        if text.startswith('{"pull"'):  # the pump handed the gatherer over (_hand_over)
            self._pulling = True
            self._queue.put(None)  # the worker stops waiting on the queue
            return
        item = self._callback_of(text, self._jvm_listener)
        self._queue.put(item)

    def stop_in_helper(self, timeout: float) -> None:
        """In the helper: read what was forwarded, make held writes final, end."""
        deadline = time.monotonic() + timeout
        with contained("observer.helper_stop"):
            if self._pulling:  # the worker may wait in the JVM: a mark ends its wait
                self._pulling = False
                with contained("observer.helper_stop_pull"):
                    self._jvm_listener.mark(0, 100)
            self._queue.put(_Mark(0), timeout=timeout)
            with self._idle:
                while self._queue.unfinished_tasks > 0 or self._in_flight > 0:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._idle.wait(min(left, 0.05))
            self._stopping = True
            self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
            for outcome in self._nesting_flush():
                self._dispatch(outcome)
            self._send_releases(force=True)

    def _send_releases(self, force: bool = False) -> None:
        """In the helper: tell the JVM which callbacks are done (the pump does it in the
        driver, with its next call; so does the helper's worker while it pulls)."""
        if not self._in_helper or not self._releases or self._pulling:
            return
        if not force and len(self._releases) < RELEASE_BATCH:
            return
        release = self._take_releases()
        with contained("observer.release_seqs"):
            self._jvm_listener.release(release)

    def _take_releases(self) -> str:
        """The callbacks done with since the last call, as ``FactGatherer.release`` takes
        them (comma-separated sequence numbers)."""
        with self._lock:
            release, self._releases = ",".join(map(str, self._releases)), []
        return release

    def _stop_pump(self, deadline: float | None = None) -> None:
        g, pump = self._jvm_listener, self._pump
        self._pump_stop = True
        if g is None:
            return
        with contained("observer.pump_stop"):
            g.mark(0, 100)  # wakes the pump's wait
            if pump is not None:
                pump.join(2.0)
            # the helper's reads end while the gatherer still holds the QueryExecutions
            self._detach_helper(5.0 if deadline is None
                                else min(5.0, max(0.5, deadline - time.monotonic())))
            self._jvm_dropped = int(g.dropped())  # also those after the pump's last take
            g.clear()  # the QueryExecutions it still held
        self._jvm_listener = None
        self._pump = None
        self._swapping = False
        self.bus_queue = None

    # -- worker ------------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name="definity-spark-extraction",
                                            daemon=True)
            self._worker.start()

    def _run(self) -> None:
        self._swap_in()
        self._attach_helper()
        while True:
            self._maybe_forward()
            if self._pulling and self._queue.empty():
                self._pull()
            try:
                if self._pulling:
                    cb = self._queue.get_nowait()
                else:
                    cb = self._queue.get(timeout=IDLE_RELEASE_SECONDS)
            except queue.Empty:
                if self._pulling and \
                        time.monotonic() - self._last_item < IDLE_RELEASE_SECONDS:
                    continue
                # idle: a write held for a possible outer command (nesting.py) is final
                self._last_item = time.monotonic()
                self._release()
                self._send_releases(force=True)
                continue
            try:
                if cb is None:
                    if self._stopping:
                        return
                    continue
                if isinstance(cb, _Mark):
                    self._release()
                    with self._idle:
                        self._marks_done = max(self._marks_done, cb.n)
                    if self.on_mark is not None and cb.n:
                        self._send_releases(force=True)
                        with contained("observer.on_mark"):
                            self.on_mark(cb.n)
                    continue
                with self._lock:
                    self._in_flight += 1
                if self._in_helper:
                    started = time.perf_counter()
                    self._handle(cb)
                    if len(self.handle_ms) < 10000:
                        self.handle_ms.append((time.perf_counter() - started) * 1000.0)
                else:
                    self._handle(cb)
            finally:
                with self._idle:
                    if cb is not None and not isinstance(cb, _Mark):
                        self._in_flight -= 1
                    self._queue.task_done()
                    self._idle.notify_all()
                self._send_releases()

    def _pull(self) -> None:
        """In the helper, the queue empty: wait in the JVM for the next callback (at most
        ``PUMP_WAIT_MS``), handing back those done with on the way."""
        g = self._jvm_listener
        try:
            text = g.next(PUMP_WAIT_MS, self._take_releases())
        except Exception as exc:  # noqa: BLE001 - the driver's JVM went away
            self._pulling = False
            logger.info("definity-spark: the helper no longer takes query callbacks from "
                        "the JVM (%s: %s)", type(exc).__name__, str(exc)[:200])
            return
        if text is not None:
            self._last_item = time.monotonic()
            with contained("observer.pull"):
                self._queue.put(self._callback_of(str(text), g), timeout=1.0)

    def _handle(self, cb: _listener.Callback) -> None:
        handed = False  # the callback was deferred or finished (which detaches it)
        try:
            with contained("observer.extract"):
                if cb.qe_id is not None and \
                        (cb.qe_id, cb.func_name, cb.duration_ns) in self._overlap:
                    return  # read already, from the Python listener (during the swap)
                self._tuning.server_connections()
                reading = self._reader.begin(cb.func_name, cb.qe, cb.duration_ns,
                                             cb.exception, eager=cb.eager)
                if self._swapping and cb.qe_id is None:
                    self._overlap.append((reading.facts.qe_id, cb.func_name, cb.duration_ns))
                if reading.nested_write and self.light_reads:
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
            with contained("observer.extract"):
                self._reader.finish(reading, light)
                facts = reading.facts
                if self.cross_check:
                    self._cross_check(cb, facts, light)
                if self.on_facts is not None:
                    self.on_facts(facts)
                if facts.read_error:
                    self.stats["extraction_errors"] += 1
                started = time.monotonic()
                outcome = extract(facts, self._options, want_reads=self._want_reads)
                reading.spent += time.monotonic() - started
                if len(self.extraction_ms) < 10000:  # fact reading (both phases) + rules
                    self.extraction_ms.append(reading.spent * 1000.0)
                for final in self._nesting.feed(outcome):
                    self._dispatch(final)
        finally:
            self._detach(cb)

    def _cross_check(self, cb: _listener.Callback, facts: Any, light: bool) -> None:
        if self._py4j_reader is None:
            self._py4j_reader = FactReader(self._gateway, self._jsession,
                                           budget_ms=self._reader.budget_ms,
                                           max_plan_nodes=self._reader.max_plan_nodes,
                                           gather=False)
        other = self._py4j_reader.read(cb.func_name, cb.qe, cb.duration_ns, cb.exception,
                                       light=light).to_json()
        mine = facts.to_json()
        if mine != other:
            self.fact_mismatches.append({
                "func_name": cb.func_name, "root": facts.root_class,
                "differ": {k: (mine.get(k), other.get(k)) for k in mine
                           if mine.get(k) != other.get(k)}})

    def _detach(self, cb: _listener.Callback) -> None:
        with contained("observer.detach"):
            for obj in (cb.qe, cb.exception):
                if isinstance(obj, _listener.SeqRef):
                    if obj.fetched() is not None:
                        self._gateway.detach(obj.fetched())
                    with self._lock:
                        self._releases.append(obj.seq)
                elif obj is not None and not isinstance(obj, str):
                    self._gateway.detach(obj)

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
        """Queue idle or drained: deferred and held writes are read and made final."""
        with contained("observer.release"):
            deferred, self._deferred = self._deferred, {}
            for group in deferred.values():
                for icb, inner in group:
                    self._finish(icb, inner, light=False)
            for outcome in self._nesting.release_held():
                self._dispatch(outcome)

    def _nesting_flush(self):
        with self._lock:
            return self._nesting.flush()

    def _dispatch(self, outcome: Outcome) -> None:
        with contained("observer.sink"):
            if outcome.kind == WRITE and outcome.lineage is not None:
                self.stats["writes"] += 1
                if outcome.lineage.partial:
                    self.stats["partial"] += 1
                self._sink.on_write(outcome.lineage)
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
