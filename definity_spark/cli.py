"""The ``definity-spark`` console script.

Subcommands:
  collector  run the local collector (``definity_spark.collector.cli``)
  replay     send spooled payloads (``definity_spark.delivery.cli``)
  demo       start a collector, run an example pipeline through spark-submit activated
             by configuration only, print the lineage tree
  doctor     print the effective settings (token masked), check the server and token,
             report Python/pyspark/Java versions; with --spark, start a small local
             Spark session and show which listener and reader it gets, and why; exit 0
             when all is well, 1 otherwise

This is a command-line program: unlike the library, it prints to stdout.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

# subcommand name -> module with add_parser(subparsers) and run(args) -> int
_DELEGATED = {
    "collector": "definity_spark.collector.cli",
    "replay": "definity_spark.delivery.cli",
}

EXAMPLE_PIPELINE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "demo_pipeline.py"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="definity-spark", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    handlers: dict[str, Any] = {}
    for name, module_name in _DELEGATED.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # a room not installed: say so only if it is used
            sub.add_parser(name, help=f"(unavailable: {exc})")
            handlers[name] = lambda args, exc=exc: _unavailable(exc)
            continue
        module.add_parser(sub)
        handlers[name] = module.run

    demo = sub.add_parser("demo", help="run an example pipeline and print its lineage")
    demo.add_argument("--keep-serving", action="store_true",
                      help="keep the collector (and its lineage page) running after the demo")
    demo.add_argument("--db", default=None, help="collector SQLite file (default: temporary)")
    demo.add_argument("--pipeline", default=str(EXAMPLE_PIPELINE),
                      help="the PySpark script to run (default: docs/examples/demo_pipeline.py)")
    handlers["demo"] = run_demo

    doctor = sub.add_parser("doctor", help="check settings, server, token and versions")
    doctor.add_argument("--server", default=None, help="server URL to check (else settings)")
    doctor.add_argument("--spark", action="store_true",
                        help="also start a local Spark session (local[1]) and show the "
                             "listener, reader and helper process the plugin gets there")
    handlers["doctor"] = run_doctor

    args = parser.parse_args(argv)
    return int(handlers[args.command](args) or 0)


def _unavailable(exc: Exception) -> int:
    print(f"this command is unavailable: {exc}", file=sys.stderr)
    return 2


# --------------------------------------------------------------------------- doctor
def run_doctor(args: argparse.Namespace) -> int:
    from definity_spark import settings as settings_mod

    overrides = {"server_url": args.server} if args.server else {}
    settings = settings_mod.resolve(overrides=overrides, spark_conf={}, environ=os.environ)
    ok = True
    print("definity-spark doctor")
    print(f"  definity-spark {_version()}  python {platform.python_version()}  "
          f"pyspark {_pyspark_version()}  java {_java_version()}")
    print("settings (highest precedence first: activate() > spark conf > env > default):")
    for key, value, source in settings.describe():
        print(f"  {key:45s} {value!s:40s} [{source}]")
    from definity_spark.autoload import hook_status

    hook = hook_status()
    print(f"start hook: {hook['reason']}" + (f" [{hook['pth']}]" if hook["pth"] else ""))
    if args.spark:
        ok = _doctor_spark() and ok
    if not settings.server_url:
        where = settings.events_file or "a JSONL file under the spool dir"
        print(f"server: none configured; events go to {where} "
              "(import with: definity-spark collector --load FILE)")
        return 0 if ok else 1
    from definity_spark.redaction import mask_url

    shown = mask_url(settings.server_url)  # never its user-info or a key parameter
    url = settings.server_url.rstrip("/") + "/api/tasks"
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    try:
        verify: Any = settings.ca_bundle or settings.verify_tls
        resp = requests.get(url, headers=headers, timeout=settings.server_timeout, verify=verify)
    except requests.RequestException as exc:
        print(f"server: {shown} NOT reachable: {type(exc).__name__}")
        return 1
    if resp.status_code in (401, 403):
        print(f"server: {shown} reachable, token REJECTED (HTTP {resp.status_code})")
        ok = False
    elif resp.status_code >= 400:
        print(f"server: {shown} reachable, answered HTTP {resp.status_code}")
        ok = False
    elif not settings.token:
        print(f"server: {shown} reachable; no token configured "
              "(spark.definity.token / DEFINITY_TOKEN)")
    else:
        print(f"server: {shown} reachable, token accepted")
    return 0 if ok else 1


def _doctor_spark() -> bool:
    """A local session with the plugin, reporting to a temporary file: which listener it
    got (and why not the JVM one), how the gatherer was loaded, who reads the queries."""
    from definity_spark.spark.observer import State

    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        print(f"spark: pyspark not importable ({exc})")
        return False
    import definity_spark

    with tempfile.TemporaryDirectory(prefix="definity-doctor-") as tmp:
        spark = (SparkSession.builder.master("local[1]").appName("definity-doctor")
                 .config("spark.ui.enabled", "false")
                 .config("spark.ui.showConsoleProgress", "false")
                 .config("spark.sql.warehouse.dir", os.path.join(tmp, "warehouse"))
                 .getOrCreate())
        try:
            handle = definity_spark.activate(spark, server_url=None,
                                             events_file=os.path.join(tmp, "events.jsonl"))
            if handle is None:
                print("spark: the plugin did not activate (spark.definity.enabled=false?)")
                return False
            observer = next(iter(handle._runtime.observers.values()))
            deadline = time.monotonic() + 30
            while observer.state is State.ATTACHING and time.monotonic() < deadline:
                time.sleep(0.05)
            spark.range(3).write.mode("overwrite").parquet(os.path.join(tmp, "out"))
            handle.flush(60)
            reads = observer.stats.get("writes", 0)
            if observer.listener == "jvm":
                print(f"spark {spark.version}: listener: the Java listener (FactGatherer, "
                      f"{observer.gatherer_loaded}) on the {observer.bus_queue} queue of "
                      "the listener bus")
            else:
                print(f"spark {spark.version}: listener: the Python listener (py4j); why: "
                      f"{observer.listener_reason}")
            where = {State.IN_HELPER: "the helper process", State.IN_DRIVER: "the driver"}
            print(f"  queries read in {where.get(observer.state, observer.state.value)}; "
                  f"a test write reported: {'yes' if reads == 1 else 'NO'}")
            definity_spark.deactivate(spark)
            return reads == 1 and observer.listener == "jvm"
        finally:
            spark.stop()


def _version() -> str:
    from definity_spark import __version__

    return __version__


def _pyspark_version() -> str:
    try:
        from importlib.metadata import version

        return version("pyspark")
    except Exception:
        return "not installed"


def _java_version() -> str:
    java = shutil.which("java") or (os.path.join(os.environ["JAVA_HOME"], "bin", "java")
                                    if os.environ.get("JAVA_HOME") else None)
    if not java:
        return "not found"
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
        first = (out.stderr or out.stdout).splitlines()[0]
        return first.split('"')[1] if '"' in first else first
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"


# --------------------------------------------------------------------------- demo
def run_demo(args: argparse.Namespace) -> int:
    from definity_spark.collector import Collector

    workdir = Path(tempfile.mkdtemp(prefix="definity-demo-"))
    db = args.db or str(workdir / "collector.db")
    collector = Collector(db_path=db, host="127.0.0.1", port=0, token=None)
    url = collector.start()
    print(f"collector listening on {url}")
    try:
        code = _submit_example(url, workdir, Path(args.pipeline))
        if code != 0:
            print(f"the example pipeline failed (exit code {code})", file=sys.stderr)
            return code
        tasks = [requests.get(f"{url}/api/tasks/{t['task_id']}", timeout=10).json()
                 for t in requests.get(f"{url}/api/tasks", timeout=10).json()]
        print()
        print(render_lineage_tree(tasks))
        print()
        print(f"lineage page: {url}/")
        if args.keep_serving:
            print("serving; Ctrl-C to stop")
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        collector.stop()


def _submit_example(url: str, workdir: Path, pipeline: Path) -> int:
    spark_submit = _spark_submit()
    env = dict(os.environ)
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env.pop("SPARK_CONF_DIR", None)
    cmd = [
        spark_submit, "--master", "local[2]",
        "--name", "definity-demo",
        "--conf", "spark.definity.enabled=true",
        "--conf", f"spark.definity.server={url}",
        "--conf", "spark.definity.pipeline.name=demo-pipeline",
        "--conf", f"spark.sql.warehouse.dir={workdir / 'warehouse'}",
        "--conf", f"spark.driver.extraJavaOptions=-Dderby.system.home={workdir}",
        "--conf", "spark.ui.enabled=false",
        str(pipeline), str(workdir / "data"),
    ]
    print("running: " + " ".join(cmd[:1] + ["..."] + cmd[-2:]))
    proc = subprocess.run(cmd, env=env, cwd=str(workdir), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-5000:])
    return proc.returncode


def _spark_submit() -> str:
    import pyspark

    candidate = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("spark-submit")
    if not found:
        raise SystemExit("spark-submit not found: pip install 'definity-spark[spark]'")
    return found


def render_lineage_tree(tasks: list[dict[str, Any]]) -> str:
    """A readable text tree: task -> transformation -> output <- inputs (columns)."""
    lines: list[str] = []
    for task in tasks:
        lines.append(f"pipeline {task.get('app_name')!r}, task {task.get('task_name')!r} "
                     f"({task.get('task_id')}, {task.get('status')})")
        metrics = task.get("metrics", [])
        for tf in task.get("transformations", []):
            out = tf["output"]["name"]
            rows = next((m["value"] for m in metrics if m["asset_name"] == out
                         and m["metric_type"] == "cnt" and m["seq"] > tf["seq"]), None)
            suffix = f"  ({rows} rows)" if rows is not None else ""
            lines.append(f"  tf {tf['tf_id']}: {out}{suffix}")
            inputs = tf.get("input_datasets") or {}
            if not inputs:
                lines.append("      <- (no dataset: in-memory data)")
            for name, detail in inputs.items():
                columns = (detail or {}).get("columns")
                cols = f" [{', '.join(columns)}]" if columns else ""
                lines.append(f"      <- {name}{cols}")
    return "\n".join(lines) if lines else "no task was reported"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
