"""Extraction time: how long the plugin's worker spends reading facts + rules for a query.

Two measures, both per callback (one execution: a CTAS has two):

* ``extraction_ms``: the extraction room's own timing, ``SessionObserver.extraction_ms``
  (a bounded list, one entry per callback: fact reading + rules, wherever the session is
  read: the helper's come back with each flush), read after ``attach()``;
* ``handle_ms``: a timing wrapper this benchmark puts around the worker's per-callback
  entry point (``ENTRY_POINTS``; only the outermost call per thread is timed): extraction
  plus handing the lineage to the sink, when the session is read in this process.

``mark()`` then ``since_mark()`` gives what was spent since the mark (the workload flushes
the plugin before reading it, so every extraction of the statement is in).
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
import time
from typing import Any, Callable

# (module, attribute) of the extraction room's entry points, outermost first. One call of
# the first found = one extraction (one execution: a CTAS has two).
ENTRY_POINTS: list[tuple[str, str]] = [
    ("definity_spark.spark.worker", "ExtractionWorker._handle"),
]


class Probe:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: list[tuple[str, float]] = []  # (entry point, ms) in order
        self._mark = 0
        self._observers: list[Any] = []
        self._obs_mark: list[int] = []
        self._local = threading.local()
        self.wrapped: list[str] = []
        self.source = "none"

    # ----------------------------------------------------------------- install
    def install(self) -> Probe:
        """Wrap the entry points that exist (call before activate())."""
        for module_name, attr in ENTRY_POINTS:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            owner: Any = module
            parts = attr.split(".")
            try:
                for part in parts[:-1]:
                    owner = getattr(owner, part)
                original = getattr(owner, parts[-1])
            except AttributeError:
                continue
            wrapper = self._wrap(f"{module_name}:{attr}", original)
            setattr(owner, parts[-1], wrapper)
            if len(parts) == 1:
                # Modules that did `from module import fn` hold their own reference.
                for name, other in list(sys.modules.items()):
                    if name.startswith("definity_spark") and other is not None and \
                            getattr(other, parts[-1], None) is original:
                        setattr(other, parts[-1], wrapper)
            self.wrapped.append(f"{module_name}:{attr}")
        if self.wrapped:
            self.source = "wrapped " + ", ".join(self.wrapped)
        return self

    def _wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        probe = self

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(probe._local, "depth", 0)
            probe._local.depth = depth + 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                probe._local.depth = depth
                if depth == 0:
                    with probe._lock:
                        probe._samples.append((label, (time.perf_counter() - t0) * 1000))

        return timed

    def attach(self, handle: Any) -> Probe:
        """Find the observers of the activated session (their own extraction timings)."""
        try:
            observers = list(handle._runtime.observers.values())
        except Exception:
            observers = []
        self._observers = [o for o in observers
                           if isinstance(getattr(o, "extraction_ms", None), list)]
        if self._observers:
            self.source = "SessionObserver.extraction_ms" + (
                "; handle_ms: wrapped " + ", ".join(self.wrapped) if self.wrapped else "")
        self._obs_mark = [0] * len(self._observers)
        return self

    # ----------------------------------------------------------------- reading
    def mark(self) -> None:
        with self._lock:
            self._mark = len(self._samples)
            self._obs_mark = [len(o.extraction_ms) for o in self._observers]

    def _observer_new(self) -> list[float]:
        out: list[float] = []
        for observer, start in zip(self._observers, self._obs_mark):
            out.extend(float(x) for x in list(observer.extraction_ms)[start:])
        return out

    def since_mark(self) -> dict[str, Any]:
        with self._lock:
            new = [ms for _, ms in self._samples[self._mark:]]
        extraction = self._observer_new() if self._observers else None
        return {
            "extraction_ms": sum(extraction) if extraction else None,
            "extraction_samples_ms": [round(x, 3) for x in extraction or []],
            "handle_ms": sum(new) if new else None,
            "handle_samples_ms": [round(x, 3) for x in new],
        }

    def all_samples(self) -> dict[str, list[float]]:
        with self._lock:
            handle = [ms for _, ms in self._samples]
        extraction: list[float] = []
        for observer in self._observers:
            extraction.extend(float(x) for x in list(observer.extraction_ms))
        return {"extraction_ms": extraction, "handle_ms": handle}


def observer_stats(handle: Any) -> dict[str, Any] | None:
    """The observers' own counters (``stats``: a dict, or a method returning one)."""
    try:
        out: dict[str, Any] = {}
        for key, observer in handle._runtime.observers.items():
            stats = getattr(observer, "stats", None)
            if callable(stats):
                stats = stats()
            if isinstance(stats, dict):
                out[str(key)] = dict(stats)  # (the helper's counts included)
        return out or None
    except Exception:
        return None
