"""Test helpers: a real local collector on a free loopback port, and a client to read it.

For every room's tests (delivery, end to end, CLI...). Real HTTP, real SQLite, no mocks.

    from collector_util import collector, running_collector, CollectorProcess, CollectorClient

* ``collector`` (pytest fixture): a started ``Collector`` (thread) on ``tmp_path/collector.db``;
  ``collector.url``, ``collector.fail_next(...)``, ``collector.wait_for_payloads(n)``.
  Use it in a module with ``from collector_util import collector  # noqa: F401``.
* ``running_collector(db_path, token=None)``: the same as a context manager.
* ``CollectorProcess(db_path, token=None)``: the collector in its own process (the CLI
  ``python -m definity_spark.collector --port 0``), for tests that kill it (``kill()``).
* ``CollectorClient(url)``: ``payloads()``, ``bodies()``, ``tasks()``, ``task(id)``,
  ``lineage()``, ``wait_for_payloads(n)`` over the read API.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import requests

from definity_spark.collector import Collector


@contextlib.contextmanager
def running_collector(db_path: str, token: Optional[str] = None,
                      host: str = "127.0.0.1") -> Iterator[Collector]:
    """A started in-process collector on a free port; stopped on exit."""
    collector = Collector(db_path=db_path, host=host, port=0, token=token)
    collector.start()
    try:
        yield collector
    finally:
        collector.stop()


@pytest.fixture
def collector(tmp_path: Any) -> Iterator[Collector]:
    """A started collector (no token) on ``tmp_path/collector.db``."""
    with running_collector(str(tmp_path / "collector.db")) as started:
        yield started


class CollectorClient:
    """Reads what a collector holds through its HTTP read API."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, **params: Any) -> Any:
        response = requests.get(self.url + path, params=params or None, timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def health(self) -> Dict[str, Any]:
        return self._get("/health")

    def payloads(self, task_id: Optional[str] = None,
                 endpoint: Optional[str] = None) -> List[Dict[str, Any]]:
        """Accepted payloads in arrival order: seq, endpoint, body (parsed), raw (text) ..."""
        params = {k: v for k, v in (("task_id", task_id), ("endpoint", endpoint)) if v}
        return self._get("/api/payloads", **params)

    def bodies(self, endpoint: Optional[str] = None) -> List[Tuple[str, Dict[str, Any]]]:
        """(endpoint, body) of every accepted payload, in arrival order."""
        return [(p["endpoint"], p["body"]) for p in self.payloads(endpoint=endpoint)]

    def tasks(self) -> List[Dict[str, Any]]:
        return self._get("/api/tasks")

    def task(self, task_id: str) -> Dict[str, Any]:
        return self._get("/api/tasks/" + requests.utils.quote(task_id, safe=""))

    def lineage(self) -> Dict[str, Any]:
        return self._get("/api/lineage")

    def wait_for_payloads(self, count: int, timeout: float = 10.0, **filters: Any) -> bool:
        """Poll until at least ``count`` payloads are stored (for a collector in a process)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if len(self.payloads(**filters)) >= count:
                    return True
            except requests.RequestException:
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


class CollectorProcess:
    """The collector CLI in a child process on a free port (``--port 0``)."""

    def __init__(self, db_path: str, token: Optional[str] = None,
                 extra_args: Optional[List[str]] = None, start_timeout: float = 30.0) -> None:
        env = dict(os.environ)
        env.pop("DEFINITY_COLLECTOR_TOKEN", None)
        if token is not None:
            # through the environment, never argv (visible in ps)
            env["DEFINITY_COLLECTOR_TOKEN"] = token
        # stderr to a file, not a pipe nobody reads (a full pipe would block the collector).
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "definity_spark.collector", "--port", "0", "--db", db_path,
             *(extra_args or [])],
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env)
        self.url = self._read_url(start_timeout)
        self.client = CollectorClient(self.url)

    def _read_url(self, timeout: float) -> str:
        # The CLI prints the base URL alone on its first stdout line once it listens.
        import selectors

        assert self.proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            self.kill()
            raise RuntimeError("collector process did not print its URL in time")
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.kill()
            raise RuntimeError(f"collector process failed to start: {line!r} {self.stderr()}")
        return line

    def stderr(self) -> str:
        """What the collector process logged so far."""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()

    def kill(self) -> None:
        """SIGKILL: the collector vanishes mid-run, like a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (clean shutdown); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def __enter__(self) -> CollectorProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


__all__ = ["collector", "running_collector", "CollectorClient", "CollectorProcess"]
