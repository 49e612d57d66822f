"""Running the fault-suite application (``app.py``) as a real process, and reading results.

Shared by tests/test_fault_suite.py and tests/test_no_stdout.py. No mocks: the app is a
real ``python app.py`` with a real local-mode SparkSession, talking to a real loopback
HTTP server (tests/faulty_server.py) or to nothing at all.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

APP = Path(__file__).with_name("app.py")

TOKEN = "tok-FAULTSUITE-7f3a9c1e5b"
PASSWORD = "pw-Opt-9d8e7f6a5b"  # the JDBC password option / OPTIONS (password '...')
URL_PASSWORD = "pw-Url-1a2b3c4d5e"  # the password= parameter of the JDBC URL

# The plugin's configuration for every run with the plugin (DEFINITY_* environment).
SERVER_TIMEOUT = 1.0
SERVER_ATTEMPTS = 3
SERVER_ATTEMPT_SLEEP = 0.2
FLUSH_TIMEOUT = 3.0

INTERNAL_ERROR = "definity-spark internal error"

# Metric values that depend on timing, not on what the application did: durations, and
# the task's count of partial transformations, because a transformation is marked partial
# when its extraction exceeds a wall-clock budget (extraction_budget_ms), which a starved
# CPU can cause (seen at load average 29 on 2 cores with payloads otherwise identical).
# The transformations' own payloads are still compared in full.
TIMING_METRIC = re.compile(
    r"(?i)duration|time|elapsed|latency|seconds|utilization|(_ms|_ns|_s)$|^partial_")


@dataclass
class AppRun:
    """One finished run of app.py."""

    mode: str
    plugin: bool
    base: str
    returncode: int
    stdout: str
    stderr: str
    wall: float  # seconds, process start to exit, measured by the test
    marks: dict[str, float] = field(default_factory=dict)  # from the app, see app.py
    spool_dir: str = ""
    log_file: str = ""
    load: float = 0.0  # the 1-minute load average, the larger of before and after the run

    @property
    def shutdown(self) -> float:
        """Seconds from ``spark.stop()`` (or the app's error) to the end of atexit."""
        return self.marks["exit"] - self.marks["shutdown"]

    @property
    def held(self) -> float:
        """Seconds the application's own thread spent where the plugin can hold it:
        ``activate()`` plus the shutdown phase (0 + shutdown without the plugin)."""
        return (self.marks["activated"] - self.marks["session"]) + self.shutdown

    @property
    def traceback(self) -> str:
        """The Python traceback printed to stderr (with the base dir normalised)."""
        lines = self.stderr.splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
        if not starts:
            return ""
        out = []
        for line in lines[starts[-1]:]:
            out.append(line)
            if len(out) > 1 and line and not line[0].isspace():
                break  # the exception line ends the traceback
        return "\n".join(out).replace(self.base, "<base>")

    @property
    def log_text(self) -> str:
        """What the plugin logged through the app's handler (FAULT_APP_LOG_FILE)."""
        path = Path(self.log_file) if self.log_file else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def spool_files(self) -> list[Path]:
        spool = Path(self.spool_dir)
        return sorted(spool.glob("*.jsonl")) if spool.is_dir() else []


def clean_environ() -> dict[str, str]:
    """os.environ without any DEFINITY_* setting of the developer's shell."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("DEFINITY_") and not k.startswith("FAULT_APP_")}


def plugin_env(server_url: str, spool_dir: str, **extra: str) -> dict[str, str]:
    env = {
        "FAULT_APP_PLUGIN": "1",
        "DEFINITY_SERVER_URL": server_url,
        "DEFINITY_TOKEN": TOKEN,
        "DEFINITY_SERVER_TIMEOUT": str(SERVER_TIMEOUT),
        "DEFINITY_SERVER_ATTEMPTS": str(SERVER_ATTEMPTS),
        "DEFINITY_SERVER_ATTEMPT_SLEEP": str(SERVER_ATTEMPT_SLEEP),
        "DEFINITY_FLUSH_TIMEOUT": str(FLUSH_TIMEOUT),
        "DEFINITY_SPOOL_DIR": spool_dir,
        "DEFINITY_PIPELINE_NAME": "fault-suite",
    }
    env.update(extra)
    return env


def run_app(workdir: Path, mode: str, env_extra: dict[str, str] | None = None,
            timeout: float = 300.0) -> AppRun:
    """Run app.py in ``workdir`` (its base dir); plugin on iff env_extra says so."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = clean_environ()
    env_extra = dict(env_extra or {})
    plugin = env_extra.get("FAULT_APP_PLUGIN") == "1"
    if not plugin:
        env["DEFINITY_AUTOLOAD"] = "0"  # truly without the plugin
    else:
        # The plugin's logger has a NullHandler (library convention), so its records are
        # visible only through a handler the application installs: app.py installs one.
        env_extra.setdefault("FAULT_APP_LOG_FILE", str(workdir / "definity.log"))
    env.update(env_extra)
    timing = workdir / "timing.json"
    env["FAULT_APP_TIMING"] = str(timing)
    env.setdefault("FAULT_APP_PASSWORD", PASSWORD)
    env.setdefault("FAULT_APP_URL_PASSWORD", URL_PASSWORD)
    env["PYTHONUNBUFFERED"] = "1"
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(APP), str(workdir), mode], env=env,
                          cwd=str(workdir), capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - start
    marks = json.loads(timing.read_text()) if timing.exists() else {}
    return AppRun(mode=mode, plugin=plugin, base=str(workdir), returncode=proc.returncode,
                  stdout=proc.stdout, stderr=proc.stderr, wall=wall, marks=marks,
                  spool_dir=env.get("DEFINITY_SPOOL_DIR", ""),
                  log_file=env.get("FAULT_APP_LOG_FILE", ""),
                  load=max(load_before, os.getloadavg()[0]))


def replay_cli(spool_dir: str, server_url: str, token: str = TOKEN,
               timeout: float = 120.0) -> subprocess.CompletedProcess:
    """``definity-spark replay --spool DIR --server URL`` (the installed console script)."""
    script = Path(sys.executable).with_name("definity-spark")
    cmd = [str(script)] if script.exists() else [
        sys.executable, "-c", "import sys; from definity_spark.cli import main; sys.exit(main())"]
    env = clean_environ()
    env.update({"DEFINITY_TOKEN": token, "DEFINITY_SERVER_TIMEOUT": str(SERVER_TIMEOUT),
                "DEFINITY_SERVER_ATTEMPTS": str(SERVER_ATTEMPTS),
                "DEFINITY_SERVER_ATTEMPT_SLEEP": str(SERVER_ATTEMPT_SLEEP)})
    return subprocess.run(cmd + ["replay", "--spool", spool_dir, "--server", server_url],
                          env=env, capture_output=True, text=True, timeout=timeout)


def normalise(records: Iterable[tuple[str, Any]], base: str) -> list[tuple[str, Any]]:
    """(path, body) with the task id, the run's base dir and timing metric values replaced,
    so that two runs of the same application compare equal."""
    out: list[tuple[str, Any]] = []
    for path, body in records:
        text = json.dumps(body, sort_keys=True)
        task_id = body.get("task_id") if isinstance(body, dict) else None
        if task_id:
            text = text.replace(json.dumps(task_id)[1:-1], "<task>")
        text = text.replace(base, "<base>")
        norm = json.loads(text)
        if isinstance(norm, dict):
            # column lineage has a wall-clock budget a starved CPU can exceed (then it is
            # partial); what it holds is tested elsewhere (tests/unit, the integration suite)
            norm.pop("column_lineage", None)
        for metric in norm.get("metrics", []) if isinstance(norm, dict) else []:
            if TIMING_METRIC.search(str(metric.get("metric_type", ""))):
                metric["value"] = "<timing>"
        out.append((path, norm))
    return out


def diff(got: list[tuple[str, Any]], want: list[tuple[str, Any]]) -> str:
    """A unified diff of two payload lists, one JSON line per payload (for messages)."""
    import difflib

    def lines(items: list[tuple[str, Any]]) -> list[str]:
        return [f"{p} {json.dumps(b, sort_keys=True)}" for p, b in items]

    return "\n".join(difflib.unified_diff(lines(want), lines(got), "expected (fault-free)",
                                          "delivered", lineterm=""))


def server_records(server: Any) -> list[tuple[str, Any]]:
    with server.lock:
        return [(r.path, r.json) for r in server.records]
