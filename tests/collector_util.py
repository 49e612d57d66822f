"""Test helpers: a real local collector on a free loopback port, and a client to read it.

For every room's tests (delivery, end to end, CLI...). Real HTTP, real SQLite, no mocks.

    from collector_util import collector, running_collector, CollectorProcess, CollectorClient

* ``collector`` (pytest fixture): a started ``Collector`` (thread) on ``tmp_path/collector.db``;
  ``collector.url``, ``collector.fail_next(...)``, ``collector.wait_for_payloads(n)``.
  Use it in a module with ``from collector_util import collector_fixture  # noqa: F401``
  (the fixture's name is ``collector``; importing it under another name avoids F811).
* ``running_collector(db_path, token=None)``: the same as a context manager.
* ``CollectorProcess(db_path, token=None)``: the collector in its own process (the CLI
  ``python -m definity_spark.collector --port 0``), for tests that kill it (``kill()``).
* ``CollectorClient(url, token=None)``: ``payloads()``, ``bodies()``, ``tasks()``,
  ``task(id)``, ``lineage()``, ``wait_for_payloads(n)`` over the read API (a collector
  started with a token answers reads only with it).
* ``render_page(url, tmp_dir)`` / ``rendered_graph(dom)``: load the lineage page in Debian's
  headless Chromium (``CHROMIUM``; skip with ``needs_chromium``) and read back the node
  labels the page's JavaScript drew; ``rendered_metrics(dom)`` / ``rendered_chart(dom)``:
  a task's metrics tables, a dataset's rows-written chart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from definity_spark.collector import Collector


@contextlib.contextmanager
def running_collector(db_path: str, token: str | None = None,
                      host: str = "127.0.0.1") -> Iterator[Collector]:
    """A started in-process collector on a free port; stopped on exit."""
    collector = Collector(db_path=db_path, host=host, port=0, token=token)
    collector.start()
    try:
        yield collector
    finally:
        collector.stop()


@pytest.fixture(name="collector")
def collector_fixture(tmp_path: Any) -> Iterator[Collector]:
    """A started collector (no token) on ``tmp_path/collector.db``."""
    with running_collector(str(tmp_path / "collector.db")) as started:
        yield started


class CollectorClient:
    """Reads what a collector holds through its HTTP read API."""

    def __init__(self, url: str, timeout: float = 10.0, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _get(self, path: str, **params: Any) -> Any:
        response = requests.get(self.url + path, params=params or None, timeout=self.timeout,
                                headers=self.headers)
        response.raise_for_status()
        return response.json()

    def health(self) -> dict[str, Any]:
        return self._get("/health")

    def payloads(self, task_id: str | None = None,
                 endpoint: str | None = None) -> list[dict[str, Any]]:
        """Accepted payloads in arrival order: seq, endpoint, body (parsed), raw (text) ..."""
        params = {k: v for k, v in (("task_id", task_id), ("endpoint", endpoint)) if v}
        return self._get("/api/payloads", **params)

    def bodies(self, endpoint: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(endpoint, body) of every accepted payload, in arrival order."""
        return [(p["endpoint"], p["body"]) for p in self.payloads(endpoint=endpoint)]

    def tasks(self) -> list[dict[str, Any]]:
        return self._get("/api/tasks")

    def task(self, task_id: str) -> dict[str, Any]:
        return self._get("/api/tasks/" + requests.utils.quote(task_id, safe=""))

    def lineage(self) -> dict[str, Any]:
        return self._get("/api/lineage")

    def metric_history(self, asset_name: str, metric_type: str, **params: Any
                       ) -> list[dict[str, Any]]:
        return self._get("/api/metrics", asset_name=asset_name, metric_type=metric_type,
                         **params)

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

    def __init__(self, db_path: str, token: str | None = None,
                 extra_args: list[str] | None = None, start_timeout: float = 30.0) -> None:
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
        self.client = CollectorClient(self.url, token=token)

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


CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason=f"{CHROMIUM} missing (apt-get install chromium)")


def render_page(url: str, tmp_dir: str, screenshot: str | None = None,
                timeout: float = 90.0) -> str:
    """The DOM of ``url`` after its scripts ran, from a real headless Chromium.

    ``--virtual-time-budget`` lets the page's fetches to the collector complete before the
    DOM is dumped. With ``screenshot`` (a .png path) a picture is taken as well.
    """
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", "--virtual-time-budget=10000",
            "--window-size=1400,900"]
    profile = os.path.join(tmp_dir, "chromium-profile")
    if screenshot:
        subprocess.run(base + [f"--user-data-dir={profile}-shot", f"--screenshot={screenshot}",
                               url], capture_output=True, timeout=timeout, check=False)
    done = subprocess.run(base + [f"--user-data-dir={profile}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or "<html" not in done.stdout:
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def rendered_graph(dom: str) -> dict[str, Any]:
    """What the page drew: {"rendered", "nodes": {id: (kind, label)}, "edges": {(s, t)}}."""
    from html.parser import HTMLParser

    class Reader(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rendered = None
            self.nodes: dict[str, tuple[str, str]] = {}
            self.edges = set()
            self._node: tuple[str, str] | None = None
            self._in_label = False

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            a = dict(attrs)
            if tag == "body":
                self.rendered = a.get("data-rendered")
            elif tag == "g" and "node" in (a.get("class") or "").split():
                self._node = (a.get("data-id"), a.get("data-kind"))
            elif tag == "text" and self._node and a.get("class") == "label":
                self._in_label = True
            elif tag == "path" and "edge" in (a.get("class") or "").split():
                self.edges.add((a.get("data-source"), a.get("data-target")))

        def handle_data(self, data: str) -> None:
            if self._in_label and self._node:
                node_id, kind = self._node
                self.nodes[node_id] = (kind, self.nodes.get(node_id, (kind, ""))[1] + data)

        def handle_endtag(self, tag: str) -> None:
            if tag == "text":
                self._in_label = False
            elif tag == "g" and self._in_label is False:
                self._node = None

    reader = Reader()
    reader.feed(dom)
    return {"rendered": reader.rendered, "nodes": reader.nodes, "edges": reader.edges}


def rendered_metrics(dom: str) -> dict[Any, dict[tuple[str, str, str], float]]:
    """The metrics tables the page drew for a task: tf_id (None: the task's own) ->
    {(asset_type, asset_name, metric_type): value}."""
    from html.parser import HTMLParser

    class Reader(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tables: dict[Any, dict[tuple[str, str, str], float]] = {}
            self._tf: Any = False  # False: outside a metrics table

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            a = dict(attrs)
            if tag == "table" and "tf-metrics" in (a.get("class") or "").split():
                tf = a.get("data-tf-id") or None
                self._tf = int(tf) if tf is not None else None
                self.tables.setdefault(self._tf, {})
            elif tag == "tr" and self._tf is not False and "data-metric-type" in a:
                key = (a["data-asset-type"], a["data-asset"], a["data-metric-type"])
                self.tables[self._tf][key] = float(a["data-value"])

        def handle_endtag(self, tag: str) -> None:
            if tag == "table":
                self._tf = False

    reader = Reader()
    reader.feed(dom)
    return reader.tables


def rendered_chart(dom: str) -> list[tuple[float, str]]:
    """The points of the rows-written chart the page drew: (value, task_id), left to right."""
    from html.parser import HTMLParser

    class Reader(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.points: list[tuple[float, float, str]] = []

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            a = dict(attrs)
            if tag == "circle" and "point" in (a.get("class") or "").split():
                self.points.append((float(a["cx"]), float(a["data-value"]), a["data-task-id"]))

    reader = Reader()
    reader.feed(dom)
    return [(value, task) for _, value, task in sorted(reader.points)]


__all__ = ["collector_fixture", "running_collector", "CollectorClient", "CollectorProcess",
           "CHROMIUM", "needs_chromium", "render_page", "rendered_graph", "rendered_metrics",
           "rendered_chart"]
