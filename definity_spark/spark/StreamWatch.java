// Structured Streaming, seen from the gatherer's listener-bus queue (spark/gatherer.py
// compiles it after FactGatherer.java, with FactGatherer's class loader as its parent).
//
// Spark posts its StreamingQueryListener events (started, progress, idle, terminated) to
// the listener bus as SparkListenerEvents: FactGatherer.onOtherEvent hands every "other"
// event here first (`FactGatherer.streams`), on the bus queue's thread. Nothing Python
// happens per micro-batch: the progress of each batch is folded into the run's interval
// in microseconds, and the extraction worker is handed, through FactGatherer's queue,
// at most one item per interval per query run plus three per run (started, the first
// batch that wrote data, terminated). The facts of a run (its plan, sources and sink)
// are read when the worker takes its "start" item (`Item.call`, on the worker's pump
// thread), never on the bus.
//
// foreachBatch: Spark runs every micro-batch in one cloned session of the query
// (StreamExecution.sparkSessionForStream); the writes the user's function makes on the
// batch's DataFrame are SQL executions of that session, which FactGatherer does not
// take (not its session). Here they are taken, linked to their run, for one micro-batch
// per interval: the first batch that writes, then the first after each interval (a
// batch ends at its progress event, posted after its writes).
//
// Janino compiles a subset of Java: no generics (raw types and casts), no lambdas. Only
// FactGatherer's public members are used (the two classes may have different loaders).

package definity;

import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerEvent;
import org.apache.spark.sql.streaming.SourceProgress;
import org.apache.spark.sql.streaming.StateOperatorProgress;
import org.apache.spark.sql.streaming.StreamingQueryListener;
import org.apache.spark.sql.streaming.StreamingQueryProgress;

import static definity.FactGatherer.call;
import static definity.FactGatherer.field;
import static definity.FactGatherer.hasMethod;
import static definity.FactGatherer.identifier;
import static definity.FactGatherer.invoke;
import static definity.FactGatherer.key;
import static definity.FactGatherer.method;
import static definity.FactGatherer.optionValue;
import static definity.FactGatherer.quote;
import static definity.FactGatherer.seqApply;
import static definity.FactGatherer.seqSize;
import static definity.FactGatherer.simpleName;

public class StreamWatch extends SparkListener {
    private static final int RESERVOIR = 1024;  // batch durations kept per interval (p50)
    private static final int FOREIGN_KEPT = 1024;

    private FactGatherer gatherer;
    private long intervalMs;
    private volatile Object watched;  // the session whose queries are reported
    private final Map runs = new HashMap();  // runId -> Run (bus thread only)
    private final Map bySession = new IdentityHashMap();  // a run's batch session -> Run
    private final Map foreign = new LinkedHashMap();  // runIds of other sessions' queries
    private Class endClass;  // SparkListenerSQLExecutionEnd and its accessors
    private Method endQe;
    private Method endName;
    private Method endFailure;
    private Method endDuration;
    private volatile long runsSeen;
    private volatile long itemsOffered;
    private volatile long writesTaken;
    private volatile long writesSkipped;  // batch writes outside a sampled micro-batch
    private volatile long errors;  // events this class could not handle (contained)

    // Once, before FactGatherer hands it any event (one py4j call).
    public void configure(FactGatherer gatherer, Object session, long intervalMs)
            throws Exception {
        this.gatherer = gatherer;
        this.intervalMs = Math.max(1, intervalMs);
        Class c = Class.forName("org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionEnd",
                                false, SparkListener.class.getClassLoader());
        endQe = c.getMethod("qe", new Class[0]);
        endName = c.getMethod("executionName", new Class[0]);
        endFailure = c.getMethod("executionFailure", new Class[0]);
        endDuration = c.getMethod("duration", new Class[0]);
        endClass = c;
        this.watched = session;
    }

    public synchronized void stop() {
        watched = null;
    }

    // The task ends while queries run (deactivate, the application's end): each run still
    // active ends here, with what its interval holds so far (its termination, if it comes
    // later, is not reported again). Called before the observer drains the queue.
    public synchronized void flush() {
        long now = System.currentTimeMillis();
        Iterator it = runs.values().iterator();
        while (it.hasNext()) {
            Run r = (Run) it.next();
            String end = r.interval(now, true);
            offer(new Item("end", r, end.substring(0, end.length() - 1)
                    + ",\"error\":null,\"running\":true}"));
        }
        runs.clear();
        bySession.clear();
    }

    // {runs, items, writes_taken, writes_skipped, errors}: for the task's counts and tests
    public String counts() {
        return "{\"runs\":" + runsSeen + ",\"items\":" + itemsOffered + ",\"writes_taken\":"
                + writesTaken + ",\"writes_skipped\":" + writesSkipped + ",\"errors\":"
                + errors + "}";
    }

    // -- the bus thread: never blocks, never throws --------------------------------------
    // (synchronized: only flush, at the task's end, ever waits for it)
    public synchronized void onOtherEvent(SparkListenerEvent event) {
        if (watched == null) {
            return;
        }
        try {
            if (event instanceof StreamingQueryListener.QueryProgressEvent) {
                progress(((StreamingQueryListener.QueryProgressEvent) event).progress());
            } else if (event instanceof StreamingQueryListener.QueryStartedEvent) {
                started((StreamingQueryListener.QueryStartedEvent) event);
            } else if (event instanceof StreamingQueryListener.QueryTerminatedEvent) {
                terminated((StreamingQueryListener.QueryTerminatedEvent) event);
            } else if (event instanceof StreamingQueryListener.QueryIdleEvent) {
                Run r = (Run) runs.get(String.valueOf(
                        ((StreamingQueryListener.QueryIdleEvent) event).runId()));
                if (r != null) {
                    maybeInterval(r, System.currentTimeMillis());
                }
            } else if (!bySession.isEmpty() && endClass.isInstance(event)) {
                batchWrite(event);
            }
        } catch (Throwable t) {
            errors++;
        }
    }

    private void started(StreamingQueryListener.QueryStartedEvent e) throws Exception {
        String runId = String.valueOf(e.runId());
        Object manager = call(watched, "streams");
        Object wrapper = invoke(method(manager.getClass(), "get", java.util.UUID.class), manager,
                                new Object[] {e.id()});
        if (wrapper == null) {  // another session's query (or gone already)
            foreign.put(runId, Boolean.TRUE);
            if (foreign.size() > FOREIGN_KEPT) {
                Iterator it = foreign.keySet().iterator();
                it.next();
                it.remove();
            }
            return;
        }
        Object query = hasMethod(wrapper, "streamingQuery") ? call(wrapper, "streamingQuery")
                : wrapper;
        Run r = new Run();
        r.id = String.valueOf(e.id());
        r.runId = runId;
        r.name = e.name();
        r.query = query;
        r.startedMs = System.currentTimeMillis();
        r.intervalStart = r.startedMs;
        // only a foreachBatch function writes in the batch session (a Delta sink's own
        // queries, for one, also run there: not the user's)
        Object batchSession = simpleName(call(query, "sink").getClass().getName())
                .equals("ForeachBatchSink") ? member(query, "sparkSessionForStream") : null;
        if (batchSession != null) {
            r.batchSession = batchSession;
            bySession.put(batchSession, r);
        }
        runs.put(runId, r);
        runsSeen++;
        offer(new Item("start", r, null));
    }

    private void progress(StreamingQueryProgress p) {
        Run r = (Run) runs.get(String.valueOf(p.runId()));
        if (r == null) {
            return;
        }
        long now = System.currentTimeMillis();
        r.window = false;  // this batch's writes were seen (they come before its progress)
        long rows = p.numInputRows();
        long ms = p.batchDuration();
        r.batches++;
        r.runBatches++;
        r.rows += rows;
        r.runRows += rows;
        if (rows > 0 && p.inputRowsPerSecond() > 0) {
            r.inSeconds += rows / p.inputRowsPerSecond();
        }
        r.processMs += ms;
        r.maxMs = Math.max(r.maxMs, ms);
        r.runMaxMs = Math.max(r.runMaxMs, ms);
        r.keep(ms);
        StateOperatorProgress[] ops = p.stateOperators();
        if (ops != null && ops.length > 0) {
            long stateRows = 0;
            long stateBytes = 0;
            for (int i = 0; i < ops.length; i++) {
                stateRows += ops[i].numRowsTotal();
                stateBytes += ops[i].memoryUsedBytes();
            }
            r.stateRows = stateRows;
            r.stateBytes = stateBytes;
        }
        Map eventTime = p.eventTime();
        Object watermark = eventTime == null ? null : eventTime.get("watermark");
        if (watermark != null && p.timestamp() != null) {
            long mark = java.time.Instant.parse(String.valueOf(watermark)).toEpochMilli();
            if (mark > 0) {  // 1970-01-01T00:00:00Z: no watermark yet
                r.watermarkDelayMs = java.time.Instant.parse(p.timestamp()).toEpochMilli() - mark;
            }
        }
        SourceProgress[] sources = p.sources();
        long behind = -1;
        for (int i = 0; sources != null && i < sources.length; i++) {
            Map m = sources[i].metrics();
            Object max = m == null ? null : m.get("maxOffsetsBehindLatest");
            if (max != null) {
                try {
                    behind = Math.max(behind, (long) Double.parseDouble(String.valueOf(max)));
                } catch (NumberFormatException ex) {
                    // not a number: not reported
                }
            }
        }
        if (behind >= 0) {
            r.offsetsBehind = behind;
        }
        long written = p.sink() == null ? -1 : p.sink().numOutputRows();
        if (!r.wrote && (written > 0 || (written < 0 && rows > 0))) {
            r.wrote = true;
            offer(new Item("data", r, "{\"batch_id\":" + p.batchId() + "}"));
        }
        maybeInterval(r, now);
    }

    private void maybeInterval(Run r, long now) {
        if (now - r.intervalStart >= intervalMs) {
            offer(new Item("metrics", r, r.interval(now, false)));
        }
    }

    private void terminated(StreamingQueryListener.QueryTerminatedEvent e) {
        String runId = String.valueOf(e.runId());
        Run r = (Run) runs.remove(runId);
        if (r == null) {
            foreign.remove(runId);
            return;
        }
        if (r.batchSession != null) {
            bySession.remove(r.batchSession);
        }
        StringBuilder end = new StringBuilder(r.interval(System.currentTimeMillis(), true));
        end.setLength(end.length() - 1);
        scala.Option ex = e.exception();
        key(end, "error");
        if (ex != null && ex.isDefined()) {
            quote(end, String.valueOf(ex.get()));
        } else {
            end.append("null");
        }
        end.append('}');
        offer(new Item("end", r, end.toString()));
    }

    // A SQL execution end of some session: one of a run's batch writes (foreachBatch)?
    private void batchWrite(SparkListenerEvent event) throws Exception {
        Object qe = invoke(endQe, event, new Object[0]);
        if (qe == null) {
            return;
        }
        Run r = (Run) bySession.get(call(qe, "sparkSession"));
        if (r == null) {
            return;
        }
        scala.Option name = (scala.Option) invoke(endName, event, new Object[0]);
        scala.Option failure = (scala.Option) invoke(endFailure, event, new Object[0]);
        if (name == null || name.isEmpty() || (failure != null && failure.isDefined())) {
            return;  // the batch's own execution (no name); a failure fails the query
        }
        long now = System.currentTimeMillis();
        if (!r.window && (r.windowOpened < 0 || now - r.windowOpened >= intervalMs)) {
            r.window = true;
            r.windowOpened = now;
        }
        if (!r.window) {
            writesSkipped++;
            return;
        }
        Object ns = invoke(endDuration, event, new Object[0]);
        if (gatherer.offerStreamWrite(String.valueOf(name.get()),
                (org.apache.spark.sql.execution.QueryExecution) qe,
                ((Number) ns).longValue(), r.runId)) {
            writesTaken++;
        }
    }

    private void offer(Item item) {
        if (gatherer.offerItem(item)) {
            itemsOffered++;
        }
    }

    // -- one query run ---------------------------------------------------------------------
    static final class Run {
        String id;
        String runId;
        String name;
        Object query;  // the StreamExecution
        Object batchSession;
        long startedMs;
        boolean wrote;  // the "data" item was offered
        boolean window;  // its current micro-batch's writes are taken
        long windowOpened = -1;
        // the interval so far
        long intervalStart;
        long batches;
        long rows;
        double inSeconds;  // rows / inputRowsPerSecond summed: the time those rows came in
        long processMs;
        long maxMs;
        long[] kept = new long[RESERVOIR];
        int nKept;
        long seen;
        long random = 0x2545F4914F6CDD1DL;
        // last seen values (gauges)
        long stateRows = -1;
        long stateBytes = -1;
        long watermarkDelayMs = -1;
        long offsetsBehind = -1;
        // the whole run
        long runBatches;
        long runRows;
        long runMaxMs;

        // reservoir sampling (Vitter's R) with a xorshift generator: no allocation
        void keep(long ms) {
            seen++;
            if (nKept < kept.length) {
                kept[nKept++] = ms;
                return;
            }
            random ^= random << 13;
            random ^= random >>> 7;
            random ^= random << 17;
            long slot = (random >>> 1) % seen;
            if (slot < kept.length) {
                kept[(int) slot] = ms;
            }
        }

        // The interval's summary (and the run's, at its end); starts the next interval.
        String interval(long now, boolean end) {
            StringBuilder out = new StringBuilder(320);
            out.append("{\"interval_ms\":").append(now - intervalStart);
            out.append(",\"batches\":").append(batches);
            out.append(",\"input_rows\":").append(rows);
            if (inSeconds > 0) {
                out.append(",\"input_rows_per_second\":").append(round(rows / inSeconds));
            }
            if (processMs > 0) {
                out.append(",\"processed_rows_per_second\":")
                   .append(round(rows * 1000.0 / processMs));
            }
            if (nKept > 0) {
                long[] sorted = new long[nKept];
                System.arraycopy(kept, 0, sorted, 0, nKept);
                java.util.Arrays.sort(sorted);
                out.append(",\"batch_duration_p50_ms\":").append(sorted[(nKept - 1) / 2]);
                out.append(",\"batch_duration_max_ms\":").append(maxMs);
            }
            gauge(out, "state_rows", stateRows);
            gauge(out, "state_memory_bytes", stateBytes);
            gauge(out, "watermark_delay_ms", watermarkDelayMs);
            gauge(out, "source_offsets_behind_latest", offsetsBehind);
            if (end) {
                out.append(",\"run_batches\":").append(runBatches);
                out.append(",\"run_input_rows\":").append(runRows);
                out.append(",\"run_seconds\":").append(round((now - startedMs) / 1000.0));
                if (runBatches > 0) {
                    out.append(",\"run_batch_duration_max_ms\":").append(runMaxMs);
                }
            }
            intervalStart = now;
            batches = 0;
            rows = 0;
            inSeconds = 0;
            processMs = 0;
            maxMs = 0;
            nKept = 0;
            seen = 0;
            return out.append('}').toString();
        }

        private static void gauge(StringBuilder out, String key, long value) {
            if (value >= 0) {
                out.append(",\"").append(key).append("\":").append(value);
            }
        }

        private static double round(double v) {
            return Math.round(v * 1000) / 1000.0;
        }
    }

    // -- what the worker takes (FactGatherer.next calls `call`, on the pump's thread) -------
    final class Item implements Callable {
        private final String kind;
        private final Run run;
        private final String body;  // the kind's JSON object, or null

        Item(String kind, Run run, String body) {
            this.kind = kind;
            this.run = run;
            this.body = body;
        }

        // One line of JSON ({"stream": kind, ids, body}); a "start" item also carries the
        // run's facts, then "\n" and the JSON of its analyzed plan.
        public Object call() throws Exception {
            StringBuilder out = new StringBuilder(256);
            out.append("{\"stream\":");
            quote(out, kind);
            head(out, run);
            if (body != null) {
                key(out, "body");
                out.append(body);
            }
            if (!kind.equals("start")) {
                return out.append('}').toString();
            }
            String plan = null;
            try {
                plan = facts(out, run);
            } catch (Throwable t) {
                field(out, "read_error", t.getClass().getName() + ": " + t.getMessage());
            }
            out.append('}');
            if (plan != null) {
                out.append('\n').append(plan);
            }
            run.query = null;  // read once: the StreamExecution is not kept for this
            return out.toString();
        }
    }

    private static void head(StringBuilder out, Run r) {
        field(out, "id", r.id);
        field(out, "run_id", r.runId);
        field(out, "name", r.name);
    }

    // -- the facts of a run (on the pump's thread) ------------------------------------------
    // The sink, the schema of what the query writes, the facts of its plan's leaves as
    // FactGatherer reads any plan's (leavesOf), with the streaming sources' own facts
    // (stream_leaves, by position among the plan's leaves); answers the plan's JSON.
    private String facts(StringBuilder out, Run r) throws Exception {
        Object query = r.query;
        Object plan = call(query, "analyzedPlan");
        Object session = call(query, "sparkSession");
        sink(out, query, session);
        key(out, "schema");
        out.append((String) call(call(plan, "schema"), "json"));
        key(out, "stream_leaves");
        out.append('[');
        Object leaves = call(plan, "collectLeaves");
        int n = seqSize(leaves);
        for (int i = 0; i < n; i++) {
            if (i > 0) {
                out.append(',');
            }
            streamLeaf(out, seqApply(leaves, i), session);
        }
        out.append(']');
        String leafFacts = gatherer.leavesOf(plan);  // {"leaves":[...]}
        key(out, "facts");
        out.append(leafFacts);
        return gatherer.json(plan);
    }

    private void sink(StringBuilder out, Object query, Object session) throws Exception {
        Object sink = call(query, "sink");
        String cls = sink.getClass().getName();
        String name = simpleName(cls);
        key(out, "sink");
        out.append('{');
        field(out, "cls", cls);
        Object write = member(query, "plan");  // MicroBatchExecution's WriteToStream
        Object table = write == null ? null : optionValue(member(write, "catalogTable"));
        if (table != null) {
            catalogTable(out, table);
        }
        Object catalogAndIdent = write == null ? null : optionValue(member(write, "catalogAndIdent"));
        if (catalogAndIdent != null && table == null) {
            key(out, "table");
            out.append('{');
            field(out, "catalog", String.valueOf(call(call(catalogAndIdent, "_1"), "name")));
            identifier(out, call(catalogAndIdent, "_2"));
            out.append('}');
        }
        Object path = null;
        Object partitions = null;
        if (name.equals("FileStreamSink")) {
            path = member(sink, "path");
            partitions = member(sink, "partitionColumnNames");
        } else if (name.equals("DeltaSink")) {
            path = member(sink, "path");
            partitions = member(sink, "partitionColumns");
        }
        if (path != null) {
            field(out, "path", qualified(String.valueOf(path), session));
        }
        if (partitions != null) {
            strings(out, "partition_columns", partitions);
        }
        if (cls.indexOf("kafka010") >= 0) {
            Object options = member(query, "extraOptions");  // the writer's options
            kafka(out, scalaGet(options, "kafka.bootstrap.servers"), scalaGet(options, "topic"),
                  null, null);
        }
        out.append('}');
    }

    private void catalogTable(StringBuilder out, Object table) throws Exception {
        Object ident = call(table, "identifier");
        key(out, "table");
        out.append('{');
        Object catalog = hasMethod(ident, "catalog") ? optionValue(call(ident, "catalog")) : null;
        field(out, "catalog", catalog == null ? null : String.valueOf(catalog));
        Object db = optionValue(call(ident, "database"));
        key(out, "namespace");
        out.append('[');
        if (db != null) {
            quote(out, String.valueOf(db));
        }
        out.append(']');
        field(out, "name", String.valueOf(call(ident, "table")));
        out.append('}');
        key(out, "table_schema");
        out.append((String) call(call(table, "schema"), "json"));
        strings(out, "partition_columns", call(table, "partitionColumnNames"));
    }

    // A streaming source (StreamingRelation: a V1 DataSource; StreamingRelationV2: a V2
    // table, Kafka's too): what naming needs; {} for any other leaf.
    private void streamLeaf(StringBuilder out, Object leaf, Object session) throws Exception {
        out.append('{');
        String name = simpleName(leaf.getClass().getName());
        if (name.equals("StreamingRelation")) {
            Object ds = call(leaf, "dataSource");
            field(out, "format", String.valueOf(call(ds, "className")));
            Object table = optionValue(call(ds, "catalogTable"));
            if (table != null) {
                catalogTable(out, table);
            } else {
                List paths = new ArrayList();
                Object options = call(ds, "options");
                Object path = scalaGet(options, "path");
                if (path != null) {
                    paths.add(qualified(String.valueOf(path), session));
                }
                Object more = call(ds, "paths");
                for (int i = 0; i < seqSize(more); i++) {
                    String p = qualified(String.valueOf(seqApply(more, i)), session);
                    if (!paths.contains(p)) {
                        paths.add(p);
                    }
                }
                key(out, "paths");
                out.append('[');
                for (int i = 0; i < paths.size(); i++) {
                    if (i > 0) {
                        out.append(',');
                    }
                    quote(out, (String) paths.get(i));
                }
                out.append(']');
                if (String.valueOf(call(ds, "className")).indexOf("kafka") >= 0) {
                    kafka(out, scalaGet(options, "kafka.bootstrap.servers"),
                          scalaGet(options, "subscribe"), scalaGet(options, "assign"),
                          scalaGet(options, "subscribepattern"));
                }
            }
        } else if (name.equals("StreamingRelationV2")) {
            field(out, "format", String.valueOf(call(leaf, "sourceName")));
            Object catalog = optionValue(call(leaf, "catalog"));
            Object ident = optionValue(call(leaf, "identifier"));
            Object table = call(leaf, "table");
            if (ident != null) {
                key(out, "table");
                out.append('{');
                field(out, "catalog", catalog == null ? null : String.valueOf(call(catalog, "name")));
                identifier(out, ident);
                out.append('}');
            } else {  // format(...).load(name) gives no identifier: the table's own name
                field(out, "v2_name", String.valueOf(call(table, "name")));
                field(out, "table_cls", table.getClass().getName());
            }
            if (table.getClass().getName().indexOf("kafka010") >= 0) {
                Map options = (Map) call(leaf, "extraOptions");  // case-insensitive
                kafka(out, options.get("kafka.bootstrap.servers"), options.get("subscribe"),
                      options.get("assign"), options.get("subscribePattern"));
            }
        }
        out.append('}');
    }

    // Kafka's servers and topics: never any other option (they may hold credentials).
    private static void kafka(StringBuilder out, Object servers, Object topics, Object assign,
                              Object pattern) {
        if (servers == null) {
            return;
        }
        field(out, "kafka_servers", String.valueOf(servers));
        if (topics != null) {
            field(out, "kafka_topics", String.valueOf(topics));
        }
        if (assign != null) {
            field(out, "kafka_assign", String.valueOf(assign));
        }
        if (pattern != null) {
            field(out, "kafka_pattern", String.valueOf(pattern));
        }
    }

    // A path as Spark qualifies it (Path.makeQualified on its file system).
    private static String qualified(String path, Object session) throws Exception {
        org.apache.hadoop.fs.Path p = new org.apache.hadoop.fs.Path(path);
        org.apache.hadoop.conf.Configuration conf = (org.apache.hadoop.conf.Configuration)
                call(call(session, "sessionState"), "newHadoopConf");
        return p.getFileSystem(conf).makeQualified(p).toString();
    }

    // -- helpers -----------------------------------------------------------------------------
    // A public accessor, else a (private) field of that name in the class or a superclass:
    // null where neither exists on this Spark version.
    private static Object member(Object o, String name) {
        try {
            if (hasMethod(o, name)) {
                return call(o, name);
            }
            for (Class c = o.getClass(); c != null; c = c.getSuperclass()) {
                try {
                    Field f = c.getDeclaredField(name);
                    f.setAccessible(true);
                    return f.get(o);
                } catch (NoSuchFieldException e) {
                    // the superclass, then
                }
            }
        } catch (Throwable t) {
            // unreadable here: null
        }
        return null;
    }

    // A Scala (or Java) map's value for a key (a case-insensitive map's keys are lower-case)
    private static Object scalaGet(Object map, String key) {
        if (map == null) {
            return null;
        }
        if (map instanceof Map) {
            return ((Map) map).get(key);
        }
        try {
            Object v = optionValue(invoke(method(map.getClass(), "get", String.class), map,
                                          new Object[] {key}));
            if (v == null && !key.equals(key.toLowerCase())) {
                v = optionValue(invoke(method(map.getClass(), "get", String.class), map,
                                       new Object[] {key.toLowerCase()}));
            }
            return v;
        } catch (Exception e) {
            return null;
        }
    }

    private static void strings(StringBuilder out, String k, Object seq) throws Exception {
        key(out, k);
        out.append('[');
        int n = seqSize(seq);
        for (int i = 0; i < n; i++) {
            if (i > 0) {
                out.append(',');
            }
            quote(out, String.valueOf(seqApply(seq, i)));
        }
        out.append(']');
    }
}
