"""A long streaming run: memory and payload count of the plugin over many micro-batches.

    python tests/perf/stream_long_run.py [--batches 10000] [--interval 10]
                                         [--foreach-batch]

A ``rate-micro-batch`` source (10 rows a micro-batch) into the ``noop`` sink, as fast
as Spark triggers (``processingTime=0``), with the plugin activated (helper process on,
the default path; reports to a JSONL events file, no server in this process);
``--no-plugin`` without it (the baseline). ``--foreach-batch``: a
``foreachBatch`` function with two parquet writes per micro-batch instead (its writes go
through the sampled path, docs/metrics.md "Streaming"). RSS of the Python driver, of the
helper process and of the driver's JVM is sampled after 10% of the batches (warm) and at
the end; the payloads are counted by endpoint. Not part of the test run (minutes).
Prints both figures against the issue's bounds: RSS growth of the driver and the helper
<= 20 MB; metrics payloads of the stream <= run seconds / interval + 2.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time


def rss_mb(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--foreach-batch", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop there if the batches are not done (a busy machine)")
    parser.add_argument("--no-plugin", action="store_true",
                        help="the same stream without the plugin (its rate, its RSS)")
    args = parser.parse_args()

    from pyspark.sql import SparkSession

    import definity_spark

    # the checkpoint's small files on tmpfs where there is one: the micro-batches' own
    # cost is not what is measured
    work = tempfile.mkdtemp(prefix="perf-stream-",
                            dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    events = os.path.join(work, "events.jsonl")
    spark = (SparkSession.builder.master("local[2]").appName("perf-stream")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "1")
             .config("spark.sql.streaming.ui.enabled", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    handle = runtime = helper_pid = None
    if not args.no_plugin:
        handle = definity_spark.activate(spark, events_file=events, spool_dir=work + "/spool",
                                         stream_metrics_interval=args.interval)
        assert handle is not None
        runtime = handle._runtime
        helper_pid = runtime.helper.helper_pid if runtime.helper is not None else None
    jvm_pid = spark.sparkContext._gateway.proc.pid  # type: ignore[union-attr]

    # rate-micro-batch: a fixed number of rows per micro-batch (the rate source's offsets
    # are whole seconds: at most one micro-batch a second)
    df = spark.readStream.format("rate-micro-batch").option("rowsPerBatch", 10) \
        .option("numPartitions", 1).load()
    writer = df.writeStream.trigger(processingTime="0 seconds") \
        .option("checkpointLocation", work + "/chk").queryName("long_run")
    if args.foreach_batch:
        def two_writes(batch: object, batch_id: int) -> None:
            batch.write.mode("overwrite").parquet(work + "/fb_all")  # type: ignore[attr-defined]
            batch.where("value % 2 = 0").write.mode("overwrite") \
                .parquet(work + "/fb_even")  # type: ignore[attr-defined]
        query = writer.foreachBatch(two_writes).start()
    else:
        query = writer.format("noop").start()

    warm_at = max(1, args.batches // 10)
    warm: dict[str, float | None] = {}
    started = time.monotonic()
    last_print = started
    while True:
        progress = query.lastProgress
        done = int(progress["batchId"]) + 1 if progress else 0
        if not warm and done >= warm_at:
            warm = {"driver": rss_mb(os.getpid()), "helper": rss_mb(helper_pid),
                    "jvm": rss_mb(jvm_pid), "at": done}
        if done >= args.batches or query.exception() is not None:
            break
        if args.max_seconds and time.monotonic() - started > args.max_seconds:
            print(f"  stopped after {args.max_seconds:.0f} s (--max-seconds)")
            break
        if time.monotonic() - last_print > 30:
            last_print = time.monotonic()
            print(f"  {done} batches, {time.monotonic() - started:.0f} s, driver "
                  f"{rss_mb(os.getpid()):.1f} MB, helper {rss_mb(helper_pid) or 0:.1f} MB, "
                  f"jvm {rss_mb(jvm_pid):.1f} MB", flush=True)
        time.sleep(0.5)
    end = {"driver": rss_mb(os.getpid()), "helper": rss_mb(helper_pid), "jvm": rss_mb(jvm_pid)}
    seconds = time.monotonic() - started
    query.stop()
    stats = {}
    if handle is not None:
        handle.flush(60)
        if runtime.observers:
            observer = runtime.observers[next(iter(runtime.observers))]
            stats = dict(observer.stats)
            if observer.streams is not None:  # the JVM side's counts
                stats["jvm"] = json.loads(str(observer.streams.counts()))
        definity_spark.deactivate(spark, timeout=60)
    spark.stop()

    counts: collections.Counter[str] = collections.Counter()
    stream_payloads = 0
    with open(events if handle is not None else os.devnull, encoding="utf-8") as handle_:
        for line in handle_:
            record = json.loads(line)
            counts[record["endpoint"]] += 1
            body = record["body"]
            if record["endpoint"] == "/log/metrics" and any(
                    m.get("asset_type") == "stream" for m in body.get("metrics", ())):
                stream_payloads += 1
    bound = int((time.monotonic() - started) / args.interval) + 2
    kind = "foreachBatch, two writes each" if args.foreach_batch else "rate-micro-batch -> noop"
    print(f"micro-batches: {done} in {seconds:.0f} s ({done / seconds:.1f}/s), {kind}")
    for who in ("driver", "helper", "jvm"):
        if warm.get(who) is not None and end.get(who) is not None:
            print(f"{who:6s} RSS: {warm[who]:.1f} MB after {warm['at']} batches -> "
                  f"{end[who]:.1f} MB after {done}: growth {end[who] - warm[who]:+.1f} MB")
    print(f"payloads by endpoint: {dict(counts)}")
    print(f"stream metrics payloads: {stream_payloads} (bound: run seconds / interval + 2 = "
          f"{bound}); worker counts: {stats}")
    ok = stream_payloads <= bound and all(
        end[w] - warm[w] <= 20.0 for w in ("driver", "helper")
        if warm.get(w) is not None and end.get(w) is not None)
    print("OK" if ok else "OVER A BOUND")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
