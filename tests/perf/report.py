"""Turn the benchmark results (tests/perf/results/latest.json) into docs/performance.md + plot.

    python tests/perf/report.py [results.json]

Every figure in the document is computed here from the raw runs; the hand-written
analysis of the last measured run is tests/perf/notes.md, included verbatim.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import common  # noqa: E402

DOC = os.path.join(REPO, "docs", "performance.md")
PLOT = os.path.join(REPO, "docs", "perf", "plan_size.png")
NOTES = os.path.join(HERE, "notes.md")

# Targets of issue 6: (key, label, target text, check)
TARGETS: list[tuple[str, str, str]] = [
    ("small_ratio", "wall ratio, 200 small parquet writes (`spark.range(1000)` overwrite)",
     "<= 1.02"),
    ("big_ratio", "wall ratio, a 2,000-task job (`spark.range(0, N, 1, 2000)` aggregated and "
     "written)", "<= 1.01"),
    ("bus_ms", "listener-bus time per query", "median <= 1 ms"),
    ("join20_ms", "extraction time of a 20-way join CTAS over catalog tables", "<= 30 ms"),
    ("linear", "extraction time against plan size (1 to 100 joined relations)",
     "grows linearly, plotted"),
    ("latency_ms", "delivery latency, query end -> collector receipt", "p50 <= 200 ms"),
    ("rss_mb", "Python RSS growth of the driver over 10,000 small queries", "<= 20 MB"),
    ("dropped", "events dropped by Spark's listener bus during the runs", "0"),
]


def _runs(results: dict[str, Any], workload: str, plugin: bool | None = None,
          ok_only: bool = True) -> list[dict[str, Any]]:
    runs = results.get("workloads", {}).get(workload, {}).get("runs", [])
    return [r for r in runs if (plugin is None or r.get("plugin") == plugin)
            and (r.get("ok") or not ok_only)]


def _med(values: Sequence[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _f(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def _mmm(values: Sequence[float], digits: int = 2, unit: str = "") -> str:
    s = common.summary(values)
    if not s["n"]:
        return "n/a"
    return (f"{_f(s['min'], digits)} / **{_f(s['median'], digits)}** / "
            f"{_f(s['max'], digits)}{unit}")


# --------------------------------------------------------------------------- figures
def wall_ab(results: dict[str, Any], workload: str) -> dict[str, Any]:
    without = [r["wall_s"] for r in _runs(results, workload, False)]
    with_ = [r["wall_s"] for r in _runs(results, workload, True)]
    # Pairwise ratios (run i with / run i without): the alternation makes neighbours share
    # the machine's state; their median is a second, noise-robust view.
    pairs: dict[int, dict[bool, float]] = {}
    for r in _runs(results, workload):
        pairs.setdefault(r.get("index", 0), {})[bool(r["plugin"])] = r["wall_s"]
    pair_ratios = [p[True] / p[False] for p in pairs.values() if True in p and False in p]
    # CPU of the timed region (driver JVM + driver Python), where the runs recorded it
    cpu = {side: [r["cpu_jvm_s"] + r["cpu_py_s"] for r in _runs(results, workload, side)
                  if r.get("cpu_jvm_s") is not None]
           for side in (False, True)}
    return {"without": without, "with": with_,
            "ratio": common.ratio(_med(with_), _med(without)),
            "pair_ratios": pair_ratios,
            "cpu_without": cpu[False], "cpu_with": cpu[True],
            "cpu_ratio": common.ratio(_med(cpu[True]), _med(cpu[False]))}


def precision(results_path: str) -> dict[str, Any] | None:
    """The long one-JVM small-writes run (``run.py --precision``), next to the suite's
    results file: its octets as ab_one_jvm gives them, with its date, load and warm-up."""
    path = os.path.join(os.path.dirname(os.path.abspath(results_path)), "precision.json")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        data = json.load(handle)
    fig = ab_one_jvm(data)
    runs = _runs(data, "small_writes_ab")
    if fig is None or not runs:
        return None
    fig.update({"started": data.get("started"), "git": data.get("git"),
                "warmup": runs[0].get("params", {}).get("warmup"),
                "load": [runs[0].get("load_start"), runs[0].get("load_end")],
                "minutes": (data.get("suite_s") or 0) / 60,
                "writes_a_side": (len(fig["ratios"]) * 4 * (fig["batch"] or 0))})
    return fig


def young(results_path: str) -> dict[str, Any] | None:
    """The suite's small-write octets in fresh JVMs (``run.py --young``), next to the
    suite's results file: the octets of the JVMs with the plugin pooled as ab_one_jvm
    gives them, those of the control JVMs without it (the same design, B through the
    session the plugin would observe), and the plugin's effect: 1 + the difference of the
    two sides' means, with a 95 % interval from resampling whole pairs of JVMs
    (_effect). Also the CPU accounting of their blocks, both sides."""
    path = os.path.join(os.path.dirname(os.path.abspath(results_path)), "young.json")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        data = json.load(handle)
    runs = [r for r in _runs(data, "small_writes_ab") if not r.get("control")]
    with_runs = [r for r in runs if r.get("plugin") and r.get("octet_ratios")]
    control = [r for r in runs if not r.get("plugin") and r.get("octet_ratios")]
    fig = ab_one_jvm({"workloads": {"small_writes_ab": {"runs": with_runs}}})
    if fig is None or not control:
        return None
    params = with_runs[0].get("params", {})
    fig.update({"started": data.get("started"), "git": data.get("git"),
                "jvms": len(with_runs), "warmup": params.get("warmup"),
                "octets_per_jvm": params.get("octets"),
                "minutes": (data.get("suite_s") or 0) / 60,
                "per_jvm": [statistics.fmean(r["octet_ratios"]) for r in with_runs],
                "accounting": block_accounting(with_runs),
                "server": params.get("server") or "collector",
                "merged": data.get("runs_merged")})
    sunk = [(r["cpu_sink_s"], r["sink_counts"].get("/log/tf", 0)) for r in with_runs
            if r.get("cpu_sink_s") is not None and isinstance(r.get("sink_counts"), dict)]
    if sunk and sum(n for _, n in sunk):
        fig["sink_ms_per_write"] = 1000 * sum(c for c, _ in sunk) / sum(n for _, n in sunk)
    base = [x for r in control for x in r["octet_ratios"]]
    fig["control"] = {
        "jvms": len(control), "ratios": base, "mean": statistics.fmean(base),
        "ci": _bootstrap(base),
        "per_jvm": [statistics.fmean(r["octet_ratios"]) for r in control],
        "accounting": block_accounting(control)}
    fig["effect"] = _effect(with_runs, control)
    return fig


def _effect(with_runs: list[dict[str, Any]], without_runs: list[dict[str, Any]]
            ) -> dict[str, Any]:
    """1 + mean(with octets) - mean(without octets), and its 95 % interval from 10,000
    resamples (fixed seed) of whole pairs of JVMs: run i without the plugin and run i with
    it ran one after the other with the same octet order (``index``; mirrored when odd),
    so a pair shares the machine's state and the positions of its B blocks. Resampling
    the pairs keeps mirrored and plain orders balanced, which resampling each side's JVMs
    apart does not (a JVM's mean depends on its order by ~2 %: ``unpaired_ci``)."""
    import random

    def mean(jvms: list[list[float]]) -> float:
        return statistics.fmean([x for j in jvms for x in j])

    with_jvms = [r["octet_ratios"] for r in with_runs]
    without_jvms = [r["octet_ratios"] for r in without_runs]
    rng = random.Random(0)
    unpaired = sorted(1 + mean(rng.choices(with_jvms, k=len(with_jvms)))
                      - mean(rng.choices(without_jvms, k=len(without_jvms)))
                      for _ in range(10_000))
    out: dict[str, Any] = {"mean": 1 + mean(with_jvms) - mean(without_jvms),
                           "ci": (unpaired[249], unpaired[9749]), "paired": False,
                           "unpaired_ci": (unpaired[249], unpaired[9749])}
    sides: dict[Any, list[Any]] = {}
    for r in with_runs:
        sides.setdefault(r.get("index"), [None, None])[0] = r["octet_ratios"]
    for r in without_runs:
        sides.setdefault(r.get("index"), [None, None])[1] = r["octet_ratios"]
    pairs = [v for k, v in sides.items() if k is not None and v[0] and v[1]]
    if len(pairs) == len(with_jvms) == len(without_jvms) and len(pairs) >= 2:
        rng = random.Random(0)
        values = []
        for _ in range(10_000):
            chosen = rng.choices(pairs, k=len(pairs))
            values.append(1 + mean([w for w, _ in chosen]) - mean([c for _, c in chosen]))
        values.sort()
        out.update(ci=(values[249], values[9749]), paired=True, pairs=len(pairs),
                   pair_effects=[1 + statistics.fmean(w) - statistics.fmean(c)
                                 for w, c in pairs])
    return out


def _bootstrap(values: list[float]) -> tuple[float, float]:
    """95 % bootstrap interval of the mean (10,000 resamples, fixed seed)."""
    import random

    rng = random.Random(0)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values)))
                   for _ in range(10_000))
    return means[249], means[9749]


def block_accounting(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """small_writes_ab with ``block_cpu_ms``: per octet, the CPU of each group (JVM thread
    groups, the driver's Python, the helper) in its B blocks minus its A blocks, per write;
    and the same for the wall time. Mean and 95 % interval over the octets. Only the B
    blocks' writes are observed, so a group's B - A is what the plugin made it spend
    (its noise included)."""
    import workloads

    size = len(workloads.SmallWritesAB.ORDER)
    per_octet: dict[str, list[float]] = {}
    for r in runs:
        cpu, blocks = r.get("block_cpu_ms"), r.get("blocks")
        batch = r.get("params", {}).get("batch")
        if not cpu or not blocks or not batch or len(cpu) != len(blocks):
            continue
        writes = size // 2 * batch
        for start in range(0, len(blocks) - size + 1, size):
            octet = range(start, start + size)
            sign = {i: (1 if blocks[i][0] == "B" else -1) for i in octet}
            wall = sum(sign[i] * blocks[i][1] for i in octet) * 1000 / writes
            per_octet.setdefault("wall", []).append(wall)
            for key in cpu[start]:
                per_octet.setdefault(key, []).append(
                    sum(sign[i] * cpu[i].get(key, 0.0) for i in octet) / writes)
    if not per_octet:
        return None
    plugin_keys = [k for k in per_octet if k != "wall"]
    per_octet["all_cpu"] = [sum(per_octet[k][i] for k in plugin_keys)
                            for i in range(len(per_octet["wall"]))]
    return {k: {"mean": statistics.fmean(v), "ci": _bootstrap(v), "n": len(v)}
            for k, v in per_octet.items()}


# The listener bus's thread for its "shared" queue: Spark starts it for the first
# QueryExecutionListener (the plugin's), so its CPU is the plugin's when the application
# has no other listener there.
SHARED_QUEUE_THREAD = "spark-listener-group-shared"
LISTENER_QUEUE_THREADS = "spark-listener-group-"


def big_accounting(results: dict[str, Any]) -> dict[str, Any] | None:
    """big_job: the plugin's CPU for the job, by where it ran, per with-run against its
    neighbouring without-run (same index): the threads of the listener-bus queues the
    plugin can add work to (the ``shared`` queue, which Spark starts for a
    QueryExecutionListener, and the queue the plugin's own listener joins, with Spark's
    timing of each event for it), the helper process, and the driver's Python.
    ``bound``: 1 + that CPU over the job's wall time without the plugin, the slowest the
    job could be if all of it ran on the job's critical path."""
    runs = _runs(results, "big_job")
    without = {r.get("index"): r for r in runs if not r["plugin"] and r.get("accounting")}
    rows = []
    for r in runs:
        base = without.get(r.get("index"))
        if not r["plugin"] or not r.get("accounting") or base is None:
            continue
        a, b = r["accounting"], base["accounting"]
        groups = {LISTENER_QUEUE_THREADS + q
                  for q in ("shared", *(r.get("bus_queues") or ["executorManagement"]))}
        bus = sum(a["jvm_threads_ms"].get(g, 0.0) - b["jvm_threads_ms"].get(g, 0.0)
                  for g in groups)
        py = a["driver_py_ms"] - b["driver_py_ms"]
        rows.append({"bus": bus, "shared": a["jvm_threads_ms"].get(SHARED_QUEUE_THREAD, 0.0),
                     "helper": a["helper_ms"], "py": py,
                     "total": max(0.0, bus) + a["helper_ms"] + max(0.0, py),
                     "job_cpu_ms": r["cpu_jvm_s"] * 1000})
    if not rows:
        return None
    total = _med([x["total"] for x in rows])
    wall = _med([r["wall_s"] for r in _runs(results, "big_job", False)])
    return {"runs": len(rows), "total_ms": total,
            "bus_ms": _med([x["bus"] for x in rows]),
            "shared_ms": _med([x["shared"] for x in rows]),
            "helper_ms": _med([x["helper"] for x in rows]),
            "py_ms": _med([x["py"] for x in rows]),
            "max_total_ms": max(x["total"] for x in rows),
            "share": _med([x["total"] / x["job_cpu_ms"] for x in rows if x["job_cpu_ms"]]),
            "bound": None if not wall or total is None else 1 + total / 1000 / wall,
            "max_bound": None if not wall else 1 + max(x["total"] for x in rows) / 1000 / wall}


def ab_one_jvm(results: dict[str, Any]) -> dict[str, Any] | None:
    """small_writes_ab: the A B B A B A A B octets of one JVM. The mean of the octet
    ratios with a 95 % bootstrap interval (10,000 resamples of the octets, fixed seed).
    A/A control runs (``control``) are kept apart."""
    import workloads

    runs = [r for r in _runs(results, "small_writes_ab") if not r.get("control")]
    ratios = [x for r in runs for x in r.get("octet_ratios", [])]
    if not ratios:
        return None

    # toggle "session": the B blocks again with their untimed flush counted in
    flushed: list[float] = []
    for r in runs:
        if r.get("flush_ms"):
            extra = iter(r["flush_ms"])
            flushed += workloads.octet_ratios(
                [(side, t + (next(extra) / 1000 if side == "B" else 0.0))
                 for side, t in r["blocks"]])
    cpu = [r.get("cpu_py_ms") or {} for r in runs]
    return {"ratios": ratios, "mean": statistics.fmean(ratios),
            "median": statistics.median(ratios),
            "ci": _bootstrap(ratios),
            "toggle": runs[0].get("toggle", "activation"),
            "flushed_mean": statistics.fmean(flushed) if flushed else None,
            "flushed_ci": _bootstrap(flushed) if flushed else None,
            "flush_ms": _med([x for r in runs for x in r.get("flush_ms") or []]),
            "sum_ratio": _med([r.get("sum_ratio") for r in runs]),
            "batch": runs[0].get("params", {}).get("batch"),
            "cpu_py_without": _med([c.get("without") for c in cpu]),
            "cpu_py_with": _med([c.get("with") for c in cpu]),
            "collector_s": _med([r.get("cpu_runner_s") for r in runs])}


def listener_per_query(results: dict[str, Any]) -> dict[str, Any]:
    samples: list[float] = []
    per_run: list[float] = []
    exact = True
    used: set[str] = set()
    for r in _runs(results, "small_writes", True):
        bus = r.get("bus_after_k") or {}
        timers = bus.get("timers", {})
        # the plugin's listener on a queue of Spark's (default), else Spark's
        # ExecutionListenerBus, which calls QueryExecutionListeners on the shared queue
        name = next((n for n in (common.GATHERER_LISTENER, common.EXECUTION_LISTENER_BUS)
                     if "listenerProcessingTime." + n in timers), None)
        timer = timers.get(f"listenerProcessingTime.{name}")
        if not timer or "values_ns" not in timer:
            continue
        used.add(str(name))
        k = int(r.get("executions_at_k") or r.get("k_listener") or 0)
        exact = exact and timer["count"] <= common.RESERVOIR_SIZE
        top = common.top_k_ms(timer["values_ns"], k)
        samples.extend(top)
        if top:
            per_run.append(statistics.median(top))
    # Without the plugin no QueryExecutionListener is registered: Spark does not even
    # create the shared queue's ExecutionListenerBus.
    baseline_present = any(
        ("listenerProcessingTime." + common.EXECUTION_LISTENER_BUS) in
        (r.get("bus") or {}).get("timers", {}) for r in _runs(results, "small_writes", False))
    busy: list[float] = []
    for r in _runs(results, "small_writes", True):
        busy.extend(r.get("listener_busy_ms") or [])
    return {"samples": samples, "per_run": per_run, "exact": exact, "python_busy": busy,
            "listeners": sorted(used),
            "median": _med(samples), "baseline_present": baseline_present,
            "p90": common.percentile(samples, 90), "max": max(samples) if samples else None}


def latency(results: dict[str, Any]) -> dict[str, Any]:
    first: list[float] = []
    complete: list[float] = []
    first_py: list[float] = []
    errors: list[str] = []
    for r in _runs(results, "small_writes", True):
        lat = r.get("latency") or {}
        if "error" in lat:
            errors.append(lat["error"])
        first.extend(lat.get("first_ms", []))
        complete.extend(lat.get("complete_ms", []))
        first_py.extend(lat.get("first_ms_py", []))
    return {"first": first, "complete": complete, "first_py": first_py, "errors": errors,
            "p50": common.percentile(first, 50), "p90": common.percentile(first, 90),
            "p99": common.percentile(first, 99),
            "complete_p50": common.percentile(complete, 50),
            "complete_p90": common.percentile(complete, 90),
            "py_p50": common.percentile(first_py, 50)}


def sweep(results: dict[str, Any], key: str = "sweep") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in _runs(results, "plan_sweep"):
        for name, fig in (r.get(key) or {}).items():
            entry = out.setdefault(name, {"wall_without": [], "wall_with": [],
                                          "extraction": [], "handle": [], "executions": [],
                                          "largest_execution": []})
            if r["plugin"]:
                entry["wall_with"].append(fig["wall_ms"])
                if fig.get("extraction_ms") is not None:
                    entry["extraction"].append(fig["extraction_ms"])
                    samples = fig.get("extraction_samples_ms") or []
                    entry["executions"].append(len(samples))
                    if samples:
                        entry["largest_execution"].append(max(samples))
                if fig.get("handle_ms") is not None:
                    entry["handle"].append(fig["handle_ms"])
            else:
                entry["wall_without"].append(fig["wall_ms"])
    return out


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float | None]:
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if len(pts) < 3:
        return {"slope": None, "intercept": None, "r2": None}
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    sxy = sum((x - mx) * (y - my) for x, y in pts)
    slope = sxy / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for _, y in pts)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in pts)
    return {"slope": slope, "intercept": intercept,
            "r2": 1 - ss_res / ss_tot if ss_tot else None}


def rss(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for plugin in (False, True):
        runs = _runs(results, "many_queries", plugin)
        side = "with" if plugin else "without"
        out[side] = {
            "growth": [r["rss_growth_mb"] for r in runs],
            "start": [r["rss_start_mb"] for r in runs],
            "after_flush": [r["rss_after_flush_mb"] for r in runs],
            "heap_start": [r["jvm_heap_start_mb"] for r in runs],
            "heap_end": [r["jvm_heap_end_mb"] for r in runs],
            "wall": [r["wall_s"] for r in runs],
            "n": [r.get("queries") or r.get("params", {}).get("n") for r in runs],
            "samples": [r["rss_samples_mb"] for r in runs],
            "helper_start": [r["helper_rss_start_mb"] for r in runs
                             if r.get("helper_rss_start_mb") is not None],
            "helper_end": [r["helper_rss_after_flush_mb"] for r in runs
                           if r.get("helper_rss_after_flush_mb") is not None],
        }
        # Linear trend of RSS against queries (MB per 1,000), and the growth it projects
        # for 10,000 queries when a time-budgeted run did fewer.
        slopes = []
        for r in runs:
            pts = r["rss_samples_mb"]
            fit = linear_fit([p[0] for p in pts], [p[1] for p in pts])
            if fit["slope"] is not None:
                slopes.append(fit["slope"] * 1000)
        out[side]["per_1000"] = slopes
        done = [n for n in out[side]["n"] if n]
        growth = _med(out[side]["growth"])
        if growth is not None and done and min(done) < 10_000 and slopes:
            out[side]["at_10000"] = max(growth, _med(slopes) * 10)
            out[side]["projected"] = True
        else:
            out[side]["at_10000"] = growth
            out[side]["projected"] = False
    return out


def dropped(results: dict[str, Any]) -> tuple[int, int]:
    total = 0
    runs = 0
    for wl in results.get("workloads", {}).values():
        for r in wl.get("runs", []):
            if r.get("bus"):
                total += int(r["bus"].get("dropped_events", 0))
                runs += 1
    return total, runs


def extraction_profile(results_path: str) -> dict[str, Any] | None:
    """results/extraction_profile.json (extraction_profile.py), next to the results file."""
    path = os.path.join(os.path.dirname(os.path.abspath(results_path)),
                        "extraction_profile.json")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        data = json.load(handle)
    rows = {}
    for size, reps in data.get("sizes", {}).items():
        times = [r["extraction_ms"] for r in reps]
        rows[int(size)] = {"best": min(times), "median": _med(times),
                           "calls": _med([r["py4j_calls"] for r in reps]),
                           "chars": _med([r["reply_chars"] for r in reps])}
    data["rows"] = rows
    sizes = sorted(rows)
    data["fit_best"] = linear_fit(sizes, [rows[s]["best"] for s in sizes])
    data["fit_chars"] = linear_fit(sizes, [rows[s]["chars"] for s in sizes])
    data["fit_calls"] = linear_fit(sizes, [rows[s]["calls"] for s in sizes])
    return data


# --------------------------------------------------------------------------- plot
def plot(sw: dict[str, dict[str, Any]], fit: dict[str, float | None], path: str,
         xprof: dict[str, Any] | None = None) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = sorted(int(s) for s in sw)
    if not sizes:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ext = [sw[str(s)]["extraction"] for s in sizes]
    med = [_med(e) for e in ext]
    lo = [min(e) if e else None for e in ext]
    hi = [max(e) if e else None for e in ext]
    xs = [s for s, m in zip(sizes, med) if m is not None]
    if xs:
        ax1.plot(xs, [m for m in med if m is not None], "o-", label="median (both executions)")
        ax1.fill_between(xs, [v for v in lo if v is not None], [v for v in hi if v is not None],
                         alpha=0.2, label="min-max over runs")
        if fit.get("slope") is not None:
            ax1.plot([0, max(xs)], [fit["intercept"], fit["intercept"] + fit["slope"] * max(xs)],
                     "--", color="gray",
                     label=f"fit {fit['slope']:.2f} ms/relation, R2={fit['r2']:.2f}")
    if xprof and xprof.get("rows"):
        xs2 = sorted(xprof["rows"])
        ax1.plot(xs2, [xprof["rows"][x]["best"] for x in xs2], "^-", color="green",
                 label=f"best of {xprof.get('repeat')} (one JVM, extraction_profile.py)")
    ax1.axhline(30, color="red", lw=0.8, ls=":", label="target at 20 relations: 30 ms")
    ax1.set_xlabel("joined relations in the CTAS")
    ax1.set_yscale("log")  # the suite's loaded medians and the one-JVM best differ 10x
    ax1.set_ylabel("extraction time (ms, log scale)")
    ax1.set_title("Extraction time (worker thread)")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    w_with = [_med(sw[str(s)]["wall_with"]) for s in sizes]
    w_without = [_med(sw[str(s)]["wall_without"]) for s in sizes]
    ax2.plot(sizes, [v or 0 for v in w_without], "o-", label="without plugin")
    ax2.plot(sizes, [v or 0 for v in w_with], "s-", label="with plugin")
    over = [(a - b) if a is not None and b is not None else None
            for a, b in zip(w_with, w_without)]
    ax3 = ax2.twinx()
    ax3.bar(sizes, [o or 0 for o in over], width=2.5, alpha=0.3, color="gray",
            label="overhead (with - without)")
    ax3.set_ylabel("overhead (ms)")
    ax2.set_xlabel("joined relations in the CTAS")
    ax2.set_ylabel("CTAS wall time, median (ms)")
    ax2.set_title("Query wall time with and without the plugin")
    lines, labels = ax2.get_legend_handles_labels()
    l3, lab3 = ax3.get_legend_handles_labels()
    ax2.legend(lines + l3, labels + lab3, fontsize=8, loc="upper left")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- document
def _join20_verdict(cold: float | None, xprof: dict[str, Any] | None) -> Any:
    """The suite's figure is the first 20-way CTAS of a fresh JVM (cold JIT); the one-JVM
    repeats of extraction_profile.py give the steady state. Both are stated."""
    warm = (xprof or {}).get("rows", {}).get(20, {}).get("median")
    if cold is None:
        return None
    if cold <= 30.0:
        return True
    if warm is not None and warm <= 30.0:
        return (f"**missed** cold (first 20-way CTAS of a fresh JVM, {cold:.1f} ms); met "
                f"warm (median of the repeats in one JVM, {warm:.1f} ms)")
    return False


def render(results_path: str, doc_path: str = DOC, plot_path: str = PLOT) -> str:
    with open(results_path) as handle:
        results = json.load(handle)
    m = results.get("machine", {})
    small = wall_ab(results, "small_writes")
    ab = ab_one_jvm(results)
    big = wall_ab(results, "big_job")
    acc = big_accounting(results)
    prec = precision(results_path)
    yg = young(results_path)
    bus = listener_per_query(results)
    lat = latency(results)
    sw = sweep(results)
    tp = sweep(results, "tpch")
    sizes = sorted(int(s) for s in sw)
    fit = linear_fit(sizes, [_med(sw[str(s)]["extraction"]) for s in sizes])
    join20 = sw.get("20", {})
    mem = rss(results)
    drop_total, drop_runs = dropped(results)
    xprof = extraction_profile(results_path)
    plotted = plot(sw, fit, plot_path, xprof)

    def verdict(ok: Any) -> str:
        if isinstance(ok, str):
            return ok
        return "n/a" if ok is None else ("met" if ok else "**missed**")

    def ratio_verdict(fig: dict[str, Any], limit: float) -> Any:
        """met / missed only when the run-to-run spread is small enough to tell."""
        if fig["ratio"] is None:
            return None
        spread = max(((max(v) - min(v)) / statistics.median(v)) if len(v) > 1 else 0.0
                     for v in (fig["with"], fig["without"]))
        pairs = fig.get("pair_ratios") or []
        if pairs and min(pairs) > limit:
            # every with-run was slower than its neighbouring without-run by more than
            # the target: a miss whatever the spread
            return (f"**missed**: every paired ratio above {limit:g} (run-to-run spread "
                    f"{spread * 100:.0f} % of the median)")
        if spread > 5 * (limit - 1.0):
            return (f"inconclusive: run-to-run spread {spread * 100:.0f} % of the median "
                    f"(target {(limit - 1) * 100:.0f} %)")
        return fig["ratio"] <= limit

    def small_verdict() -> Any:
        """The fresh-JVM runs cannot resolve 2 % on this machine; the octets of one JVM
        can, when their 95 % interval lies on one side of the target. Two regimes: the
        suite's octets follow a short warm-up, as a fresh application's first few hundred
        writes; the long run (--precision) follows 300 warm-up writes, the steady state.
        Met only if every regime measured is."""
        fresh = ratio_verdict(small, 1.02)
        fresh_text = ("the fresh-JVM runs: " + (
            verdict(fresh) if not isinstance(fresh, bool) else
            ("below" if fresh else "above") + " 1.02"))

        def one(fig: dict[str, Any], label: str) -> tuple[str, str]:
            lo, hi = fig["ci"]
            state = "met" if hi <= 1.02 else "missed" if lo > 1.02 else "inconclusive"
            return state, (f"{label}: {state}, mean {fig['mean']:.3f}, 95 % interval "
                           f"{lo:.3f}-{hi:.3f}")

        young_fig, young_label = (
            (yg["effect"], f"young JVMs (the plugin's effect: {yg['jvms']} fresh JVMs with "
                           f"it against {yg['control']['jvms']} without)") if yg else
            (ab, "young JVM (the suite's octets)"))
        parts = [one(fig, label) for fig, label in
                 ((young_fig, young_label),
                  (prec, "warm JVM (the long run's octets)")) if fig is not None]
        if not parts:
            return fresh
        states = {state for state, _ in parts}
        overall = ("met" if states == {"met"} else "**missed**" if "missed" in states
                   else "inconclusive")
        return f"{overall}: " + "; ".join(text for _, text in parts) + "; " + fresh_text

    def big_verdict() -> Any:
        """The wall ratio, when the runs can resolve 1 %; else the CPU bound, when it lies
        below the target in every run."""
        wall = ratio_verdict(big, 1.01)
        if not isinstance(wall, str) or not wall.startswith("inconclusive") or acc is None:
            return wall
        if acc["max_bound"] is not None and acc["max_bound"] <= 1.01:
            return (f"met by the CPU bound ({_f(acc['max_bound'], 4)} at most); the wall "
                    f"ratio is {wall}")
        return wall

    rss_with = mem["with"]["at_10000"]
    linear_ok = None if fit["r2"] is None else fit["r2"] >= 0.9
    if xprof and xprof["fit_best"]["r2"] is not None:
        times_linear = max(xprof["fit_best"]["r2"], fit["r2"] or 0) >= 0.9
        calls = [xprof["rows"][s]["calls"] for s in xprof["rows"]]
        calls_ok = (xprof["fit_calls"]["r2"] or 0) >= 0.9 or \
            (bool(calls) and max(calls) - min(calls) <= 0.1 * max(calls))  # flat: better
        work_linear = (xprof["fit_chars"]["r2"] or 0) >= 0.9 and calls_ok
        if times_linear:
            linear_ok = True
        elif work_linear:
            linear_ok = ("met for the work (py4j reply bytes grow linearly, R2 >= 0.9; "
                         "py4j calls linear or flat); the times are too noisy on this "
                         "machine to fit")
        else:
            linear_ok = False
    j20 = _med(join20.get("extraction", []))
    measured = {
        "small_ratio": (f"{_f(small['ratio'], 3)} (median {_f(_med(small['with']))} s with / "
                        f"{_f(_med(small['without']))} s without; paired "
                        f"{_mmm(small['pair_ratios'], 3)})"
                        + (f"; one JVM, {len(ab['ratios'])} A B B A B A A B octets of "
                           f"{ab['batch']}-write blocks: mean {_f(ab['mean'], 3)} (95 % "
                           f"interval {_f(ab['ci'][0], 3)}-{_f(ab['ci'][1], 3)}), median "
                           f"{_f(ab['median'], 3)}"
                           + (" (no control: the young JVMs' run, next, has one)"
                              if yg else "") if ab else "")
                        + (f". **Long one-JVM run** (`run.py --precision`, "
                           f"{prec['started']}, commit `{prec['git']}`): "
                           f"{len(prec['ratios'])} octets of {prec['batch']}-write blocks "
                           f"after {prec['warmup']} warm-up writes, "
                           f"{prec['writes_a_side']:,} writes a side: mean "
                           f"{_f(prec['mean'], 3)} (95 % interval {_f(prec['ci'][0], 3)}-"
                           f"{_f(prec['ci'][1], 3)}), median {_f(prec['median'], 3)}"
                           if prec else "")
                        + (f". **Young JVMs** (`run.py --young`, {yg['started']}, commit "
                           f"`{yg['git']}`): {yg['jvms']} fresh JVMs with the plugin and "
                           f"{yg['control']['jvms']} without, {yg['octets_per_jvm']} octets "
                           f"each after {yg['warmup']} warm-up writes: octet means "
                           f"{_f(yg['mean'], 3)} with, {_f(yg['control']['mean'], 3)} "
                           f"without; the plugin's effect {_f(yg['effect']['mean'], 3)} "
                           f"(95 % interval {_f(yg['effect']['ci'][0], 3)}-"
                           f"{_f(yg['effect']['ci'][1], 3)}"
                           + (f", pairs of JVMs resampled; each side's JVMs apart: "
                              f"{_f(yg['effect']['unpaired_ci'][0], 3)}-"
                              f"{_f(yg['effect']['unpaired_ci'][1], 3)}"
                              if yg["effect"].get("paired") else "")
                           + ("; reporting to a stand-in server that only counts, "
                              "tests/perf/sink.py" if yg.get("server") == "sink" else "")
                           + ")"
                           if yg else ""),
                        small_verdict()),
        "big_ratio": (f"{_f(big['ratio'], 3)} (median {_f(_med(big['with']))} s with / "
                      f"{_f(_med(big['without']))} s without; paired "
                      f"{_mmm(big['pair_ratios'], 3)})"
                      + (f". **The plugin's CPU for the job** (listener-bus threads, the "
                         f"helper, the driver's Python, each run against its neighbour; "
                         f"{acc['runs']} runs, after the plugin's flush): median "
                         f"{_f(acc['total_ms'], 0)} ms, max {_f(acc['max_total_ms'], 0)} ms, "
                         f"{_f((acc['share'] or 0) * 100, 2)} % of the job's JVM CPU; were it "
                         f"all on the job's critical path, the ratio would be "
                         f"{_f(acc['bound'], 4)} (max {_f(acc['max_bound'], 4)})"
                         if acc else ""),
                      big_verdict()),
        "bus_ms": (f"median {_f(bus['median'], 3)} ms, p90 {_f(bus['p90'], 3)} ms, max "
                   f"{_f(bus['max'], 1)} ms ({len(bus['samples'])} queries)",
                   None if bus["median"] is None else bus["median"] <= 1.0),
        "join20_ms": (f"median {_f(j20, 1)} ms (min/median/max "
                      f"{_mmm(join20.get('extraction', []), 1)} ms; both executions of the "
                      f"CTAS)"
                      + (f"; one JVM at load {_f(xprof.get('load_start'), 0)}: best "
                         f"{_f(xprof['rows'][20]['best'], 1)} ms, median "
                         f"{_f(xprof['rows'][20]['median'], 1)} ms"
                         if xprof and 20 in xprof.get("rows", {}) else ""),
                      _join20_verdict(j20, xprof)),
        "linear": (f"suite medians: {_f(fit['slope'], 2)} ms per relation + "
                   f"{_f(fit['intercept'], 1)} ms, R2 = {_f(fit['r2'], 3)}"
                   + (f"; best of {xprof.get('repeat')} in one JVM: "
                      f"{_f(xprof['fit_best']['slope'], 2)} ms per relation, R2 = "
                      f"{_f(xprof['fit_best']['r2'], 3)}; py4j reply size "
                      f"{_f((xprof['fit_chars']['slope'] or 0) / 1000, 1)} KB per relation, "
                      f"R2 = {_f(xprof['fit_chars']['r2'], 3)}" if xprof else "")
                   + " (plot below)", linear_ok),
        "latency_ms": (f"p50 {_f(lat['p50'], 0)} ms, p90 {_f(lat['p90'], 0)} ms, p99 "
                       f"{_f(lat['p99'], 0)} ms ({len(lat['first'])} writes); all payloads "
                       f"of the write: p50 {_f(lat['complete_p50'], 0)} ms",
                       None if lat["p50"] is None else lat["p50"] <= 200.0),
        "rss_mb": (f"{_f(rss_with, 1)} MB with the plugin, "
                   f"{_f(mem['without']['at_10000'], 1)} MB without"
                   + (f" (projected: {_f(_med(mem['with']['growth']), 1)} MB measured over "
                      f"{_med([n for n in mem['with']['n'] if n])} queries, trend "
                      f"{_f(_med(mem['with']['per_1000']), 2)} MB per 1,000)"
                      if mem["with"]["projected"] else "")
                   + (f"; the plugin's helper process (delivery and extraction), in its own "
                      f"process: "
                      f"{_f(_med(mem['with']['helper_start']), 1)} MB resident at the start, "
                      f"{_f(_med(mem['with']['helper_end']), 1)} MB at the end"
                      if mem["with"]["helper_start"] and mem["with"]["helper_end"] else ""),
                   None if rss_with is None else rss_with <= 20.0),
        "dropped": (f"{drop_total} (all queues, {drop_runs} runs)", drop_total == 0
                    if drop_runs else None),
    }

    loads = [r.get("load_start") for wl in results.get("workloads", {}).values()
             for r in wl.get("runs", []) if r.get("load_start") is not None]
    lines: list[str] = []
    add = lines.append
    add("# Performance")
    add("")
    add("<!-- Generated by tests/perf/report.py from tests/perf/results/latest.json; "
        "rerun `bash tests/perf/run_all.sh`. Hand-written analysis: tests/perf/notes.md. -->")
    add("")
    add("What the plugin costs a Spark application, measured side by side with the same "
        "workload without it (issue 6). Every figure below comes from the last run of the "
        "suite; the method is at the end.")
    add("")
    whole = results.get("run_all_s")
    add(f"- **Date**: {results.get('started', '?')} (UTC); the workloads took "
        f"{_f((results.get('suite_s') or 0) / 60, 1)} min"
        + (f", the whole suite (`run_all.sh`: workloads, extraction profile, this document) "
           f"{_f(whole / 60, 1)} min" if whole else "")
        + f"; commit `{results.get('git', '?')}`")
    add(f"- **Machine**: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
        f"{m.get('mem_gb', '?')} GB; {m.get('platform', '?')}")
    add(f"- **Software**: pyspark {m.get('pyspark', '?')} (local[2]), {m.get('java', '?')}, "
        f"Python {m.get('python', '?')}")
    if loads:
        add(f"- **Machine load** (1-min load average at the start of each run): "
            f"min {min(loads):.1f} / median {statistics.median(loads):.1f} / max "
            f"{max(loads):.1f} on {m.get('cores', '?')} cores. Figures taken on a busy "
            "machine are noisy; the alternation spreads the noise over both sides.")
    if results.get("streams"):
        add("- **Result files** (workloads run as parallel streams, merged by report.py): "
            + "; ".join(f"{st['file']} {st.get('started') or '?'} to "
                        f"{st.get('finished') or '?'}" for st in results["streams"]))
    if results.get("quick"):
        add("- **This is a --quick smoke run**, not the measured suite.")
    add("")
    add("## Targets")
    add("")
    add("| measure | target | measured | verdict |")
    add("|---|---|---|---|")
    for key, label, target in TARGETS:
        text, ok = measured[key]
        add(f"| {label} | {target} | {text} | {verdict(ok)} |")
    add("")
    if plotted:
        add("![Extraction time and CTAS wall time against plan size](perf/plan_size.png)")
        add("")
        add("Left: extraction time (fact reading + rules on the plugin's worker thread, in the "
            "helper process by default, both "
            "executions of the CTAS) against the number of joined relations, median and "
            "min-max over the runs of the suite, with a least-squares line, and (green) the "
            "best of N in one JVM measured by extraction_profile.py; log scale. "
            "Right: the CTAS's wall time "
            "with and without the plugin (medians) and their difference.")
        add("")
    if os.path.exists(NOTES):
        with open(NOTES) as handle:
            add(handle.read().rstrip())
        add("")

    add("## Details")
    add("")
    add("min / **median** / max over the runs; each run is a fresh interpreter and JVM.")
    add("")
    add("| workload | runs (each side) | without plugin | with plugin | ratio of medians |")
    add("|---|---|---|---|---|")
    for name, fig, unit in (("200 small parquet writes", small, " s"),
                            ("2,000-task job", big, " s")):
        add(f"| {name} | {len(fig['without'])} / {len(fig['with'])} | "
            f"{_mmm(fig['without'], 2, unit)} | {_mmm(fig['with'], 2, unit)} | "
            f"{_f(fig['ratio'], 3)} |")
    for name, fig in (("200 small parquet writes", small), ("2,000-task job", big)):
        if fig["cpu_without"] and fig["cpu_with"]:
            add(f"| {name}: CPU of the timed region (driver JVM + driver Python + delivery "
                f"helper) | "
                f"{len(fig['cpu_without'])} / {len(fig['cpu_with'])} | "
                f"{_mmm(fig['cpu_without'], 2, ' s')} | {_mmm(fig['cpu_with'], 2, ' s')} | "
                f"{_f(fig['cpu_ratio'], 3)} |")
    add("")
    def toggle_text(fig: dict[str, Any]) -> str:
        if fig["toggle"] == "session":
            return ("A through a second session of the application, which the plugin does "
                    "not observe, B through the session the plugin is activated on, for the "
                    "whole run as in production; a B block's time ends with its last write, "
                    "and the flush after it is untimed: with it counted in, the octets' mean "
                    f"is {_f(fig['flushed_mean'], 3)} (95 % interval "
                    f"{_f(fig['flushed_ci'][0], 3)}-{_f(fig['flushed_ci'][1], 3)}; flush "
                    f"median {_f(fig['flush_ms'], 1)} ms)")
        return ("A without the plugin, B with it, activated before the block and deactivated "
                "after it; a B block's time includes the wait for its last write's delivery")

    if ab:
        add(f"**Small writes, both sides in one JVM** (`small_writes_ab`): after a warm-up, "
            f"blocks of {ab['batch']} writes in the order A B B A B A A B ("
            + toggle_text(ab) + "), so that the "
            "JVM's slow warming, which makes the writes ~40 % faster over a few hundred "
            "writes, cancels out of each octet, straight part and bend. Octet ratios (sum "
            "of B / sum of A): "
            + ", ".join(_f(x, 3) for x in ab["ratios"])
            + f"; ratio of the side sums {_f(ab['sum_ratio'], 3)}. CPU of the driver's Python "
            f"(its process and the plugin's delivery helper) per write: "
            f"{_f(ab['cpu_py_without'], 2)} ms without, "
            f"{_f(ab['cpu_py_with'], 2)} ms with; the collector (idle class) used "
            f"{_f(ab['collector_s'], 2)} s in the run.")
        add("")
    if prec:
        add(f"**Small writes, the long one-JVM run** (`python tests/perf/run.py --precision`, "
            f"{prec['started']}, {_f(prec['minutes'], 1)} min, load "
            f"{_f(prec['load'][0], 1)} -> {_f(prec['load'][1], 1)}): the same design after "
            f"{prec['warmup']} warm-up writes, {len(prec['ratios'])} octets of "
            f"{prec['batch']}-write blocks (" + toggle_text(prec) + "), so that the octets' "
            "mean resolves about a percent. "
            "Octet ratios: " + ", ".join(_f(x, 3) for x in prec["ratios"])
            + f"; ratio of the side sums {_f(prec['sum_ratio'], 3)}. CPU of the driver's "
            f"Python and the helper per write: {_f(prec['cpu_py_without'], 2)} ms without, "
            f"{_f(prec['cpu_py_with'], 2)} ms with.")
        add("")
    if yg:
        ctl = yg["control"]
        merged = yg.get("merged") or []
        when = (" and ".join(m["started"] for m in merged) + ", two runs of the same "
                "design pooled in order" if len(merged) > 1 else yg["started"])
        add(f"**Small writes in young JVMs** (`python tests/perf/run.py --young`, "
            f"{when}, {_f(yg['minutes'], 1)} min): the suite's design in "
            f"{yg['jvms']} fresh JVMs with the plugin and, alternating with them, "
            f"{ctl['jvms']} without it (the control: the same two sessions, B through the "
            f"one the plugin would observe), {yg['octets_per_jvm']} octets each after "
            f"{yg['warmup']} warm-up writes: the regime of a fresh application's first "
            "writes, where the JIT's threads still take most of a core. Every other pair of "
            "JVMs runs the octets mirrored (B A A B A B B A), so that events at the same "
            "write counts in every young JVM (the JIT's) fall on both sides alike. Each "
            "JVM's mean with the plugin: " + ", ".join(_f(x, 3) for x in yg["per_jvm"])
            + "; without: " + ", ".join(_f(x, 3) for x in ctl["per_jvm"])
            + f". Octet means: {_f(yg['mean'], 3)} with, {_f(ctl['mean'], 3)} without "
            "(what the two sessions and the JVM's warming alone give); the plugin's "
            f"effect, their difference: {_f(yg['effect']['mean'], 3)} (95 % interval "
            f"{_f(yg['effect']['ci'][0], 3)}-{_f(yg['effect']['ci'][1], 3)}, "
            + ("resampling whole pairs of JVMs: a JVM without the plugin and the next one "
               "with it, run with the same octet order; resampling each side's JVMs apart "
               f"gives {_f(yg['effect']['unpaired_ci'][0], 3)}-"
               f"{_f(yg['effect']['unpaired_ci'][1], 3)}, wider because a JVM's mean "
               "depends on its order by ~2 %). The effect of each pair: "
               + ", ".join(_f(x, 3) for x in yg["effect"]["pair_effects"]) + "."
               if yg["effect"].get("paired") else "resampling whole JVMs)."))
        add("")
        if yg.get("server") == "sink":
            add("The JVMs with the plugin report to `tests/perf/sink.py`, a stand-in for the "
                "Definity server that answers every report `200` and only counts them ("
                + (f"{_f(yg['sink_ms_per_write'], 2)} ms of CPU per write"
                   if yg.get("sink_ms_per_write") is not None else "its CPU not recorded")
                + "), instead of the collector, which stores every report in SQLite (~1.6 "
                "ms of CPU per write, three reports). In production the server is another "
                "machine; here it shares the job's two cores, and on this machine even "
                "idle-class CPU slows the job (see the notes below).")
            add("")
        acc_y = yg.get("accounting")
        acc_c = ctl.get("accounting")
        if acc_y:
            def cell(acc: dict[str, Any] | None, key: str) -> str:
                if not acc or key not in acc:
                    return "n/a"
                v = acc[key]
                return f"{_f(v['mean'], 2)} ({_f(v['ci'][0], 2)} to {_f(v['ci'][1], 2)})"

            labels = [("wall", "wall time"),
                      ("jvm_jit", "JVM: JIT compiler threads"), ("jvm_gc", "JVM: GC threads"),
                      ("jvm_py4j", "JVM: py4j threads (the plugin's pump, the job's calls)"),
                      ("jvm_listener_bus", "JVM: listener-bus queues"),
                      ("jvm_tasks", "JVM: task threads"),
                      ("jvm_scheduler", "JVM: DAG scheduler"), ("jvm_other", "JVM: other"),
                      ("driver_py", "the driver's Python"),
                      ("helper", "the plugin's helper process (idle class)"),
                      ("all_cpu", "CPU, all of these")]
            add("Where the time goes: per octet, each block's CPU (every thread of the JVM, "
                "the driver's Python, the helper; `/proc` schedstat, nanoseconds), B blocks "
                "minus A blocks, per write, in ms; mean over the octets with its 95 % "
                "interval.")
            add("")
            add("| where | with the plugin | without (control) |")
            add("|---|---|---|")
            for key, label in labels:
                if key in acc_y:
                    add(f"| {label} | {cell(acc_y, key)} | {cell(acc_c, key)} |")
            add("")
    if acc:
        add("**The 2,000-task job's CPU accounting.** Each run reads, before the job and "
            "after it and the plugin's flush (untimed), the CPU of every JVM thread "
            "(`ThreadMXBean`, by name), of the driver's Python process and of the helper "
            "process; each with-run is compared with its neighbouring without-run. The "
            "plugin's: the threads of the listener-bus queues it can add work to (the queue "
            "its listener joins, with Spark's timing of each event for it; a `shared` "
            "queue's thread if Spark starts one for a QueryExecutionListener, "
            f"{_f(acc['shared_ms'], 0)} ms here), median {_f(acc['bus_ms'], 1)} ms; the "
            f"helper {_f(acc['helper_ms'], 1)} ms; the driver's Python (10 ms ticks) "
            f"median {_f(acc['py_ms'], 1)} ms. Against a job of "
            f"{_f(_med(big['without']), 1)} s, even on its critical path that is a ratio of "
            f"{_f(acc['bound'], 4)}. The wall times cannot show it: the same job in one JVM "
            "varies by ~25 % from run to run (JIT, GC), more between fresh JVMs.")
        add("")
    with_small = _runs(results, "small_writes", True)
    k_listener = with_small[0].get("k_listener") if with_small else "?"
    on_bus = common.GATHERER_LISTENER in bus["listeners"]
    add("**Listener bus.** Spark's `listenerProcessingTime` timer of "
        + (f"`{common.GATHERER_LISTENER}` (the plugin's compiled listener, on the "
           "`executorManagement` queue that Spark runs anyway)" if on_bus else
           f"`{common.EXECUTION_LISTENER_BUS}` (the listener that calls every "
           "QueryExecutionListener, on the `shared` queue)")
        + ", read from `LiveListenerBus.metrics` after the first "
        f"{k_listener}"
        " timed writes, the bus drained. The timer times every event of the bus, but this "
        "listener only works on the query-end event; the k slowest samples, k = executions "
        "so far, are the query callbacks"
        + (" (fewer than 1,028 events: the reservoir holds every one, so this is exact)."
           if bus["exact"] else " (more than 1,028 events: the reservoir is a sample).")
        + f" Per-run medians: {', '.join(_f(v, 3) for v in bus['per_run'])} ms. "
        + ("Without the plugin the timer does not exist: the baseline is 0. "
           if not bus["baseline_present"] else "")
        + (f"Of that, the Python code of the callback (the listener's own "
           f"`busy_ns_samples`: snapshot + hand-off) takes median "
           f"{_f(_med(bus['python_busy']), 3)} ms, p99 "
           f"{_f(common.percentile(bus['python_busy'], 99), 3)} ms; the rest is py4j's "
           "callback round trip (JVM -> Python socket, Python thread wake-up, GIL)."
           if bus["python_busy"] else ""))
    firsts = [r["extraction_all_ms"][0] for r in _runs(results, "small_writes", True)
              if r.get("extraction_all_ms")]
    rest = [x for r in _runs(results, "small_writes", True)
            for x in (r.get("extraction_all_ms") or [])[1:]]
    if firsts:
        add("")
        add(f"**Extraction of a small write** (small_writes runs): the first query of a run "
            f"{_mmm(firsts, 0)} ms (one-time costs: py4j reflection, TCP_NODELAY set-up, "
            f"JIT), every later one median {_f(_med(rest), 1)} ms, p90 "
            f"{_f(common.percentile(rest, 90), 1)} ms.")
    add("")
    add(f"**Delivery latency** (with the plugin, delivering over HTTP to a local collector in "
        f"another process): from the JVM's completion time of the write (Spark's SQL status "
        f"store) to the collector's receipt of its `/log/tf` payload: p50 {_f(lat['p50'], 0)}"
        f" ms, p90 {_f(lat['p90'], 0)} ms, p99 {_f(lat['p99'], 0)} ms; to the receipt of "
        f"the last payload of the write (dataset, metrics): p50 {_f(lat['complete_p50'], 0)}"
        f" ms, p90 {_f(lat['complete_p90'], 0)} ms. Measured from the moment the action "
        f"returned in Python instead: p50 {_f(lat['py_p50'], 0)} ms."
        + (f" Problems: {'; '.join(lat['errors'])}." if lat["errors"] else ""))
    add("")
    add("**Memory** (`many_queries`: "
        "`spark.range(0, 1, 1, 1).write.format(\"noop\").mode(\"overwrite\").save()`, "
        "a real DataSourceV2 write with one task and nothing stored, so every query takes the "
        "plugin's whole path; RSS of the driver's Python process by psutil after a warm-up, "
        "and again after the last query, a flush and a `gc.collect()`).")
    add("")
    add("| | queries | Python RSS at start (MB) | growth (MB) | trend (MB per 1,000 queries) "
        "| JVM heap after GC, start -> end (MB) | wall (s) |")
    add("|---|---|---|---|---|---|---|")
    for side in ("without", "with"):
        d = mem[side]
        add(f"| {side} plugin | {_med([n for n in d['n'] if n]) or 'n/a'} | "
            f"{_f(_med(d['start']), 1)} | {_f(_med(d['growth']), 1)} | "
            f"{_f(_med(d['per_1000']), 3)} | "
            f"{_f(_med(d['heap_start']), 0)} -> {_f(_med(d['heap_end']), 0)} | "
            f"{_f(_med(d['wall']), 1)} |")
    add("")
    add("**Plan size** (CTAS of n catalog tables joined on a key, Hive metastore, empty "
        "parquet tables; with the plugin the statement is followed by a flush so the "
        "extraction of each statement is measured alone).")
    add("")
    add("| relations | extraction ms (min / **median** / max) | largest execution ms (median) "
        "| CTAS wall ms without | with | overhead ms |")
    add("|---|---|---|---|---|---|")
    for s in sizes:
        e = sw[str(s)]
        a, b = _med(e["wall_with"]), _med(e["wall_without"])
        add(f"| {s} | {_mmm(e['extraction'], 1)} | {_f(_med(e['largest_execution']), 1)} | "
            f"{_f(b, 0)} | {_f(a, 0)} | {_f(None if a is None or b is None else a - b, 0)} |")
    add("")
    if xprof and xprof.get("rows"):
        add(f"**Extraction cost in one JVM** (`tests/perf/extraction_profile.py`, "
            f"{xprof.get('repeat')} repetitions per size after a warm-up, load "
            f"{_f(xprof.get('load_start'), 1)} -> {_f(xprof.get('load_end'), 1)}): the best "
            "time is the least-perturbed one; calls and reply size are deterministic.")
        add("")
        add("| relations | best ms | median ms | py4j calls (both executions) | "
            "py4j reply KB |")
        add("|---|---|---|---|---|")
        for size in sorted(xprof["rows"]):
            row = xprof["rows"][size]
            add(f"| {size} | {_f(row['best'], 1)} | {_f(row['median'], 1)} | "
                f"{_f(row['calls'], 0)} | {_f(row['chars'] / 1000, 1)} |")
        add("")
    if tp:
        add("**TPC-H** (`CREATE TABLE out.qN USING parquet AS <query N>` over the 8 empty "
            "TPC-H Hive tables of tests' schema.sql): extraction time per query.")
        add("")
        add("| query | extraction ms (min / **median** / max) | CTAS wall ms without | with |")
        add("|---|---|---|---|")
        for q in sorted(tp, key=lambda k: int(k[1:])):
            e = tp[q]
            add(f"| {q} | {_mmm(e['extraction'], 1)} | {_f(_med(e['wall_without']), 0)} | "
                f"{_f(_med(e['wall_with']), 0)} |")
        all_q = [_med(tp[q]["extraction"]) for q in tp]
        all_q = [v for v in all_q if v is not None]
        if all_q:
            add("")
            add(f"Median over the 22 queries: {_f(statistics.median(all_q), 1)} ms; slowest "
                f"{_f(max(all_q), 1)} ms.")
        add("")
    task_events = os.path.join(os.path.dirname(os.path.abspath(results_path)),
                               "task_events.json")
    if os.path.exists(task_events):  # tests/perf/task_events.py (issue 25)
        from task_events import section

        with open(task_events) as handle:
            add(section(json.load(handle)))
        add("")
    add("## How to rerun")
    add("")
    add("```bash")
    add("bash tests/setup.sh && .venv/bin/pip install -e '.[bench]'   # matplotlib, psutil")
    add("source .venv/bin/activate")
    add("bash tests/perf/run_all.sh            # whole suite, rewrites this page and the plot")
    add("bash tests/perf/run_all.sh --quick    # smoke run of every workload, no rewrite")
    add("python tests/perf/run.py --precision  # small writes, long one-JVM run (~7 min)")
    add("python tests/perf/run.py --young      # small writes, 12 young JVMs + 12 without "
        "(~25 min)")
    add("python tests/perf/run.py --young --pairs 24   # the recorded figure (~50 min)")
    add("python tests/perf/run.py --only plan_sweep --runs 3 --merge   # one workload")
    add("python tests/perf/report.py           # re-render from tests/perf/results/latest.json")
    add("python tests/perf/task_events.py     # per task: listener-bus queue, Python "
        "(~15 min)")
    add("```")
    add("")
    add("See tests/perf/README.md for the layout and how to add a workload.")
    add("")
    add("## Method")
    add("")
    add("- Each workload runs in a fresh interpreter and JVM (`tests/perf/child.py`, "
        "`local[2]`, UI off), alternately without and with the plugin (A B A B ...; "
        "for `small_writes` and `big_job` the pairs alternate their order too, A B B A A B "
        "..., since this machine slows down as a suite goes on and the second run of a pair "
        "would otherwise always be the plugin's), 5 runs "
        "of each side for the wall-time ratios (`small_writes`, `big_job`), 2 for "
        "`plan_sweep` (its figure, extraction time, is plugin-only: every statement of every "
        "with-run is a sample), one of each for the 10,000-query memory run (both at once, "
        "since its figure is not a time). Figures are "
        "medians with min and max; the ratio is median with / median without.")
    add("- `small_writes_ab` (the suite's octets and the long run of `--precision`): the "
        "small writes with both sides in one fresh JVM, blocks of 20 writes in the order "
        "A B B A B A A B, each block after the same 0.3 s pause. The plugin is activated "
        "once, on the application's session, and stays so; the A blocks write through a "
        "second session (`spark.newSession()`), which it does not observe (the plugin is "
        "activated per session). A B block is timed to its last write's return; the flush "
        "after it (the plugin's reading and delivery of that last write) is untimed, and "
        "reported counted in as well. Nothing starts or stops between blocks, so the blocks "
        "are short and the JVM's drift cancels. The ratio of each octet is the sum of its B "
        "blocks over the sum of its A blocks, and the 95 % interval of their mean is a "
        "bootstrap over the octets. `--set control=true` runs the A/A control; `--set "
        "toggle='\"activation\"'` activates the plugin before each B block and deactivates "
        "it after (the earlier design: each B block then starts a task and a helper "
        "process, and its time includes its last delivery).")
    add("- The collector stands in for the Definity server and runs in the runner's "
        "process, in Linux's idle scheduling class (`SCHED_IDLE`, and nice 19), so that it "
        "takes idle CPU rather than the job's (in production the server is another machine); "
        "its CPU is recorded (`cpu_runner_s`). Its receipt times, and so the delivery "
        "latency, include its waits for an idle core.")
    if results.get("cds"):
        add("- Every JVM of the suite, both sides alike, maps the classes a first run without "
            "the plugin loaded from a class-data-sharing archive (`-XX:SharedArchiveFile`, "
            "made once per machine by `child.py --prepare-cds`; `run.py --no-cds` turns it "
            "off): session start 3.1 -> 1.8 s, the first writes ~1.4 s faster, the suite "
            "about a third shorter. A production driver without it starts slower; the "
            "plugin's own classes (the gatherer, compiled at run time) are never in it.")
    add("- Catalog tables (`bench.t*`, `tpch.*`, empty) are made once in a Hive metastore "
        "that every `plan_sweep` run copies (`workloads.catalog_template`).")
    add("- With the plugin: `definity_spark.activate(spark, server_url=<collector>)`, a "
        "fresh local collector per run in the runner's process (real HTTP, SQLite). JVM "
        "start and activation are outside the timed region (activation cost: "
        "tests/perf/import_cost.py).")
    add("- Timed region: the workload's actions only, after an untimed warm-up (6 writes, "
        "1 small job, 2 small CTAS, 60 queries) so that the JVM's first use is not measured; "
        "the JIT keeps compiling for hundreds of writes after it, on both sides alike.")
    add("- Extraction time: the plugin's own per-callback timing "
        "(`SessionObserver.extraction_ms`: fact reading + rules on the worker thread); a "
        "CTAS has two executions (insert + create), both counted.")
    add("- Listener bus: Spark's `LiveListenerBus.metrics` registry (the timers the metrics "
        "system reports as `listenerProcessingTime.*`), read through py4j; dropped events: "
        "the `queue.*.numDroppedEvents` counters of every queue at the end of every run.")
    add("")
    text = "\n".join(lines) + "\n"
    with open(doc_path, "w") as handle:
        handle.write(text)
    return text


def merge(paths: Sequence[str], out_path: str) -> str:
    """Merge result files of separate invocations (e.g. workloads run in parallel streams)
    into one: the workloads' runs are concatenated, the first file's header is kept, the
    suite time is the longest stream's."""
    merged: dict[str, Any] = {}
    for path in paths:
        with open(path) as handle:
            part = json.load(handle)
        if not merged:
            merged = {k: v for k, v in part.items() if k != "workloads"}
            merged["workloads"] = {}
            merged["streams"] = []
        merged["streams"].append({"file": os.path.basename(path),
                                  "started": part.get("started"),
                                  "finished": part.get("finished"),
                                  "suite_s": part.get("suite_s")})
        merged["suite_s"] = max(merged.get("suite_s") or 0, part.get("suite_s") or 0)
        for name, wl in part.get("workloads", {}).items():
            entry = merged["workloads"].setdefault(name, {"params": wl.get("params"),
                                                          "runs": []})
            entry["runs"].extend(wl.get("runs", []))
    with open(out_path, "w") as handle:
        json.dump(merged, handle, indent=1)
    return out_path


if __name__ == "__main__":
    # report.py [results.json]             render one results file
    # report.py a.json b.json ...          merge them into results/latest.json, render
    latest = os.path.join(HERE, "results", "latest.json")
    args = sys.argv[1:]
    if len(args) > 1:
        render(merge(args, latest))
    else:
        render(args[0] if args else latest)
