"""The py4j edge: registering the session's listener, and the Python fallback listener.

The listener is the JVM gatherer (``FactGatherer``) on a queue of Spark's listener bus
(``register_on_bus``). Where it cannot be loaded, ``PyQueryExecutionListener`` takes its
place: Spark calls its ``onSuccess`` / ``onFailure`` on its shared listener-bus thread,
serially, for every listener of the application. Whatever time the callback takes holds
that thread (and every other listener behind it; Spark drops events when its queue
overflows), so the callback only snapshots the references it was given into a bounded
queue and returns. All plan reading happens on the extraction worker's thread.

Registration is idempotent per JVM SparkSession (a registry keyed by the session's
``System.identityHashCode``) and reversible: the Java proxy is made once and the same
handle is passed to ``register`` and ``unregister`` (py4j would otherwise make a new proxy
per call and ``unregister`` would silently do nothing).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from typing import Any, Callable, NamedTuple

from definity_spark._internal import contained

logger = logging.getLogger("definity_spark.spark")

LISTENER_INTERFACE = "org.apache.spark.sql.util.QueryExecutionListener"


class Callback(NamedTuple):
    """One listener callback as received: references only, nothing read yet."""

    func_name: str
    qe: Any  # py4j JavaObject of the QueryExecution, or a SeqRef (JVM listener)
    duration_ns: int | None
    exception: Any  # the Throwable (JavaObject) or its text (JVM listener); None: success
    qe_id: int | None = None  # known at arrival for the JVM listener's callbacks
    # the JVM listener's answers to both reading phases, read with the callback (a write
    # that is never read light): (begin's, finish's or None); None: not read yet
    eager: tuple[str, str | None] | None = None
    # a write of a streaming query's micro-batch (foreachBatch): the run id of its query
    stream_run: str | None = None


class SeqRef:
    """A QueryExecution the JVM listener (``FactGatherer``) holds, by its sequence number.

    The gatherer is given the number; the py4j reading path (a fallback, the cross-check)
    uses it as the QueryExecution itself: the JavaObject is fetched at the first accessor
    call. ``release`` lets the JVM drop it."""

    __slots__ = ("seq", "_gatherer", "_qe")

    def __init__(self, gatherer: Any, seq: int):
        self.seq = seq
        self._gatherer = gatherer
        self._qe: Any = None

    def java(self) -> Any:
        if self._qe is None:
            self._qe = self._gatherer.qe(self.seq)
            if self._qe is None:
                raise RuntimeError(f"callback {self.seq} was released")
        return self._qe

    def fetched(self) -> Any:
        """The JavaObject if it was fetched (to detach), else None."""
        return self._qe

    def __getattr__(self, name: str) -> Any:
        return getattr(self.java(), name)


def error_text(exception: Any) -> str:
    """A failure's text: the JVM listener gives it as a string already."""
    return exception if isinstance(exception, str) else str(exception.toString())


class PyQueryExecutionListener:
    """py4j callback object implementing Spark's ``QueryExecutionListener``.

    Do not block in these methods: they run on Spark's listener bus and hold it. They put
    a snapshot into ``handoff`` without waiting and return; when the queue is full the
    callback is dropped and counted (``dropped``).
    """

    def __init__(self, handoff: queue.Queue, on_first_call: Callable[[], None] | None = None):
        self.handoff = handoff
        self.dropped = 0
        self.busy_ns_samples: list = []  # listener-bus time of recent callbacks (bounded)
        self._on_first_call = on_first_call

    def _put(self, cb: Callback, started: int) -> None:
        try:
            self.handoff.put_nowait(cb)
        except queue.Full:
            self.dropped += 1
        if len(self.busy_ns_samples) < 10000:
            self.busy_ns_samples.append(time.perf_counter_ns() - started)

    def onSuccess(self, funcName: str, qe: Any, durationNs: int) -> None:  # noqa: N802,N803
        started = time.perf_counter_ns()
        with contained("listener.onSuccess"):
            self._first()
            self._put(Callback(str(funcName), qe, int(durationNs), None), started)

    def onFailure(self, funcName: str, qe: Any, exception: Any) -> None:  # noqa: N802,N803
        started = time.perf_counter_ns()
        with contained("listener.onFailure"):
            self._first()
            self._put(Callback(str(funcName), qe, None, exception), started)

    def _first(self) -> None:
        hook, self._on_first_call = self._on_first_call, None
        if hook is not None:
            hook()

    class Java:
        implements = [LISTENER_INTERFACE]


# -- TCP_NODELAY workaround -------------------------------------------------------------

class Py4jTuning:
    """Sets TCP_NODELAY on the JVM side of py4j's sockets, through reflection.

    py4j <= 0.10.9.9 leaves Nagle's algorithm on: any reply over 8 KiB stalls ~40 ms on
    delayed ACK (py4j issue 516). New connections appear when a new Python thread calls
    into the JVM, so ``server_connections`` is re-applied when this process opened one.
    It costs no py4j call when this process has opened no connection since a pass: the
    connections a pass covered are remembered (``_own_connections``: the calling thread's
    with pyspark's pinned-thread client, the pool's idle ones with a pooled client such as
    the helper's ``JavaGateway``).
    """

    def __init__(self, gateway: Any):
        self._gw = gateway
        self._field = None
        self._tuned: weakref.WeakSet[Any] = weakref.WeakSet()  # covered by a pass
        self._lock = threading.Lock()

    def server_connections(self) -> None:
        with contained("py4j.nodelay"), self._lock:
            server = getattr(self._gw, "java_gateway_server", None)
            if server is None:
                return
            client = getattr(self._gw, "_gateway_client", None)
            mine = self._own_connections(client)
            if mine and self._tuned.issuperset(mine):
                return
            if self._field is None:
                jvm = self._gw.jvm
                cls = jvm.java.lang.Class.forName("py4j.GatewayServer")
                f = cls.getDeclaredField("connections")
                f.setAccessible(True)
                self._field = f
            # every connection, not only when their number changed: one may have closed
            # as ours opened. One copy: toArray holds the list's lock.
            for conn in self._field.get(server).toArray():
                try:
                    sock = conn.getSocket()
                    if sock is not None and not sock.getTcpNoDelay():
                        sock.setTcpNoDelay(True)
                except Exception as exc:  # noqa: BLE001 - a connection closing
                    # meanwhile (a helper's, after its task ended): nothing to tune
                    logger.debug("py4j connection not tuned: %s", str(exc)[:200])
            # the calls above used (or opened) this process's connection: covered now
            self._tuned.update(self._own_connections(client))

    @staticmethod
    def _own_connections(client: Any) -> list[Any]:
        """This process's connections a pass covers: with py4j's pinned-thread client
        (pyspark's), the calling thread's; with a pooled client (``GatewayClient``), the
        pool's idle ones."""
        local = getattr(client, "thread_connection", None)
        if local is not None:
            ref = getattr(local, "connection", None)  # a weak reference (py4j's)
            conn = ref() if isinstance(ref, weakref.ref) else ref
            return [conn] if conn is not None else []
        try:
            return list(getattr(client, "deque", None) or ())
        except RuntimeError:  # changed while copied (another thread's call)
            return []

    def callback_connection(self) -> None:
        """For the JVM thread running a callback (call from inside the callback)."""
        with contained("py4j.nodelay.callback"):
            server = getattr(self._gw, "java_gateway_server", None)
            if server is None:
                return
            client = server.getCallbackClient()
            jvm = self._gw.jvm
            if not client.getClass().getName().endswith("PythonClient"):
                return
            f = jvm.java.lang.Class.forName("py4j.PythonClient").getDeclaredField(
                "threadConnection")
            f.setAccessible(True)
            ref = f.get(client).get()
            conn = ref.get() if ref is not None else None
            if conn is not None:
                conn.getSocket().setTcpNoDelay(True)


# -- registration registry ------------------------------------------------------------

class _Registration(NamedTuple):
    handle: Any  # the one Java proxy passed to register and unregister
    listener: PyQueryExecutionListener | None
    owner: object
    on_bus: bool = False  # a gatherer on a listener-bus queue (register_on_bus)


# Spark's listener-bus queues the gatherer may join, in this order of preference: queues
# whose thread Spark runs anyway (HeartbeatReceiver is always on the first, its status
# store on the second), so the gatherer adds no thread and no per-event wake-up.
BUS_QUEUES = ("executorManagement", "appStatus")


_registry: dict[int, _Registration] = {}
_registry_lock = threading.Lock()


_systems: dict[int, tuple[Any, Any]] = {}  # id(gateway) -> (gateway, java.lang.System)


def session_key(gateway: Any, jsession: Any) -> int:
    """The JVM session's identity (``System.identityHashCode``): one py4j call, the
    class looked up once per gateway (a ``jvm.java.lang.System`` chain costs several)."""
    known = _systems.get(id(gateway))
    if known is None or known[0] is not gateway:
        known = (gateway, gateway.jvm.java.lang.System)
        _systems[id(gateway)] = known
    return int(known[1].identityHashCode(jsession))


def register(gateway: Any, jsession: Any, listener: PyQueryExecutionListener,
             owner: object, key: int) -> bool:
    """Register ``listener`` on the JVM session unless one is registered already.

    Returns False (and registers nothing) when the session already has a listener.
    """
    from pyspark.java_gateway import ensure_callback_server_started

    with _registry_lock:
        if key in _registry:
            logger.warning("definity-spark: the listener is already registered on this "
                           "SparkSession; not registering twice")
            return False
        ensure_callback_server_started(gateway)
        handle = gateway.jvm.java.util.Collections.singletonList(listener).get(0)
        jsession.listenerManager().register(handle)
        _registry[key] = _Registration(handle, listener, owner)
        return True


def register_on_bus(gateway: Any, jsession: Any, gatherer: Any, owner: object,
                    key: int) -> str | None:
    """Put ``gatherer`` (a compiled FactGatherer) on one of the listener bus's existing
    queues (``BUS_QUEUES``), watching this session's query ends. Returns the queue's name,
    or None when nothing was registered: the session has a listener already, or this
    Spark has none of those queues (or not the internal API): then ``register``."""
    with _registry_lock:
        if key in _registry:
            return None
        bus = jsession.sparkContext().listenerBus()
        active = bus.activeQueues()
        name = next((q for q in BUS_QUEUES if active.contains(q)), None)
        if name is None:
            return None
        gatherer.watch(jsession)
        try:
            bus.addToQueue(gatherer, name)
        except Exception:
            gatherer.watch(None)
            raise
        _registry[key] = _Registration(gatherer, None, owner, on_bus=True)
        return name


def unregister(jsession: Any, owner: object, key: int) -> bool:
    """Unregister the listener ``owner`` registered on this session (False if none)."""
    with _registry_lock:
        reg = _registry.get(key)
        if reg is None or reg.owner is not owner:
            return False
        del _registry[key]
    if reg.on_bus:
        reg.handle.watch(None)  # takes nothing more, even before it leaves the queue
        jsession.sparkContext().removeSparkListener(reg.handle)
    else:
        jsession.listenerManager().unregister(reg.handle)
    return True


def registered_owner(key: int) -> object | None:
    with _registry_lock:
        reg = _registry.get(key)
        return reg.owner if reg else None
