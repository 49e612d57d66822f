"""SessionObserver: listens to one SparkSession and gets its queries read, in one place.

The listener is the JVM gatherer on a queue of Spark's listener bus (``gatherer.py``,
``listener.register_on_bus``); where it cannot be loaded, the py4j Python listener
(logged once at WARNING, with the reason). Who reads the callbacks is the session's one
``State``:

* ``ATTACHING``: the helper process (``definity_spark.helper``) is being asked to read
  this session; the callbacks wait in the JVM's queue meanwhile.
* ``IN_HELPER``: the helper takes the callbacks from the JVM itself, through its own py4j
  connection, and reads them: the driver's interpreter does nothing per query.
* ``IN_DRIVER``: an extraction worker of this process reads them (``worker.py``): the
  Python listener's, or the gatherer's when there is no helper, it could not attach, or
  it died (``helper_lost``).
* ``STOPPED``.

The allowed moves are ``TRANSITIONS``; ``_move`` checks them. Draining (``drain``) sends
a mark through the same queue as the callbacks and waits until whoever reads them has
processed it.
"""

from __future__ import annotations

import enum
import itertools
import json
import logging
import threading
import time
from typing import Any, Callable

from definity_spark._internal import contained
from definity_spark.lineage.rules import Options
from definity_spark.spark import listener as _listener
from definity_spark.spark import metric_text
from definity_spark.spark import quality as _quality
from definity_spark.spark.facts import FactReader, make_gatherer
from definity_spark.spark.worker import HANDOFF_SIZE, ExtractionWorker

logger = logging.getLogger("definity_spark.spark")


class State(enum.Enum):
    NEW = "new"
    ATTACHING = "attaching"
    IN_HELPER = "in_helper"
    IN_DRIVER = "in_driver"
    STOPPED = "stopped"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.NEW: frozenset({State.ATTACHING, State.IN_DRIVER, State.STOPPED}),
    State.ATTACHING: frozenset({State.IN_HELPER, State.IN_DRIVER, State.STOPPED}),
    State.IN_HELPER: frozenset({State.IN_DRIVER, State.STOPPED}),  # the helper died
    State.IN_DRIVER: frozenset({State.STOPPED}),
    State.STOPPED: frozenset(),
}

# test hook (the integration suite): every callback is also read through py4j alone, and
# the two readings must agree (ExtractionWorker.cross_check), in the helper too
CROSS_CHECK = False
LISTENER_JVM = "jvm"  # the gatherer on a listener-bus queue
LISTENER_PYTHON = "python"  # the py4j QueryExecutionListener (fallback)
_warned_fallback = False


def _call(hook: Callable[[str], None] | None, value: str) -> None:
    if hook is not None:
        with contained("observer.on_registered"):
            hook(value)


class SessionObserver:
    """Observe one SparkSession; see the module docstring."""

    def __init__(self, spark: Any, settings: Any, sink: Any, helper: Any = None,
                 handoff_size: int = HANDOFF_SIZE):
        if getattr(spark, "_jsparkSession", None) is not None:  # a pyspark SparkSession
            self._jsession = spark._jsparkSession
            self._gateway = spark.sparkContext._gateway
            self._jsc = spark.sparkContext._jsc
        else:  # a py4j JavaObject of the JVM SparkSession
            from pyspark import SparkContext

            self._jsession = spark
            self._gateway = SparkContext._gateway
            self._jsc = SparkContext._active_spark_context._jsc  # type: ignore[union-attr]
        self._settings = settings
        self._sink = sink
        self._helper = helper if settings.helper_process else None
        self._handoff_size = handoff_size
        self._options = Options.of(settings)
        self._tuning = _listener.Py4jTuning(self._gateway)
        self._lock = threading.Condition()
        self.state = State.NEW
        self.listener = LISTENER_PYTHON
        self.listener_reason: str | None = None  # why the JVM listener is not in use
        self.bus_queue: str | None = None  # the listener-bus queue the gatherer is on
        self.gatherer_loaded: str | None = None  # "cached" or "compiled" (gatherer.py)
        self._gatherer: Any = None
        self.streams: Any = None  # the JVM's StreamWatch, or None (streams not reported)
        self.quality_rule: Any = None  # QualityRule.java, installed on the session
        self.py_listener: _listener.PyQueryExecutionListener | None = None
        self.worker: ExtractionWorker | None = None  # reading in this process
        self.key: int | None = None  # the JVM session's identity (listener.session_key)
        self._session_ref: Any = None  # the session's py4j reference the helper uses
        self._marks = itertools.count(1)
        self._marks_done = 0  # by the helper (the local worker counts its own)
        self._last_mark = 0
        self.remote: dict[str, Any] = {"stats": {}, "extraction_ms": [],
                                       "fact_mismatches": []}  # the helper's, so far
        self._dropped = 0
        self.cross_check = CROSS_CHECK  # test hook: see ExtractionWorker.cross_check

    # -- state -----------------------------------------------------------------------------
    def _move(self, to: State) -> bool:
        """Move to ``to`` if it is allowed from the current state (lock held)."""
        if to not in TRANSITIONS[self.state]:
            return False
        logger.debug("definity-spark: session %s: %s -> %s", self.key,
                     self.state.value, to.value)
        self.state = to
        self._lock.notify_all()
        return True

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, on_registered: Callable[[str], None] | None = None) -> bool:
        """Register the listener (idempotent per JVM session). True if this call did.
        ``on_registered``: called with the listener's kind (``jvm``, ``python``) once it is
        registered, before anything is read."""
        with contained("observer.start"):
            if self.state is not State.NEW:
                return False
            self.key = _listener.session_key(self._gateway, self._jsession)
            if _listener.registered_owner(self.key) is not None:
                logger.warning("definity-spark: the listener is already registered on this "
                               "SparkSession; not registering twice")
                return False
            if self._settings.jvm_listener:
                self._register_gatherer()
                self._install_quality()
            else:
                self.listener_reason = "turned off (spark.definity.internal.jvmListener)"
            if self._gatherer is None:
                self._warn_fallback()
                self._start_worker()
                self.py_listener = _listener.PyQueryExecutionListener(
                    self.worker.queue,  # type: ignore[union-attr]
                    on_first_call=self._tuning.callback_connection)
                if not _listener.register(self._gateway, self._jsession, self.py_listener,
                                          self, self.key):
                    self.worker.stop(1.0)  # type: ignore[union-attr]
                    self.worker = None
                    return False
                with self._lock:
                    self._move(State.IN_DRIVER)
                _call(on_registered, self.listener)
                return True
            _call(on_registered, self.listener)
            if self._helper is not None:
                with self._lock:
                    self._move(State.ATTACHING)
                threading.Thread(target=self._attach, name="definity-spark-attach",
                                 daemon=True).start()
            else:
                self._start_worker()
                with self._lock:
                    self._move(State.IN_DRIVER)
            return True
        return False

    def _register_gatherer(self) -> None:
        g, loaded = make_gatherer(self._gateway, self._jsession, self._handoff_size)
        if g is None:
            self.listener_reason = f"the Java listener could not be loaded ({loaded.reason})"
            return
        with contained("observer.bus_register"):
            queue_name = _listener.register_on_bus(self._gateway, self._jsession, g, self,
                                                   self.key)
            if queue_name:
                self._gatherer, self.bus_queue = g, queue_name
                self.listener = LISTENER_JVM
                self.gatherer_loaded = loaded.how
                self._watch_streams(g, loaded)
                return
            self.listener_reason = "no listener-bus queue to join"
        if self.listener_reason is None:
            self.listener_reason = "registering the Java listener failed (see the log)"

    def _watch_streams(self, g: Any, loaded: Any) -> None:
        """Structured Streaming: ``StreamWatch`` sees the stream events the gatherer
        receives, and hands the worker what it reports through the gatherer's queue (none
        with the Python listener: streams are then not reported)."""
        if loaded.streams_cls is None:
            return
        with contained("observer.streams"):
            watch = loaded.streams_cls.newInstance()
            watch.configure(g, self._jsession,
                            int(self._settings.stream_metrics_interval * 1000))
            g.streams(watch)
            self.streams = watch
    def _install_quality(self) -> None:
        """The data quality rule, when the setting names datasets (it needs the gatherer,
        which reads what the rule measured)."""
        if not self._options.quality:
            return
        if self._gatherer is None:
            logger.warning("definity-spark: data quality (quality.columns) is off: it needs "
                           "the Java listener (%s)", self.listener_reason)
            return
        with contained("observer.quality_install"):
            self.quality_rule = _quality.install(self._gateway, self._jsession,
                                                 self._gatherer, self._options.quality)

    def _warn_fallback(self) -> None:
        global _warned_fallback
        if not _warned_fallback and self._settings.jvm_listener:
            _warned_fallback = True
            logger.warning("definity-spark: %s; queries are received by a Python listener "
                           "and read through py4j instead (slower, same reports)",
                           self.listener_reason)

    def _start_worker(self) -> None:
        reader = FactReader(self._gateway, self._jsession,
                            self._settings.extraction_budget_ms, self._settings.max_plan_nodes,
                            gatherer=self._gatherer)
        worker = ExtractionWorker(reader, self._sink, self._options, gatherer=self._gatherer,
                                  handoff_size=self._handoff_size, tuning=self._tuning)
        worker.cross_check = self.cross_check
        self.worker = worker
        worker.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Unregister, have what was received read, end."""
        ok = False
        with contained("observer.stop"):
            if self.state in (State.NEW, State.STOPPED):
                return True
            deadline = time.monotonic() + timeout
            with self._lock:  # an attach under way ends first (the helper or here)
                while self.state is State.ATTACHING and time.monotonic() < deadline:
                    self._lock.wait(0.05)
            if self.streams is not None:  # streaming queries still running: their end
                with contained("observer.streams_flush"):
                    self.streams.flush()
            ok = self.drain(max(0.0, deadline - time.monotonic()))
            if self.quality_rule is not None:
                with contained("observer.quality_uninstall"):
                    _quality.uninstall(self._jsession, self.quality_rule, self._gatherer)
                self.quality_rule = None
            _listener.unregister(self._jsession, self, self.key)
            with self._lock:
                was = self.state
                self._move(State.STOPPED)
            if was is State.IN_HELPER:
                self._detach(max(0.5, deadline - time.monotonic()))
            worker = self.worker
            if worker is not None:
                worker.stop(max(0.5, deadline - time.monotonic()))
            g = self._gatherer
            if g is not None:
                with contained("observer.gatherer_clear"):
                    if self.streams is not None:
                        self.streams.stop()
                        g.streams(None)
                    self._dropped = int(g.dropped())
                    g.clear()  # the QueryExecutions it still held
            self.bus_queue = None
        return ok

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until Spark's listener bus is empty and every callback received so far has
        been read (how tests are deterministic without sleeping)."""
        deadline = time.monotonic() + timeout
        with contained("observer.drain"):
            try:
                self._jsc.sc().listenerBus().waitUntilEmpty(int(max(0.0, timeout) * 1000))
            except Exception as exc:  # timeout of the bus: report, then still wait for ours
                logger.debug("listener bus did not drain: %s", exc)
            n = next(self._marks)
            self._last_mark = n
            left = max(0.0, deadline - time.monotonic())
            if self._gatherer is not None:  # after the callbacks the JVM queued
                if not self._gatherer.mark(n, int(left * 1000)):
                    return False
            elif self.worker is None or not self.worker.mark(n, left):
                return False
            with self._lock:
                while self._done_marks() < n:
                    left = deadline - time.monotonic()
                    if left <= 0 or self.state is State.STOPPED:
                        return False
                    self._lock.wait(min(left, 0.05))
            return True
        return False

    def _done_marks(self) -> int:
        local = self.worker.marks_done if self.worker is not None else 0
        return max(local, self._marks_done)

    # -- reading in the helper process ------------------------------------------------------
    def _attach(self) -> None:
        """On a short thread: let the helper read this session's callbacks. It connects to
        this JVM through py4j with the gateway's address and secret (sent down the helper's
        socket, never in argv or the environment), and uses the gatherer and the session
        by their py4j references."""
        ok = False
        with contained("observer.helper_attach"):
            helper, g = self._helper, self._gatherer
            params = self._gateway.gateway_parameters
            self._session_ref = self._gateway.jvm.java.util.Objects.requireNonNull(
                self._jsession)
            number_in = getattr(self._sink, "number_in", None)
            if number_in is not None:  # the helper numbers the task's transformations
                number_in(helper)
            ok = helper.attach(self, {
                "key": self.key,
                "gateway": {"address": params.address, "port": params.port,
                            "token": params.auth_token},
                "session": self._session_ref._target_id, "gatherer": g._target_id,
                "budget_ms": self._settings.extraction_budget_ms,
                "max_plan_nodes": self._settings.max_plan_nodes,
                "cross_check": self.cross_check,
            })
        with self._lock:
            if ok and self._move(State.IN_HELPER):
                return
            if self.state is State.STOPPED:
                if ok:
                    self._detach(1.0)
                return
            self._start_worker()
            self._move(State.IN_DRIVER)
        logger.info("definity-spark: the queries of this session are read in the driver")

    def helper_mark(self, n: int, report: dict[str, Any]) -> None:
        """The helper processed mark ``n`` (its reader thread calls this), with its counts,
        timings and cross-check differences since its last mark."""
        with self._lock:
            self._absorb(report)
            self._marks_done = max(self._marks_done, n)
            self._lock.notify_all()

    def _absorb(self, report: dict[str, Any]) -> None:
        if isinstance(report.get("stats"), dict):
            self.remote["stats"] = report["stats"]
        for key in ("extraction_ms", "fact_mismatches"):
            mine = self.remote[key]
            mine.extend((report.get(key) or [])[:max(0, 10000 - len(mine))])

    def pulled_by_helper(self) -> int:
        """At most how many callbacks the helper took from the JVM (each at most one
        transformation): all taken so far, since nothing here took any before it."""
        g = self._gatherer
        if self.state is not State.IN_HELPER or g is None:
            return 0
        try:
            return int(g.taken())
        except Exception:  # noqa: BLE001 - the JVM is gone: no more callbacks either way
            return 0

    def helper_lost(self) -> None:
        """The helper is gone: this process reads the session from now on; what the helper
        had taken and not reported is lost (its marks count as done)."""
        with self._lock:
            if self.state is not State.IN_HELPER:
                return
            # The JVM thread that served the helper's `next` may still be waiting in it,
            # for up to a second: a mark ends that wait; else it would take the next
            # callback and lose it with its answer.
            with contained("observer.helper_lost"):
                self._gatherer.mark(0, 100)
            self._start_worker()
            self._move(State.IN_DRIVER)
            self._marks_done = max(self._marks_done, self._last_mark)
        logger.info("definity-spark: the helper is gone; the queries of this session are "
                    "read in the driver")

    def _detach(self, timeout: float) -> None:
        with contained("observer.helper_detach"):
            reply = self._helper.detach(self.key, timeout)
            self._absorb(reply)
        self._session_ref = None

    def app_summary(self) -> dict[str, float]:
        """The application so far (executors, their use), from the JVM gatherer: task-level
        metrics (docs/metrics.md); {} with the Python listener."""
        g = self._gatherer
        if g is None:
            return {}
        with contained("observer.app_summary"):
            return metric_text.app_metrics(json.loads(str(g.appSummary(self._jsession))))
        return {}

    # -- what the observer saw ----------------------------------------------------------------
    @property
    def gatherer(self) -> Any:
        """The JVM listener and reader (``FactGatherer``), or None (the Python listener)."""
        return self._gatherer

    @property
    def stats(self) -> dict[str, int]:
        """Counts of the callbacks read here and in the helper."""
        out = self.worker.counts() if self.worker is not None else {}
        for key, value in (self.remote["stats"] or {}).items():
            out[key] = out.get(key, 0) + int(value)
        return out

    @property
    def extraction_ms(self) -> list[float]:
        local = self.worker.extraction_ms if self.worker is not None else []
        return list(self.remote["extraction_ms"]) + list(local)

    @property
    def fact_mismatches(self) -> list[dict[str, Any]]:
        local = self.worker.fact_mismatches if self.worker is not None else []
        return list(self.remote["fact_mismatches"]) + list(local)

    @property
    def dropped(self) -> int:
        """Callbacks lost because a hand-off queue was full (Python's or the JVM's)."""
        py = self.py_listener.dropped if self.py_listener is not None else 0
        jvm = self._dropped
        if self.worker is not None:
            jvm = max(jvm, self.worker.jvm_dropped)
        return int(py) + int(jvm)

