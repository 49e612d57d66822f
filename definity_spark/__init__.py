"""definity-spark: report every writing query of a Spark application to Definity.

Public API::

    import definity_spark
    handle = definity_spark.activate(spark)      # attach to a session (idempotent)
    handle.flush(timeout=10)                      # wait until what happened was delivered
    definity_spark.deactivate(spark)              # end the task, detach

One Spark application (SparkContext) is one Definity task; every session of the
application that was activated reports into that task. The task ends when the
SparkContext stops, when ``deactivate()`` is called, or at interpreter exit, whichever
comes first, exactly once. Nothing here ever raises into the caller's code.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from definity_spark._internal import configure_logging, contained

__version__ = "0.1.0"
__all__ = ["activate", "deactivate", "autoattach", "Handle", "__version__"]

log = logging.getLogger("definity_spark")

TAG_LISTENER = "definity_spark.listener"

_lock = threading.RLock()
_runtimes: dict[str, _Runtime] = {}  # key: Spark application id
_atexit_registered = False
_stop_hook_installed = False


class _Runtime:
    """Everything the plugin holds for one Spark application (one task)."""

    def __init__(self, key: str, app_id: str, settings: Any, delivery: Any,
                 reporter: Any, helper: Any = None) -> None:
        self.key = key  # the application id, or application + session (Databricks notebooks)
        self.app_id = app_id
        self.settings = settings
        self.delivery = delivery  # the helper process, or this process's own delivery
        self.helper = helper
        self.reporter = reporter
        self.observers: dict[int, Any] = {}  # JVM session identity -> SessionObserver
        self.ended = False

    def start_task(self, listener: str) -> None:
        """The task's start, once, after its first session's listener is in place: it
        says which listener that is (tag ``definity_spark.listener``: ``jvm`` or
        ``python``)."""
        with contained("task.start"):
            if not self.reporter.started:
                self.reporter.tags[TAG_LISTENER] = listener
                self.reporter.start()

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        ok = True
        for observer in list(self.observers.values()):
            with contained("observer.drain"):
                ok = bool(observer.drain(max(0.0, deadline - time.monotonic()))) and ok
        with contained("delivery.flush"):
            ok = bool(self.delivery.flush(max(0.0, deadline - time.monotonic()))) and ok
        return ok

    def end(self, timeout: float) -> None:
        """Detach, send what is left and the task end, close delivery; bounded by timeout."""
        with _lock:
            if self.ended:
                return
            self.ended = True
            _runtimes.pop(self.key, None)
        deadline = time.monotonic() + max(0.0, timeout)
        dropped_queries = 0
        summary: dict[str, float] = {}
        for observer in list(self.observers.values()):
            summary = summary or observer.app_summary()  # the application's: once
        for observer in list(self.observers.values()):
            with contained("observer.stop"):
                observer.stop(max(0.0, deadline - time.monotonic()))
                dropped_queries += observer.dropped
        self.observers.clear()
        with contained("task.end"):
            from definity_spark.task import M_DROPPED_EVENTS, M_DROPPED_QUERIES

            if dropped_queries:  # callbacks the full hand-off queue could not take
                self.reporter.add_task_metric(M_DROPPED_QUERIES, dropped_queries)
            for name, value in summary.items():  # executors and their use
                self.reporter.add_task_metric(name, value)
            # payloads lost for good (not those that overflowed to the spool)
            lost = _delivery_stats(self.delivery).get("lost", 0)
            if lost:
                self.reporter.add_task_metric(M_DROPPED_EVENTS, lost)
            self.reporter.end(max(0.5, deadline - time.monotonic()))
        with contained("delivery.close"):
            self.delivery.close(max(0.0, deadline - time.monotonic()))


class Handle:
    """What ``activate()`` returns: the task of this application, for flush/deactivate."""

    def __init__(self, runtime: _Runtime, session: Any) -> None:
        self._runtime = runtime
        self._session = session

    @property
    def task_id(self) -> str:
        return str(self._runtime.reporter.task_id)

    @property
    def settings(self) -> Any:
        return self._runtime.settings

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every query so far was extracted and its payloads delivered."""
        with contained("handle.flush"):
            if timeout is None:
                timeout = self._runtime.settings.flush_timeout
            return self._runtime.flush(timeout)
        return False

    def deactivate(self, timeout: float | None = None) -> None:
        deactivate(self._session, timeout=timeout)

    def __repr__(self) -> str:
        return f"<definity_spark.Handle task_id={self.task_id!r}>"


# --------------------------------------------------------------------------- public API
def activate(spark: Any = None, **overrides: Any) -> Handle | None:
    """Attach the plugin to a SparkSession (default: the active one); idempotent.

    Keyword arguments override any setting (``pipeline_name="..."``, ``pit="2025-09-01"``,
    ``server_url=...``); see docs/configuration.md. ``enabled=False`` (from any source)
    turns the plugin off. Returns a ``Handle``, or None when not activated.
    """
    with contained("activate"):
        return _activate(spark, overrides, require_enabled=False)
    return None


def autoattach(spark: Any) -> Handle | None:
    """Entry for the configuration hook: activates only when enabled by configuration."""
    with contained("autoattach"):
        return _activate(spark, {}, require_enabled=True)
    return None


def deactivate(spark: Any = None, timeout: float | None = None) -> None:
    """Flush, end the task of the session's application and detach. Never raises."""
    with contained("deactivate"):
        session = spark if spark is not None else _active_session()
        with _lock:
            if session is None:
                runtimes = list(_runtimes.values())
            else:
                app_id = _app_key(session)
                keys = (app_id, _session_key(app_id, _session_identity(session)))
                runtimes = [_runtimes[k] for k in keys if k in _runtimes]
        for runtime in runtimes:
            runtime.end(timeout if timeout is not None else runtime.settings.flush_timeout)


# --------------------------------------------------------------------------- internals
def _activate(spark: Any, overrides: Mapping[str, Any], require_enabled: bool) -> Handle | None:
    from definity_spark import settings as settings_mod

    session = spark if spark is not None else _active_session()
    if session is None:
        log.warning("definity-spark: activate() found no active SparkSession; "
                    "pass one: definity_spark.activate(spark)")
        return None
    conf = _spark_conf(session)
    settings = settings_mod.resolve(overrides=dict(overrides), spark_conf=conf,
                                    environ=os.environ)
    configure_logging(settings.log_level)
    with contained("log_filter"):
        from definity_spark import redaction

        redaction.install_log_filter(settings.redaction_pattern(), [settings.token])
    if settings.enabled is False or (require_enabled and settings.enabled is not True):
        log.debug("definity-spark: not enabled for this session")
        return None
    if _shared_access_mode(conf):
        return None

    app_id = conf.get("spark.app.id") or _app_key(session)
    session_id = _session_identity(session)
    key = _runtime_key(session, conf, app_id, session_id)
    with _lock:
        runtime = _runtimes.get(key)
        if runtime is None:
            runtime = _new_runtime(key, app_id, session, settings, conf)
            _runtimes[key] = runtime
            _install_exit_hooks()
        if session_id not in runtime.observers:
            from definity_spark.spark.observer import SessionObserver

            observer = SessionObserver(session, runtime.settings, runtime.reporter,
                                       runtime.helper)
            observer.start(on_registered=runtime.start_task)
            runtime.observers[session_id] = observer
            runtime.start_task(observer.listener)  # (when the registration failed)
        elif not require_enabled:
            log.info("definity-spark: already active on this session (task %s)",
                     runtime.reporter.task_id)
    return Handle(runtime, session)


def _new_runtime(key: str, app_id: str, session: Any, settings: Any,
                 conf: Mapping[str, str]) -> _Runtime:
    from definity_spark.delivery import make_delivery
    from definity_spark.task import TaskReporter, new_task_id

    app_name = conf.get("spark.app.name") or "spark-app"
    names = _derived_names(conf, session)
    pipeline_name = settings.pipeline_name or names.get("pipeline_name") or app_name
    task_name = settings.task_name or names.get("task_name") or app_name
    task_id = settings.task_id or new_task_id(conf.get("spark.app.id"))
    tags = dict(names.get("tags") or {})  # platform tags (Databricks job/run ids) ...
    tags.update(settings.tags or {})      # ... below the configured ones
    helper = None
    if settings.helper_process:
        from definity_spark.helper.client import HelperProcess, available

        if available():
            helper = HelperProcess(settings)
    delivery = helper if helper is not None else make_delivery(settings)
    reporter = TaskReporter(
        delivery=delivery, task_id=task_id, app_name=pipeline_name, task_name=task_name,
        env=settings.env_name, app_pit=settings.pipeline_pit, tags=tags,
    )
    return _Runtime(key, app_id, settings, delivery, reporter, helper)


def _derived_names(conf: Mapping[str, str], session: Any = None) -> dict[str, Any]:
    """Pipeline/task names and tags derived from the platform (Databricks job/notebook)."""
    with contained("derived_names"):
        try:
            from definity_spark import databricks
        except ImportError:
            return {}
        # Databricks sets job/notebook keys as local properties of the calling thread too.
        local = (databricks.read_properties(session)
                 if session is not None and databricks.is_databricks(conf) else None)
        return dict(databricks.derive_names(conf, local) or {})
    return {}


def _shared_access_mode(conf: Mapping[str, str]) -> bool:
    with contained("shared_access_mode"):
        try:
            from definity_spark import databricks
        except ImportError:
            return False
        if databricks.is_shared_access_mode(conf):
            databricks.explain_shared_mode_once(log)
            return True
    return False


def _active_session() -> Any:
    with contained("active_session"):
        from pyspark.sql import SparkSession

        return SparkSession.getActiveSession()
    return None


# the keys of the application's Spark conf the activation reads, besides spark.definity.*
_CONF_KEYS = ("spark.app.name", "spark.app.id", "spark.redaction.regex")


def _spark_conf(session: Any) -> dict[str, str]:
    """What the activation needs of the application's Spark conf: ``spark.definity.*``
    and the keys names are derived from (a py4j call a value: the whole conf is ~100)."""
    from definity_spark import databricks

    jconf = session.sparkContext._jsc.sc().conf()
    out: dict[str, str] = {}
    for entry in jconf.getAllWithPrefix("spark.definity."):
        out["spark.definity." + str(entry._1())] = str(entry._2())
    for key in _CONF_KEYS + databricks.KEYS:
        value = jconf.get(key, None)
        if value is not None:
            out[key] = str(value)
    return out


def _app_key(session: Any) -> str:
    return str(session.sparkContext.applicationId)


def _session_key(app_id: str, session_id: int) -> str:
    return f"{app_id}#session-{session_id}"


def _runtime_key(session: Any, conf: Mapping[str, str], app_id: str, session_id: int) -> str:
    """What one task covers: the application, or one notebook session on a Databricks
    all-purpose cluster (many notebooks share one SparkContext there)."""
    with contained("task_scope"):
        from definity_spark import databricks

        if databricks.is_databricks(conf):
            local = databricks.read_properties(session)
            if databricks.task_scope(conf, local, os.environ) == "session":
                return _session_key(app_id, session_id)
    return app_id


def _session_identity(session: Any) -> int:
    from definity_spark.spark.listener import session_key

    return session_key(session.sparkContext._gateway, session._jsparkSession)


def _delivery_stats(delivery: Any) -> dict[str, int]:
    with contained("delivery.stats"):
        return dict(delivery.stats())
    return {}


def _end_all(reason: str) -> None:
    with _lock:
        runtimes = list(_runtimes.values())
    for runtime in runtimes:
        with contained(f"end_all.{reason}"):
            runtime.end(runtime.settings.flush_timeout)


def _install_exit_hooks() -> None:
    """End tasks when the SparkContext stops or the interpreter exits (first wins)."""
    global _atexit_registered, _stop_hook_installed
    if not _atexit_registered:
        atexit.register(_end_all, "atexit")
        _atexit_registered = True
    if not _stop_hook_installed:
        from pyspark import SparkContext

        original_stop = SparkContext.stop

        def stop(self: Any, *args: Any, **kwargs: Any) -> Any:
            with contained("sparkcontext.stop"):
                app_id = str(self.applicationId) if getattr(self, "_jsc", None) else None
                with _lock:
                    ending = [r for r in _runtimes.values() if r.app_id == app_id]
                for runtime in ending:  # every task of this application (all sessions)
                    runtime.end(runtime.settings.flush_timeout)
            return original_stop(self, *args, **kwargs)

        stop.__wrapped__ = original_stop  # type: ignore[attr-defined]
        SparkContext.stop = stop  # type: ignore[method-assign]
        _stop_hook_installed = True
