// The JVM half of the fact reader (spark/facts.py, spark/gatherer.py).
//
// Loaded into the driver at run time: compiled with Janino, the compiler Spark itself
// uses for code generation (no JAR to ship), or defined from the class bytes a first
// compile cached on this machine. Each method performs, inside the JVM, the accessor
// calls FactReader would otherwise make one py4j round trip at a time, and answers with
// one string: the raw values (class names, metric maps' toString, the plan's JSON),
// which the Python side parses with the same code as its py4j reads. What it reads from a
// write command is the command table's (lineage/commands.py, handed to the constructor):
// accessor paths, evaluated generically (`read`); a method missing on this Spark version
// gives null. Any other failure is thrown to the Python side, which then reads that
// query through py4j instead.
//
// It is also the session's listener: a SparkListener on one of the listener bus's
// existing queues (`watch`), taking the SQL execution ends of the watched session as
// Spark's ExecutionListenerBus does for QueryExecutionListeners, without the bus's
// "shared" queue, whose thread Spark would start for the first QueryExecutionListener
// and wake for every event of the application (each task's start and end). A callback
// is queued here in microseconds; the extraction worker takes it with `next` and names
// it by its sequence number.
//
// Janino compiles a subset of Java: no generics (raw types and casts), no lambdas.
// The reflection and JSON helpers at the end are public: StreamWatch and QualityRule,
// compiled with this class's loader as their parent, import them.

package definity;

import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerEvent;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.V2WriteCommand;
import org.apache.spark.sql.execution.QueryExecution;
import org.apache.spark.sql.execution.command.DataWritingCommand;
import org.apache.spark.sql.execution.datasources.HadoopFsRelation;
import org.apache.spark.sql.util.QueryExecutionListener;

public class FactGatherer extends SparkListener implements QueryExecutionListener {
    // the command table (commands.spec()): simple class name -> its reads, each
    // {key, kind, path}; and the field of its CatalogTable for a light read
    private final Map commandReads = new HashMap();
    private final Map lightField = new HashMap();
    // the fields that hold the plans a command without children reads ({"query"} for a
    // CTAS; {"source", "target"} for Delta's MERGE)
    private final Map queryFields = new HashMap();
    private final Set rowsOfNestedReads = new HashSet();
    private final Set rowPreserving = new HashSet();
    private int statusScan;
    // FactReader's own regular expressions (passed in, so both sides match alike): a
    // metric of a node's metrics map, and its numOutputRows
    private Pattern metric;
    private Pattern rows;
    private AtomicLong nextId;  // SQLExecution._nextExecutionId, read reflectively
    private boolean nextIdUnknown;
    // the listener's hand-off: {funcName, qe, durationNs or null, error or null}, or a
    // mark {n}; callbacks taken by `next` wait in `pending` until the reader releases them
    private LinkedBlockingQueue callbacks;
    private final Map pending = new HashMap();
    private volatile long taken;  // callbacks taken by `next` (one taker at a time)
    private volatile long dropped;
    // the plan's JSON without Spark's toJSON (PlanJson); toJSON when it cannot
    private final PlanJson planJson = new PlanJson(QueryExecution.class.getClassLoader());
    private long jsonFallbacks;
    private static final int SCHEMAS_KEPT = 256;
    private final Map schemaJson = new HashMap();  // StructType -> its json (schemaJson)
    // on a listener-bus queue (watch): the session whose query ends are taken, and the
    // accessors of Spark's SparkListenerSQLExecutionEnd (fields Spark sets on the event)
    private volatile Object watched;
    private Class endClass;
    private Method endQe;
    private Method endName;
    private Method endFailure;
    private Method endDuration;
    private volatile long unread;  // query ends of the session it could not take (dropped)
    private volatile SparkListener streams;  // StreamWatch (see "Structured Streaming")

    // Configured once, before it listens (one py4j call: facts.gatherer_config).
    public void configure(String commands, String rowsOfNestedReads, String rowPreserving,
                          int statusScan, String metric, String rows, int queueSize) {
        String[] lines = commands.split("\n");
        for (int i = 0; i < lines.length; i++) {
            String[] fields = lines[i].split("\t");
            if (fields.length < 2) {
                continue;
            }
            List reads = new ArrayList();
            for (int k = 3; k < fields.length; k++) {
                reads.add(fields[k].split(":", 3));
            }
            commandReads.put(fields[0], reads);
            if (!fields[1].equals("-")) {
                lightField.put(fields[0], fields[1]);
            }
            queryFields.put(fields[0], fields[2].equals("-") ? new String[0]
                    : fields[2].split(","));
        }
        addAll(this.rowsOfNestedReads, rowsOfNestedReads);
        addAll(this.rowPreserving, rowPreserving);
        this.statusScan = statusScan;
        this.metric = Pattern.compile(metric);
        this.rows = Pattern.compile(rows);
        this.callbacks = new LinkedBlockingQueue(Math.max(1, queueSize));
    }

    // -- the listener (Spark's listener bus thread): queue, never block, never throw ----
    public void onSuccess(String funcName, QueryExecution qe, long durationNs) {
        offer(new Object[] {funcName, qe, new Long(durationNs), null});
    }

    public void onFailure(String funcName, QueryExecution qe, Exception exception) {
        offer(new Object[] {funcName, qe, null, errorText(exception)});
    }

    // -- on a listener-bus queue: every event of the application comes here (task events
    // to SparkListener's no-op methods); the watched session's SQL execution ends with a
    // name are queued like onSuccess / onFailure (ExecutionListenerBus's rule) --------
    public void watch(Object session) throws Exception {
        if (session != null && endClass == null) {
            Class c = Class.forName("org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionEnd",
                                    false, QueryExecution.class.getClassLoader());
            endQe = c.getMethod("qe", new Class[0]);
            endName = c.getMethod("executionName", new Class[0]);
            endFailure = c.getMethod("executionFailure", new Class[0]);
            endDuration = c.getMethod("duration", new Class[0]);
            endClass = c;
        }
        watched = session;
    }

    public void onOtherEvent(SparkListenerEvent event) {
        SparkListener s = streams;
        if (s != null) {
            s.onOtherEvent(event);  // contains its own errors
        }
        Object session = watched;
        if (session == null || !endClass.isInstance(event)) {
            return;
        }
        try {
            QueryExecution qe = (QueryExecution) invoke(endQe, event, new Object[0]);
            if (qe == null || qe.sparkSession() != session) {
                return;
            }
            scala.Option name = (scala.Option) invoke(endName, event, new Object[0]);
            if (name == null || name.isEmpty()) {
                return;
            }
            scala.Option failure = (scala.Option) invoke(endFailure, event, new Object[0]);
            if (failure != null && failure.isDefined()) {
                offer(new Object[] {name.get(), qe, null, errorText((Throwable) failure.get())});
            } else {
                Object ns = invoke(endDuration, event, new Object[0]);
                offer(new Object[] {name.get(), qe, new Long(((Number) ns).longValue()), null});
            }
        } catch (Throwable t) {
            unread++;
        }
    }

    private static String errorText(Throwable exception) {
        try {
            return String.valueOf(exception);
        } catch (Throwable t) {
            return exception.getClass().getName();
        }
    }

    private boolean offer(Object[] callback) {
        try {
            if (callbacks.offer(callback)) {
                return true;
            }
        } catch (Throwable t) {
            // counted below
        }
        dropped++;
        return false;
    }

    // -- the pump (SessionObserver): take callbacks, release them, marks -----------------
    // The next callback, waiting at most timeoutMs: one line of JSON (seq, func,
    // duration_ns, error, qe_id, dropped so far), {"mark": n} for a mark, null if none.
    // `release`: comma-separated sequence numbers the reader is done with.
    public String next(long timeoutMs, String release) throws InterruptedException {
        release(release);
        Object[] c = (Object[]) callbacks.poll(timeoutMs, TimeUnit.MILLISECONDS);
        if (c == null) {
            return null;
        }
        if (c.length == 1) {
            return c[0] instanceof Callable ? streamItem((Callable) c[0])
                    : "{\"mark\":" + c[0] + "}";
        }
        long seq = ++taken;
        synchronized (pending) {
            pending.put(new Long(seq), c[1]);
        }
        StringBuilder out = new StringBuilder(192);
        out.append("{\"seq\":").append(seq);
        field(out, "func", (String) c[0]);
        key(out, "duration_ns");
        out.append(c[2] == null ? "null" : String.valueOf(c[2]));
        field(out, "error", (String) c[3]);
        key(out, "qe_id");
        out.append(((QueryExecution) c[1]).id());
        key(out, "dropped");
        out.append(dropped + unread);
        if (c.length > 4) {
            field(out, "stream_run", (String) c[4]);  // a batch write of that query run
        }
        out.append('}');
        eagerPhases(out, c);
        return out.toString();
    }

    // Both phases of a callback just taken, after its line, for a successful write that is
    // never read light (every command of the table but the outer CTAS ones): "\n" + begin's
    // answer + "\n" + finish's answer (one line of facts, "\n", the plan's JSON); only
    // begin's for a nested write (its plan is read later, when its root has arrived);
    // nothing when the callback is not such a write or a phase fails (the reader then
    // asks for it itself). The begin line carries "eager_ns", the time spent here.
    private void eagerPhases(StringBuilder out, Object[] c) {
        if (c[3] != null || "analyze".equals(c[0])) {
            return;
        }
        long started = System.nanoTime();
        try {
            QueryExecution qe = (QueryExecution) c[1];
            String root = commandName(qe.analyzed());
            if (root == null || lightField.containsKey(root)) {
                return;
            }
            long[] ids = new long[] {-1, -1};
            StringBuilder begun;
            String finished = null;
            synchronized (this) {
                begun = begin(qe, (String) c[0], true, ids);
                if (ids[0] == ids[1]) {  // not nested (or no execution found)
                    finished = finish(qe, true, false);
                }
            }
            begun.setLength(begun.length() - 1);  // reopen the object for eager_ns
            key(begun, "eager_ns");
            begun.append(System.nanoTime() - started).append('}');
            out.append('\n').append(begun);
            if (finished != null) {
                out.append('\n').append(finished);
            }
        } catch (Throwable t) {
            // the reader asks for each phase itself, and falls back to py4j if need be
        }
    }

    // A mark after the callbacks queued so far (SessionObserver.drain waits for it).
    public boolean mark(long n, long timeoutMs) throws InterruptedException {
        return callbacks.offer(new Object[] {new Long(n)}, timeoutMs, TimeUnit.MILLISECONDS);
    }

    public void release(String seqs) {
        if (seqs == null || seqs.length() == 0) {
            return;
        }
        String[] parts = seqs.split(",");
        synchronized (pending) {
            for (int i = 0; i < parts.length; i++) {
                pending.remove(new Long(Long.parseLong(parts[i])));
            }
        }
    }

    // Forget every callback (the observer stopped): queued and taken alike.
    public void clear() {
        callbacks.clear();
        synchronized (pending) {
            pending.clear();
        }
    }

    // callbacks taken by `next` so far (the last sequence number given)
    public long taken() {
        return taken;
    }

    // callbacks lost: the queue was full, or a query end could not be taken (watch)
    public long dropped() {
        return dropped + unread;
    }

    public QueryExecution qe(long seq) {
        synchronized (pending) {
            return (QueryExecution) pending.get(new Long(seq));
        }
    }

    // A QueryExecution, or the sequence number of a callback taken by `next`.
    private QueryExecution resolve(Object q) {
        if (q instanceof QueryExecution) {
            return (QueryExecution) q;
        }
        QueryExecution qe = qe(((Number) q).longValue());
        if (qe == null) {
            throw new IllegalStateException("callback " + q + " was released");
        }
        return qe;
    }

    // -- phase 1 (FactReader.begin): root class, write metrics, execution ids ----------
    // begin, finish and json run on the reader's thread and, for the eager phases of
    // `next`, on the pump's: they hold this object's lock (PlanJson's caches are plain
    // maps); next, mark, release and qe do not (the listener never waits for a read).
    public synchronized String begin(Object q, String funcName, boolean succeeded)
            throws Exception {
        return begin(resolve(q), funcName, succeeded, null).toString();
    }

    // `ids`, if given, receives the execution id and its root's (unchanged: not found).
    private StringBuilder begin(QueryExecution qe, String funcName, boolean succeeded,
                                long[] ids) throws Exception {
        StringBuilder out = new StringBuilder(256);
        out.append("{\"qe_id\":").append(qe.id());
        Object plan = succeeded ? (Object) qe.analyzed() : (Object) qe.logical();
        String root = plan.getClass().getName();
        field(out, "root", root);
        Set accIds = new HashSet();
        if (!succeeded) {
            // a failure: no metrics; its execution ids where the query id gives them
        } else if (commandName(plan) != null) {
            field(out, "command", commandName(plan));
            scans(out, call(qe, "executedPlan"));
            observed(out, qe);
            Object node = unwrapWrite(call(qe, "executedPlan"));
            String metrics = String.valueOf(call(node, "metrics"));
            field(out, "write_metrics", metrics);
            Matcher m = metric.matcher(metrics);
            while (m.find()) {
                accIds.add(m.group(2));
            }
            if (!rows.matcher(metrics).find()) {
                Object children = call(node, "children");
                if (seqSize(children) == 1) {
                    rowsBelow(out, "child_rows", seqApply(children, 0), accIds);
                }
            }
        } else if (rowsOfNestedReads.contains(funcName)) {
            rowsBelow(out, "nested_rows", call(qe, "executedPlan"), accIds);
            observed(out, qe);  // a JDBC or Delta write's rows go through this query
        }
        String queryId = null;
        if (hasMethod(qe, "queryId")) {
            queryId = String.valueOf(call(qe, "queryId"));
            field(out, "query_id", queryId);
        }
        if (succeeded && queryId == null && accIds.isEmpty()) {
            // Spark 3.5, no write metrics (a read, Delta's internal queries): the metric
            // accumulators of any of its nodes find its execution
            anyMetrics(call(qe, "executedPlan"), accIds);
        }
        if (queryId != null || !accIds.isEmpty()) {
            executionIds(out, qe, queryId, accIds, ids);
        }
        return out.append('}');
    }

    private static final int ID_NODES = 4;  // py4j_reads.ID_NODES

    // The metric accumulator ids of the first ID_NODES nodes (pre-order) that have metrics.
    private void anyMetrics(Object plan, Set accIds) throws Exception {
        List stack = new ArrayList();
        stack.add(plan);
        int found = 0;
        for (int seen = 0; !stack.isEmpty() && seen < 64 && found < ID_NODES; seen++) {
            Object node = stack.remove(stack.size() - 1);
            String n = simpleName(node.getClass().getName());
            if (n.equals("AdaptiveSparkPlanExec")) {
                stack.add(call(node, "executedPlan"));
                continue;
            }
            if (n.endsWith("QueryStageExec")) {
                stack.add(call(node, "plan"));
                continue;
            }
            if (n.equals("CommandResultExec")) {
                stack.add(call(node, "commandPhysicalPlan"));
                continue;
            }
            Matcher m = metric.matcher(String.valueOf(call(node, "metrics")));
            boolean any = false;
            while (m.find()) {
                accIds.add(m.group(2));
                any = true;
            }
            if (any) {
                found++;
            }
            Object kids = call(node, "children");
            for (int i = seqSize(kids) - 1; i >= 0; i--) {
                stack.add(seqApply(kids, i));
            }
        }
    }

    // The command table's name of an analyzed root: its simple class name where the table
    // has it; GENERIC for another write (a format's DataWritingCommand or V2 write the
    // table does not know: commands.GENERIC); null for anything else.
    private String commandName(Object plan) {
        String name = simpleName(plan.getClass().getName());
        if (commandReads.containsKey(name)) {
            return name;
        }
        if (plan instanceof DataWritingCommand || plan instanceof V2WriteCommand) {
            return GENERIC;
        }
        return null;
    }

    private static final String GENERIC = "*";  // commands.GENERIC

    private Object unwrapWrite(Object node) throws Exception {
        for (int i = 0; i < 6; i++) {
            String n = simpleName(node.getClass().getName());
            if (n.equals("AdaptiveSparkPlanExec")) {
                node = call(node, "executedPlan");
            } else if (n.endsWith("QueryStageExec")) {
                node = call(node, "plan");
            } else if (n.equals("CommandResultExec")) {
                node = call(node, "commandPhysicalPlan");
            } else {
                break;
            }
        }
        return node;
    }

    // The metrics map of the first node, going down through row-preserving nodes, that
    // counts output rows (FactReader._rows_below), as `key`; nothing if none.
    private void rowsBelow(StringBuilder out, String key, Object start, Set accIds)
            throws Exception {
        String found = rowsBelow(start);
        if (found != null) {
            field(out, key, found);
            Matcher m = rows.matcher(found);
            m.find();
            accIds.add(m.group(1));
        }
    }

    private String rowsBelow(Object node) throws Exception {
        for (int i = 0; i < 12; i++) {
            String n = simpleName(node.getClass().getName());
            String metrics = String.valueOf(call(node, "metrics"));
            if (rows.matcher(metrics).find()) {
                return metrics;
            }
            if (n.equals("AdaptiveSparkPlanExec")) {
                node = call(node, "executedPlan");
            } else if (n.endsWith("QueryStageExec")) {
                node = call(node, "plan");
            } else if (rowPreserving.contains(n)) {
                Object children = call(node, "children");
                if (seqSize(children) != 1) {
                    return null;
                }
                node = seqApply(children, 0);
            } else {
                return null;
            }
        }
        return null;
    }

    // SQL execution id and root execution id (FactReader._execution_ids): Spark 4 by the
    // query id, Spark 3.5 by the write node's metric accumulator ids.
    private void executionIds(StringBuilder out, QueryExecution qe, String queryId,
                              Set accIds, long[] ids) throws Exception {
        if (!findExecution(out, qe, queryId, accIds, ids)) {
            // the status store learns of an execution on another listener-bus queue than
            // this callback's: let it catch up (STATUS_WAIT_MS at most), then look again
            try {
                Object bus = call(call(qe.sparkSession(), "sparkContext"), "listenerBus");
                invoke(bus.getClass().getMethod("waitUntilEmpty", new Class[] {long.class}),
                       bus, new Object[] {new Long(STATUS_WAIT_MS)});
            } catch (Exception e) {
                // still busy after the wait (Spark throws a TimeoutException): look anyway
            }
            findExecution(out, qe, queryId, accIds, ids);
        }
    }

    private static final long STATUS_WAIT_MS = 200;  // facts.py: _STATUS_WAIT_MS

    private boolean findExecution(StringBuilder out, QueryExecution qe, String queryId,
                                  Set accIds, long[] ids) throws Exception {
        Object store = call(call(qe.sparkSession(), "sharedState"), "statusStore");
        Method one = require(store.getClass(), "execution", long.class);
        AtomicLong next = nextExecutionId();
        List listed = next == null ? newestExecutions(store) : null;
        long last = next == null ? listed.size() - 1 : next.get() - 1;
        // newest first; the query's own is usually the first one looked at
        for (long i = last; i >= 0 && i > last - statusScan; i--) {
            Object x;
            if (listed != null) {
                x = listed.get((int) (last - i));
            } else {  // a key lookup below Spark's next execution id
                Object found = invoke(one, store, new Object[] {new Long(i)});
                if (!((Boolean) call(found, "isDefined")).booleanValue()) {
                    continue;
                }
                x = call(found, "get");
            }
            if (queryId != null) {
                if (!queryId.equals(String.valueOf(call(x, "queryId")))) {
                    continue;
                }
            } else if (!sharesAccumulator(call(x, "metrics"), accIds)) {
                continue;
            }
            long id = ((Number) call(x, "executionId")).longValue();
            long rootId = ((Number) call(x, "rootExecutionId")).longValue();
            if (ids != null) {
                ids[0] = id;
                ids[1] = rootId;
            }
            key(out, "execution_id");
            out.append(id);
            key(out, "root_execution_id");
            out.append(rootId);
            field(out, "description", String.valueOf(call(x, "description")));
            run(out, qe, one, store, id, x);
            if (rootId != id) {
                Object root = invoke(one, store, new Object[] {new Long(rootId)});
                if (((Boolean) call(root, "isDefined")).booleanValue()) {
                    field(out, "root_description",
                          String.valueOf(call(call(root, "get"), "description")));
                }
            }
            return true;
        }
        return false;
    }

    // -- how an execution ran (the "run" facts): from Spark's own status stores, read once
    // the SQL store has the execution's end (its jobs' and stages' events came before that
    // end on the bus, and the same queue keeps both stores): its jobs, its stages' task
    // metrics summed, the most skewed stage. Nothing is listened to per task.
    private static final int SKEW_MIN_TASKS = 5;  // fewer tasks: no meaningful skew
    private static final String[][] STAGE_SUMS = {
        {"executorRunTime", "executor_run_time_ms"}, {"jvmGcTime", "jvm_gc_time_ms"},
        {"memoryBytesSpilled", "memory_spill_bytes"}, {"diskBytesSpilled", "disk_spill_bytes"},
        {"shuffleReadBytes", "shuffle_read_bytes"}, {"shuffleReadRecords", "shuffle_read_records"},
        {"shuffleWriteBytes", "shuffle_write_bytes"},
        {"shuffleWriteRecords", "shuffle_write_records"},
    };

    private void run(StringBuilder out, QueryExecution qe, Method one, Object sqlStore, long id,
                     Object x) {
        try {
            // the status store's queue may still be on this execution's events: wait for
            // its end there (RUN_WAIT_MS at most; the reading thread waits, not the job)
            for (long waited = 0; !complete(x); waited += RUN_POLL_MS) {
                if (waited >= RUN_WAIT_MS) {
                    return;  // not complete yet: no run facts rather than partial sums
                }
                Thread.sleep(RUN_POLL_MS);
                Object again = invoke(one, sqlStore, new Object[] {new Long(id)});
                if (!((Boolean) call(again, "isDefined")).booleanValue()) {
                    return;
                }
                x = call(again, "get");
            }
            Object appStore = call(call(qe.sparkSession(), "sparkContext"), "statusStore");
            Method stage = require(appStore.getClass(), "lastStageAttempt", int.class);
            TaskOrder order = new TaskOrder(appStore);
            long[] sums = new long[STAGE_SUMS.length];
            long stages = 0, tasks = 0, failed = 0, cpuNs = 0, peak = 0, skewTasks = 0;
            long skewStage = -1;
            double skew = 0;
            Object it = call(call(x, "stages"), "iterator");
            while (((Boolean) call(it, "hasNext")).booleanValue()) {
                int stageId = ((Number) call(it, "next")).intValue();
                Object sd;
                try {
                    sd = invoke(stage, appStore, new Object[] {new Integer(stageId)});
                } catch (Exception e) {
                    continue;  // a stage the store no longer keeps (spark.ui.retainedStages)
                }
                if ("SKIPPED".equals(String.valueOf(call(sd, "status")))) {
                    continue;  // its output was there already (a reused shuffle): not run
                }
                stages++;
                int n = ((Number) call(sd, "numTasks")).intValue();
                tasks += n;
                failed += ((Number) call(sd, "numFailedTasks")).longValue();
                cpuNs += ((Number) call(sd, "executorCpuTime")).longValue();
                for (int k = 0; k < STAGE_SUMS.length; k++) {
                    sums[k] += ((Number) call(sd, STAGE_SUMS[k][0])).longValue();
                }
                int done = ((Number) call(sd, "numCompleteTasks")).intValue();
                if (done == 0) {
                    continue;
                }
                // the stage's own peakExecutionMemory is its tasks' peaks summed: the
                // largest task's is the first of its successful tasks by peak memory
                Object attempt = call(sd, "attemptId");
                Object top = order.nth(stageId, attempt, order.peakIndex, false, 0);
                if (top != null) {
                    peak = Math.max(peak, ((Number) call(optionValue(call(top, "taskMetrics")),
                            "peakExecutionMemory")).longValue());
                }
                if (done >= SKEW_MIN_TASKS) {
                    double median = order.duration(stageId, attempt, true,
                                                   Math.min(done / 2, done - 1));
                    double max = order.duration(stageId, attempt, false, 0);
                    if (median > 0 && max / median > skew) {
                        skew = max / median;
                        skewStage = stageId;
                        skewTasks = done;
                    }
                }
            }
            key(out, "run");
            out.append("{\"jobs\":").append(((Number) call(call(x, "jobs"), "size")).longValue());
            out.append(",\"stages\":").append(stages);
            out.append(",\"tasks\":").append(tasks);
            out.append(",\"failed_tasks\":").append(failed);
            out.append(",\"executor_cpu_time_ms\":").append(cpuNs / 1000000L);
            out.append(",\"peak_execution_memory_bytes\":").append(peak);
            for (int k = 0; k < STAGE_SUMS.length; k++) {
                out.append(",\"").append(STAGE_SUMS[k][1]).append("\":").append(sums[k]);
            }
            if (skewStage >= 0) {
                out.append(",\"skew_ratio\":").append(Math.round(skew * 1000) / 1000.0);
                out.append(",\"skew_stage_id\":").append(skewStage);
                out.append(",\"skew_stage_tasks\":").append(skewTasks);
            }
            out.append('}');
        } catch (Exception e) {
            // a status store of another shape: no run facts for this execution
        }
    }

    // A stage attempt's successful tasks in the order of one of the status store's task
    // indexes, the n-th of them (AppStatusStore.taskList, as the UI's task table asks):
    // the store sorts the stage's tasks once per call, where taskSummary would sort them
    // once for each of its ~35 metrics (100,000 tasks: seconds of the reading thread).
    private static final class TaskOrder {
        final Object store;
        final Method list;
        final List successful = new ArrayList();
        final Object peakIndex;
        final Object durationIndex;

        TaskOrder(Object store) throws Exception {
            this.store = store;
            list = store.getClass().getMethod("taskList", new Class[] {int.class, int.class,
                    int.class, int.class, Class.forName("scala.Option"), boolean.class,
                    List.class});
            Class status = Class.forName("org.apache.spark.status.api.v1.TaskStatus");
            successful.add(status.getMethod("valueOf", new Class[] {String.class})
                    .invoke(null, new Object[] {"SUCCESS"}));
            Class names = Class.forName("org.apache.spark.status.TaskIndexNames");
            Method some = Class.forName("scala.Option").getMethod("apply",
                    new Class[] {Object.class});
            peakIndex = some.invoke(null, new Object[] {
                    names.getMethod("PEAK_MEM", new Class[0]).invoke(null, new Object[0])});
            durationIndex = some.invoke(null, new Object[] {
                    names.getMethod("DURATION", new Class[0]).invoke(null, new Object[0])});
        }

        Object nth(int stageId, Object attempt, Object index, boolean ascending, int n)
                throws Exception {
            Object seq = invoke(list, store, new Object[] {new Integer(stageId), attempt,
                    new Integer(n), new Integer(1), index, Boolean.valueOf(ascending),
                    successful});
            return seqSize(seq) == 0 ? null : seqApply(seq, 0);
        }

        // a task's duration: from its launch to its end, ms (-1: no such task)
        double duration(int stageId, Object attempt, boolean ascending, int n)
                throws Exception {
            Object task = nth(stageId, attempt, durationIndex, ascending, n);
            Object d = task == null ? null : optionValue(call(task, "duration"));
            return d == null ? -1 : ((Number) d).doubleValue();
        }
    }

    // The application so far (task-level metrics), from Spark's status store: executors
    // added (not the driver) and removed, their cores' seconds alive and the seconds of
    // task time they ran (local mode: the driver is the executor).
    public String appSummary(Object session) throws Exception {
        Object appStore = call(call(session, "sparkContext"), "statusStore");
        Method list = appStore.getClass().getMethod("executorList", new Class[] {boolean.class});
        Object executors = invoke(list, appStore, new Object[] {Boolean.FALSE});
        long now = System.currentTimeMillis();
        long added = 0, removed = 0;
        double coreSeconds = 0, taskSeconds = 0;
        int n = seqSize(executors);
        for (int i = 0; i < n; i++) {
            Object e = seqApply(executors, i);
            boolean driver = "driver".equals(String.valueOf(call(e, "id")));
            Object gone = optionValue(call(e, "removeTime"));
            if (!driver) {
                added++;
                if (gone != null) {
                    removed++;
                }
            }
            int cores = ((Number) call(e, "totalCores")).intValue();
            long from = ((java.util.Date) call(e, "addTime")).getTime();
            long to = gone != null ? ((java.util.Date) gone).getTime() : now;
            coreSeconds += cores * Math.max(0, to - from) / 1000.0;
            taskSeconds += ((Number) call(e, "totalDuration")).longValue() / 1000.0;
        }
        StringBuilder out = new StringBuilder(160);
        out.append("{\"executors_added\":").append(added);
        out.append(",\"executors_removed\":").append(removed);
        out.append(",\"executor_core_seconds\":").append(Math.round(coreSeconds * 1000) / 1000.0);
        out.append(",\"task_time_seconds\":").append(Math.round(taskSeconds * 1000) / 1000.0);
        return out.append('}').toString();  // utilization: metric_text.app_metrics
    }

    private static final long RUN_WAIT_MS = 3000;
    private static final long RUN_POLL_MS = 2;  // the store is usually a few ms behind

    private static boolean complete(Object execution) throws Exception {
        return ((Boolean) call(call(execution, "completionTime"), "isDefined")).booleanValue();
    }

    // -- data quality (QualityRule.java): the measures the rule added to the write's
    // query, read back from Spark's observed metrics, each as a number (dates and
    // timestamps as Unix seconds, booleans 0/1; a NaN or infinity as null)
    private volatile String observedName;  // the rule's CollectMetrics name; null: off

    public void observe(String name) {
        observedName = name;
    }

    private void observed(StringBuilder out, QueryExecution qe) throws Exception {
        String name = observedName;
        if (name == null) {
            return;
        }
        Object row = optionValue(call(call(qe, "observedMetrics"), "get", name));
        if (!(row instanceof org.apache.spark.sql.Row)) {
            return;
        }
        org.apache.spark.sql.Row r = (org.apache.spark.sql.Row) row;
        String[] names = r.schema().fieldNames();
        key(out, "observed");
        out.append('{');
        for (int i = 0; i < names.length; i++) {
            key(out, names[i]);
            out.append(number(r.get(i)));
        }
        out.append('}');
    }

    private static String number(Object v) {
        double d;
        if (v instanceof Boolean) {
            return ((Boolean) v).booleanValue() ? "1" : "0";
        } else if (v instanceof java.math.BigDecimal) {
            d = ((java.math.BigDecimal) v).doubleValue();
        } else if (v instanceof Number) {
            d = ((Number) v).doubleValue();
            if (v instanceof Long || v instanceof Integer || v instanceof Short
                    || v instanceof Byte) {
                return String.valueOf(v);
            }
        } else if (v instanceof java.sql.Date) {
            return String.valueOf(((java.sql.Date) v).toLocalDate().toEpochDay() * 86400L);
        } else if (v instanceof java.time.LocalDate) {
            return String.valueOf(((java.time.LocalDate) v).toEpochDay() * 86400L);
        } else if (v instanceof java.sql.Timestamp) {
            java.sql.Timestamp t = (java.sql.Timestamp) v;
            d = Math.floor(t.getTime() / 1000.0) + t.getNanos() / 1e9;
        } else if (v instanceof java.time.Instant) {
            java.time.Instant t = (java.time.Instant) v;
            d = t.getEpochSecond() + t.getNano() / 1e9;
        } else if (v instanceof java.time.LocalDateTime) {
            java.time.LocalDateTime t = (java.time.LocalDateTime) v;
            d = t.toEpochSecond(java.time.ZoneOffset.UTC) + t.getNano() / 1e9;
        } else {
            return "null";
        }
        return Double.isNaN(d) || Double.isInfinite(d) ? "null" : String.valueOf(d);
    }

    // -- what each scan of the executed plan read (the "scans" facts): the scan nodes
    // under AQE's final plan, query stages and subqueries; a reused exchange or subquery
    // is not walked again (it did not read again); two scans of one table are two.
    private void scans(StringBuilder out, Object plan) throws Exception {
        key(out, "scans");
        out.append('[');
        List stack = new ArrayList();
        stack.add(plan);
        Map walked = new java.util.IdentityHashMap();  // a node reached twice read once
        while (!stack.isEmpty() && walked.size() < 10000) {
            Object node = stack.remove(stack.size() - 1);
            if (walked.put(node, Boolean.TRUE) != null) {
                continue;
            }
            String n = simpleName(node.getClass().getName());
            if (n.equals("ReusedExchangeExec") || n.equals("ReusedSubqueryExec")) {
                continue;
            }
            if (n.equals("AdaptiveSparkPlanExec")) {
                stack.add(call(node, "executedPlan"));
                continue;
            }
            if (n.endsWith("QueryStageExec")) {
                stack.add(call(node, "plan"));
                continue;
            }
            if (n.endsWith("ScanExec") && !n.equals("InMemoryTableScanExec")
                    && !n.equals("LocalTableScanExec")) {
                scan(out, node, n);
            }
            Object kids = call(node, "children");
            for (int i = seqSize(kids) - 1; i >= 0; i--) {
                stack.add(seqApply(kids, i));
            }
            if (hasMethod(node, "subqueries")) {
                Object subs = call(node, "subqueries");
                for (int i = seqSize(subs) - 1; i >= 0; i--) {
                    stack.add(seqApply(subs, i));
                }
            }
        }
        out.append(']');
    }

    private static void scan(StringBuilder out, Object node, String n) throws Exception {
        out.append(out.charAt(out.length() - 1) == '[' ? "{" : ",{");
        field(out, "cls", node.getClass().getName());
        Object ident = optionValue(path(node, "tableIdentifier"));
        if (ident == null && n.equals("HiveTableScanExec")) {
            ident = path(node, "relation.tableMeta.identifier");
        }
        if (ident != null) {
            key(out, "table");
            out.append('{');
            field(out, "table", String.valueOf(call(ident, "table")));
            String[] parts = {"database", "catalog"};
            for (int i = 0; i < parts.length; i++) {
                Object value = hasMethod(ident, parts[i]) ? optionValue(call(ident, parts[i]))
                        : null;
                if (value != null) {
                    field(out, parts[i], String.valueOf(value));
                }
            }
            out.append('}');
        }
        Object paths = path(node, "relation.location.rootPaths");
        if (paths != null) {
            field(out, "paths", String.valueOf(call(paths, "mkString", "\n")));
        }
        Object url = path(node, "relation.jdbcOptions.url");
        if (url != null) {
            field(out, "jdbc_url", String.valueOf(url));
            field(out, "jdbc_table", String.valueOf(path(node, "relation.jdbcOptions.tableOrQuery")));
        }
        Object v2 = path(node, "table.name");
        if (v2 != null) {
            field(out, "v2_name", String.valueOf(v2));
        }
        field(out, "metrics", String.valueOf(call(node, "metrics")));
        out.append('}');
    }

    // Where Spark's next execution id cannot be read: the newest `statusScan` executions
    // of the SQL status store, newest first, through executionsList (which sorts the whole
    // store on every call).
    private List newestExecutions(Object store) throws Exception {
        List out = new ArrayList();
        long count = ((Number) call(store, "executionsCount")).longValue();
        int start = (int) Math.max(0, count - statusScan);
        Method list = store.getClass().getMethod("executionsList",
                new Class[] {int.class, int.class});
        Object executions = invoke(list, store,
                new Object[] {new Integer(start), new Integer((int) (count - start))});
        for (int i = seqSize(executions) - 1; i >= 0; i--) {
            out.add(seqApply(executions, i));
        }
        return out;
    }

    private AtomicLong nextExecutionId() {
        if (nextId == null && !nextIdUnknown) {
            try {
                Class c = Class.forName("org.apache.spark.sql.execution.SQLExecution$", true,
                        QueryExecution.class.getClassLoader());
                Field f = c.getDeclaredField("_nextExecutionId");
                f.setAccessible(true);
                nextId = (AtomicLong) f.get(c.getField("MODULE$").get(null));
            } catch (Exception e) {
                nextIdUnknown = true;
            }
        }
        return nextId;
    }

    // A plan metric of the execution (SQLPlanMetric.accumulatorId) is one of `accIds`.
    private static boolean sharesAccumulator(Object planMetrics, Set accIds) throws Exception {
        Object it = call(planMetrics, "iterator");
        while (((Boolean) call(it, "hasNext")).booleanValue()) {
            Object id = call(call(it, "next"), "accumulatorId");
            if (accIds.contains(String.valueOf(id))) {
                return true;
            }
        }
        return false;
    }

    // -- phase 2 (FactReader.finish): the plan, SQL text, command and leaves ------------
    // Answer: one line of JSON (the facts), a newline, then the plan's toJSON. `light`:
    // an outer CTAS / saveAsTable command whose query was read with its nested write:
    // instead of the plan's JSON, its command node's (FactReader._light_head).
    public synchronized String finish(Object q, boolean succeeded, boolean light)
            throws Exception {
        QueryExecution qe = resolve(q);
        Object plan = succeeded ? (Object) qe.analyzed() : (Object) qe.logical();
        String root = commandName(plan);
        String planJson = light ? lightHead(plan, (String) lightField.get(root)) : json(plan);
        StringBuilder out = new StringBuilder(512);
        out.append('{');
        Object query = hasMethod(plan, "query") ? call(plan, "query") : null;
        if (!(query instanceof LogicalPlan)) {
            query = null;  // Delta's CreateDeltaTableCommand: an Option
        }
        if (succeeded) {
            field(out, "sql", String.valueOf(call(call(plan, "origin"), "sqlText")));
            if (query != null) {
                field(out, "query_sql", String.valueOf(call(call(query, "origin"), "sqlText")));
            }
        }
        List reads = root == null ? null : (List) commandReads.get(root);
        if (reads != null) {
            key(out, "command");
            out.append('{');
            for (int i = 0; i < reads.size(); i++) {
                String[] r = (String[]) reads.get(i);
                read(out, r[0], r[1], path(plan, r[2]), plan, qe);
            }
            out.append('}');
        }
        if (succeeded && !light) {
            leaves(out, plan);
        }
        return out.append("}\n").append(planJson).toString();
    }

    // One read of the command table (commands.py: Read): `value` rendered by its kind.
    private void read(StringBuilder out, String key, String kind, Object value, Object node,
                      QueryExecution qe) throws Exception {
        key(out, key);
        if (value != null && (kind.equals("option") || kind.equals("qualified"))) {
            value = optionValue(value);
        }
        if (value == null) {
            out.append("null");
        } else if (kind.equals("str") || kind.equals("option")) {
            quote(out, String.valueOf(value));
        } else if (kind.equals("class")) {
            quote(out, value.getClass().getName());
        } else if (kind.equals("schema")) {
            out.append(schemaJson(value));
        } else if (kind.equals("strings")) {
            out.append('[');
            Object[] items = value instanceof Object[] ? (Object[]) value : null;
            int n = items != null ? items.length : seqSize(value);
            for (int i = 0; i < n; i++) {
                if (i > 0) {
                    out.append(',');
                }
                quote(out, String.valueOf(items != null ? items[i] : seqApply(value, i)));
            }
            out.append(']');
        } else if (kind.equals("qualified")) {
            quote(out, qualified(String.valueOf(value), node, qe));
        } else {
            throw new IllegalArgumentException("unknown read kind " + kind);
        }
    }

    // The value of an accessor path: public methods called in turn, each without arguments
    // or with one string argument ("options.get(url)"); null where one is missing on this
    // Spark version, returns null, or throws (Option.get of a None).
    public static Object path(Object node, String path) {
        Object o = node;
        String[] steps = STEP.split(path);
        for (int i = 0; i < steps.length && o != null; i++) {
            String step = steps[i];
            int open = step.indexOf('(');
            try {
                if (open < 0) {
                    Method m = method(o.getClass(), step, null);
                    o = m == null ? null : invoke(m, o, new Object[0]);
                } else {
                    Method m = method(o.getClass(), step.substring(0, open), String.class);
                    o = m == null ? null : invoke(m, o,
                            new Object[] {step.substring(open + 1, step.length() - 1)});
                }
            } catch (Exception e) {
                return null;
            }
        }
        return o;
    }

    // a dot outside parentheses: "options.get(kafka.bootstrap.servers)" is two steps
    private static final Pattern STEP = Pattern.compile("\\.(?![^(]*\\))");

    // A scala.Option's value (null for None); anything else as it is.
    public static Object optionValue(Object value) {
        if (!(value instanceof scala.Option)) {
            return value;
        }
        scala.Option o = (scala.Option) value;
        return o.isDefined() ? o.get() : null;
    }

    // A path written without a scheme, qualified as Spark does: the local file system for
    // INSERT OVERWRITE LOCAL DIRECTORY (the command's isLocal), else the path's own.
    private static String qualified(String path, Object node, QueryExecution qe)
            throws Exception {
        int slash = path.indexOf('/');
        if ((slash < 0 ? path : path.substring(0, slash)).indexOf(':') >= 0) {
            return path;
        }
        boolean local = hasMethod(node, "isLocal")
                && ((Boolean) call(node, "isLocal")).booleanValue();
        org.apache.hadoop.conf.Configuration conf =
                qe.sparkSession().sparkContext().hadoopConfiguration();
        org.apache.hadoop.fs.Path p = new org.apache.hadoop.fs.Path(path);
        org.apache.hadoop.fs.FileSystem fs = local
                ? (org.apache.hadoop.fs.FileSystem) org.apache.hadoop.fs.FileSystem.getLocal(conf)
                : p.getFileSystem(conf);
        return fs.makeQualified(p).toString();
    }

    // StructType.json (json4s) once per schema value: a StructType is a new instance in
    // every query, equal (field by field) to the last one when a job writes the same shape
    // again. At most SCHEMAS_KEPT kept (under this object's lock).
    private String schemaJson(Object schema) throws Exception {
        String json = (String) schemaJson.get(schema);
        if (json == null) {
            json = (String) call(schema, "json");
            if (schemaJson.size() >= SCHEMAS_KEPT) {
                schemaJson.clear();
            }
            schemaJson.put(schema, json);
        }
        return json;
    }

    private static String lightHead(Object cmd, String field) throws Exception {
        Object table = call(cmd, field);
        Object ident = call(table, "identifier");
        StringBuilder out = new StringBuilder(512);
        out.append("[{");
        field(out, "class", cmd.getClass().getName());
        key(out, "num-children");
        out.append('0');
        key(out, field);
        out.append('{');
        key(out, "identifier");
        out.append('{');
        field(out, "table", String.valueOf(call(ident, "table")));
        String[] parts = {"database", "catalog"};
        for (int i = 0; i < parts.length; i++) {
            if (hasMethod(ident, parts[i])) {
                Object value = call(ident, parts[i]);
                if (((Boolean) call(value, "isDefined")).booleanValue()) {
                    field(out, parts[i], String.valueOf(call(value, "get")));
                }
            }
        }
        out.append('}');
        key(out, "schema");
        out.append((String) call(call(table, "schema"), "json"));
        key(out, "partitionColumnNames");
        out.append('[');
        Object names = call(table, "partitionColumnNames");
        int n = seqSize(names);
        for (int i = 0; i < n; i++) {
            if (i > 0) {
                out.append(',');
            }
            quote(out, String.valueOf(seqApply(names, i)));
        }
        out.append("]}");
        key(out, "query");
        out.append("[]");
        key(out, "light");
        out.append("true}]");
        return out.toString();
    }

    // The leaves of the plan (or of a leaf command's query) and of its subqueries, in
    // collectLeaves() order: the main tree's leaves are in the plan's JSON already; a
    // subquery's leaf comes with its own JSON. Each with what naming needs that the JSON
    // lacks (facts.py: _live_leaf).
    private void leaves(StringBuilder out, Object plan) throws Exception {
        List roots = new ArrayList();
        String name = commandName(plan);
        String[] fields = name == null ? null : (String[]) queryFields.get(name);
        if (fields != null && seqSize(call(plan, "children")) == 0) {
            for (int i = 0; i < fields.length; i++) {
                Object field = hasMethod(plan, fields[i]) ? call(plan, fields[i]) : null;
                if (field instanceof LogicalPlan) {
                    roots.add(field);
                }
            }
        } else {
            roots.add(plan);
        }
        key(out, "leaves");
        out.append('[');
        for (int r = 0; r < roots.size(); r++) {
            Object root = roots.get(r);
            if (r > 0) {
                out.append(',');
            }
            // the first root's leaves are in the plan's JSON; another's come with their own
            group(out, call(root, "collectLeaves"), r > 0);
            Object subs = call(root, "subqueriesAll");
            int n = seqSize(subs);
            for (int i = 0; i < n; i++) {
                out.append(',');
                group(out, call(seqApply(subs, i), "collectLeaves"), true);
            }
        }
        out.append(']');
    }

    private void group(StringBuilder out, Object leaves, boolean withJson) throws Exception {
        out.append('[');
        int n = seqSize(leaves);
        for (int i = 0; i < n; i++) {
            Object leaf = seqApply(leaves, i);
            out.append(i == 0 ? "{" : ",{");
            field(out, "cls", leaf.getClass().getName());
            String name = simpleName(leaf.getClass().getName());
            if (name.equals("LogicalRelation")) {
                Object rel = call(leaf, "relation");
                String relCls = rel.getClass().getName();
                field(out, "relation_cls", relCls);
                if (rel instanceof HadoopFsRelation) {  // Delta's is an anonymous subclass
                    field(out, "paths", rootPaths(rel));
                } else if (simpleName(relCls).equals("JDBCRelation")) {
                    Object opts = call(rel, "jdbcOptions");
                    field(out, "jdbc_url", String.valueOf(call(opts, "url")));
                    field(out, "jdbc_table", String.valueOf(call(opts, "tableOrQuery")));
                } else if (simpleName(relCls).equals("KafkaRelation")) {
                    kafka(out, rel);
                }
            } else if (name.equals("DataSourceV2Relation")
                    || name.equals("DataSourceV2ScanRelation")) {
                v2(out, name.equals("DataSourceV2ScanRelation") ? call(leaf, "relation") : leaf);
            }
            if (withJson) {
                field(out, "json", json(leaf));
            }
            out.append('}');
        }
        out.append(']');
    }

    // A file relation's root paths. A file sink's directory is read through its
    // _spark_metadata log (MetadataLogFileIndex), whose root is the path as the reader
    // gave it: qualified here as the sink's is (py4j_reads.root_paths).
    private static String rootPaths(Object rel) throws Exception {
        Object location = call(rel, "location");
        Object paths = call(location, "rootPaths");
        if (!simpleName(location.getClass().getName()).equals("MetadataLogFileIndex")) {
            return String.valueOf(call(paths, "mkString", "\n"));
        }
        org.apache.hadoop.conf.Configuration conf = (org.apache.hadoop.conf.Configuration)
                call(call(call(rel, "sparkSession"), "sessionState"), "newHadoopConf");
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < seqSize(paths); i++) {
            org.apache.hadoop.fs.Path p = (org.apache.hadoop.fs.Path) seqApply(paths, i);
            out.append(i == 0 ? "" : "\n").append(p.getFileSystem(conf).makeQualified(p));
        }
        return out.toString();
    }

    // A Kafka batch read's servers and topics (py4j_reads.kafka_info): never another of
    // its options, which may hold credentials.
    private static final String[][] KAFKA = {{"kafka.bootstrap.servers", "kafka_servers"},
        {"subscribe", "kafka_topics"}, {"assign", "kafka_assign"},
        {"subscribepattern", "kafka_pattern"}};

    private static void kafka(StringBuilder out, Object rel) throws Exception {
        Field f = rel.getClass().getDeclaredField("sourceOptions");
        f.setAccessible(true);
        Object options = f.get(rel);
        for (int i = 0; i < KAFKA.length; i++) {
            Object v = optionValue(call(options, "get", KAFKA[i][0]));
            if (v != null) {
                field(out, KAFKA[i][1], String.valueOf(v));
            }
        }
    }

    // A plan's toJSON (PlanJson's, else Spark's own).
    public synchronized String json(Object plan) throws Exception {
        if (planJson.enabled()) {
            try {
                return planJson.write(plan);
            } catch (Exception e) {
                jsonFallbacks++;
            }
        }
        return (String) call(plan, "toJSON");
    }

    // Plans PlanJson could not write (Spark's toJSON wrote them).
    public long jsonFallbacks() {
        return jsonFallbacks;
    }

    public boolean fastJson() {
        return planJson.enabled();
    }

    // The classes whose constructor parameter names PlanJson asked Scala reflection for.
    public String jsonReflected() {
        return String.valueOf(planJson.reflected);
    }

    private static void v2(StringBuilder out, Object rel) throws Exception {
        Object catalog = call(rel, "catalog");
        if (((Boolean) call(catalog, "isDefined")).booleanValue()) {
            field(out, "catalog", String.valueOf(call(call(catalog, "get"), "name")));
        }
        Object ident = call(rel, "identifier");
        Object table = call(rel, "table");
        if (((Boolean) call(ident, "isDefined")).booleanValue()) {
            identifier(out, call(ident, "get"));
        } else {
            field(out, "name", String.valueOf(call(table, "name")));
        }
        field(out, "table_cls", table.getClass().getName());
    }

    // A catalog Identifier's namespace and name
    public static void identifier(StringBuilder out, Object ident) throws Exception {
        String[] namespace = (String[]) call(ident, "namespace");
        key(out, "namespace");
        out.append('[');
        for (int k = 0; k < namespace.length; k++) {
            if (k > 0) {
                out.append(',');
            }
            quote(out, namespace[k]);
        }
        out.append(']');
        field(out, "name", String.valueOf(call(ident, "name")));
    }

    // -- Structured Streaming (StreamWatch.java): its events come through onOtherEvent;
    // what it hands the worker goes through this object's queue, in the bus's order ------
    public void streams(SparkListener watch) {
        streams = watch;
    }

    // A StreamWatch item (its `call` answers the line `next` gives), or false (counted
    // as dropped) when the queue is full.
    public boolean offerItem(Callable item) {
        return offer(new Object[] {item});
    }

    // A write of a streaming query's micro-batch (foreachBatch), taken like a callback of
    // the watched session, with the id of the query run it belongs to.
    public boolean offerStreamWrite(String funcName, QueryExecution qe, long durationNs,
                                    String runId) {
        return offer(new Object[] {funcName, qe, new Long(durationNs), null, runId});
    }

    private static String streamItem(Callable item) {
        try {
            return String.valueOf(item.call());
        } catch (Throwable t) {
            StringBuilder out = new StringBuilder(128);
            out.append('{');
            field(out, "stream_error", t.getClass().getName() + ": " + t.getMessage());
            return out.append('}').toString();
        }
    }

    // The leaves of any plan, as `finish` answers them ({"leaves": [...]}): a streaming
    // query's plan (StreamWatch), whose sources FactGatherer does not name itself.
    public synchronized String leavesOf(Object plan) throws Exception {
        StringBuilder out = new StringBuilder(256);
        out.append('{');
        leaves(out, plan);
        return out.append('}').toString();
    }

    // -- helpers ------------------------------------------------------------------------
    // Public methods by class and name, looked up once. Class.getMethod walks the class's
    // whole hierarchy on every call (a plan node's Scala traits: most of the gatherer's
    // time per write in a young JVM), and a method a class lacks costs an exception.
    // NO_METHOD marks one. The classes are Spark's (plan nodes, collections, the status
    // store's records); past METHOD_CACHE_CLASSES the cache starts over.
    private static final Object NO_METHOD = new Object();
    private static final int METHOD_CACHE_CLASSES = 4096;
    private static final ConcurrentHashMap METHODS = new ConcurrentHashMap();

    // `param`: the one parameter's type, or null for none
    public static Method method(Class c, String name, Class param) {
        Map byName = (Map) METHODS.get(c);
        if (byName == null) {
            if (METHODS.size() >= METHOD_CACHE_CLASSES) {
                METHODS.clear();
            }
            byName = new ConcurrentHashMap();
            Object had = METHODS.putIfAbsent(c, byName);
            if (had != null) {
                byName = (Map) had;
            }
        }
        String key = param == null ? name : name + "(" + param.getName();
        Object m = byName.get(key);
        if (m == null) {
            try {
                m = c.getMethod(name, param == null ? new Class[0] : new Class[] {param});
            } catch (NoSuchMethodException e) {
                m = param == null ? NO_METHOD : oneParameter(c, name, param);
            }
            byName.put(key, m);
        }
        return m == NO_METHOD ? null : (Method) m;
    }

    // A public method of that name with one parameter that takes a `param` (a Scala Map's
    // get(key) is get(Object) once erased), else NO_METHOD.
    private static Object oneParameter(Class c, String name, Class param) {
        Method[] all = c.getMethods();
        for (int i = 0; i < all.length; i++) {
            Class[] types = all[i].getParameterTypes();
            if (all[i].getName().equals(name) && types.length == 1
                    && types[0].isAssignableFrom(param)) {
                return all[i];
            }
        }
        return NO_METHOD;
    }

    private static Method require(Class c, String name, Class param)
            throws NoSuchMethodException {
        Method m = method(c, name, param);
        if (m == null) {
            throw new NoSuchMethodException(c.getName() + "." + name);
        }
        return m;
    }

    public static boolean hasMethod(Object o, String name) {
        return method(o.getClass(), name, null) != null;
    }

    public static Object call(Object o, String name) throws Exception {
        return invoke(require(o.getClass(), name, null), o, new Object[0]);
    }

    private static Object call(Object o, String name, String arg) throws Exception {
        return invoke(require(o.getClass(), name, String.class), o, new Object[] {arg});
    }

    // a public method of a class that is not public itself needs setAccessible
    public static Object invoke(Method m, Object o, Object[] args) throws Exception {
        try {
            return m.invoke(o, args);
        } catch (IllegalAccessException e) {
            m.setAccessible(true);
            return m.invoke(o, args);
        }
    }

    public static int seqSize(Object seq) throws Exception {
        return ((Number) call(seq, "size")).intValue();
    }

    public static Object seqApply(Object seq, int i) throws Exception {
        return invoke(require(seq.getClass(), "apply", int.class), seq,
                      new Object[] {new Integer(i)});
    }

    public static String simpleName(String cls) {
        int dot = cls.lastIndexOf('.');
        String name = dot < 0 ? cls : cls.substring(dot + 1);
        return name.endsWith("$") ? name.substring(0, name.length() - 1) : name;
    }

    private static void addAll(Set set, String csv) {
        String[] parts = csv.split(",");
        for (int i = 0; i < parts.length; i++) {
            if (parts[i].length() > 0) {
                set.add(parts[i]);
            }
        }
    }

    // `"key":` after a comma unless it opens an object
    public static void key(StringBuilder out, String key) {
        char last = out.charAt(out.length() - 1);
        if (last != '{' && last != '[') {
            out.append(',');
        }
        quote(out, key);
        out.append(':');
    }

    public static void field(StringBuilder out, String key, String value) {
        key(out, key);
        if (value == null) {
            out.append("null");
        } else {
            quote(out, value);
        }
    }

    public static void quote(StringBuilder out, String s) {
        PlanJson.quote(out, s);
    }
}

// Spark's TreeNode.toJSON, written without its cost. toJSON finds every node's and every
// ExprId's, CatalogTable's ... constructor parameter names through Scala reflection, on
// every call and with no cache: ~0.9 s to initialise the Scala reflection universe the
// first time in a JVM, then ~0.1 ms per node or attribute (22-85 ms for a 20-way join).
// PlanJson walks the same tree with the same rules (TreeNode.jsonFields, parseToJson,
// shouldConvertToJson of Spark 3.5 and 4.x) and takes the names from the constructors'
// MethodParameters attribute (which scalac writes), cached per class; only a class
// without them asks Scala reflection. It answers the same JSON value: the integration
// suite parses both for every query and requires them equal (SessionObserver.cross_check).
// Anything it does not know how to write throws Unsupported and the caller uses toJSON.
class PlanJson {
    static class Unsupported extends RuntimeException {
        Unsupported(String message) {
            super(message);
        }
    }

    private final ClassLoader loader;
    private final boolean enabled;
    private final Class treeNode;
    // what TreeNode.scala's `Seq` is: collection.Seq on Scala 2.12, immutable.Seq on 2.13
    private final Class seqClass;
    private final Class mapClass;
    private final Class partitioning;
    private final Class[] convertible; // shouldConvertToJson's classes (and a product
                                       // holding a TreeNode: convert)
    private final Map names = new HashMap();     // Class -> String[]
    private final Map customFields = new HashMap(); // Class -> Boolean (own jsonFields)
    private static final int TYPES_KEPT = 2000;
    private final Map typeJson = new java.util.IdentityHashMap(); // DataType -> its json
    private Object jsonMethods;        // json4s, for a node's own jsonFields (Literal)
    private Method compact;
    private java.lang.reflect.Constructor jObject;
    private int maxFields;
    private Method truncatedString;    // Spark's, and its package object
    private Object utilPackage;
    final List reflected = new ArrayList(); // classes named by Scala reflection

    PlanJson(ClassLoader loader) {
        this.loader = loader;
        treeNode = load("org.apache.spark.sql.catalyst.trees.TreeNode");
        boolean scala213 = load("scala.collection.immutable.ArraySeq") != null;
        seqClass = load(scala213 ? "scala.collection.immutable.Seq" : "scala.collection.Seq");
        mapClass = load("scala.collection.Map");
        partitioning = load("org.apache.spark.sql.catalyst.plans.physical.Partitioning");
        String[] classes = {
            "org.apache.spark.sql.catalyst.expressions.ExprId",
            "org.apache.spark.sql.types.StructField",
            "org.apache.spark.sql.catalyst.CatalystIdentifier",
            "org.apache.spark.sql.catalyst.AliasIdentifier",
            "org.apache.spark.sql.catalyst.plans.JoinType",
            "org.apache.spark.sql.catalyst.catalog.BucketSpec",
            "org.apache.spark.sql.catalyst.catalog.CatalogTable",
            "org.apache.spark.sql.catalyst.plans.physical.Partitioning",
            "org.apache.spark.sql.catalyst.catalog.FunctionResource",
            "org.apache.spark.sql.catalyst.plans.physical.BroadcastMode",
            "org.apache.spark.sql.catalyst.catalog.CatalogTableType",
            "org.apache.spark.sql.catalyst.catalog.CatalogStorageFormat",
        };
        List found = new ArrayList();
        for (int i = 0; i < classes.length; i++) {
            Class c = load(classes[i]);
            if (c != null) {
                found.add(c);
            }
        }
        convertible = (Class[]) found.toArray(new Class[0]);
        // Spark 3.5 / 4.x, whose shouldConvertToJson also takes products holding a TreeNode
        // (the lambda it compiles to is there)
        enabled = treeNode != null && seqClass != null && mapClass != null
                && partitioning != null
                && hasDeclared(treeNode, "$anonfun$shouldConvertToJson$1")
                && supportedSpark();
    }

    boolean enabled() {
        return enabled;
    }

    // The plan's toJSON, as a string (only when enabled()).
    String write(Object plan) throws Exception {
        maxFields = org.apache.spark.sql.internal.SQLConf.get().maxToStringFields();
        StringBuilder out = new StringBuilder(4096);
        tree(out, plan);
        return out.toString();
    }

    // TreeNode.jsonValue: the nodes of the tree in pre-order, in an array
    private void tree(StringBuilder out, Object tn) throws Exception {
        out.append('[');
        nodes(out, tn);
        out.append(']');
    }

    private void nodes(StringBuilder out, Object tn) throws Exception {
        Object[] children = array(((org.apache.spark.sql.catalyst.trees.TreeNode) tn)
                .children());
        int n = children.length;
        out.append("{\"class\":");
        quote(out, tn.getClass().getName());
        out.append(",\"num-children\":").append(n);
        if (ownJsonFields(tn.getClass())) {
            String fields = ownFields(tn);
            if (fields.length() > 2) {
                out.append(',').append(fields, 1, fields.length() - 1);
            }
        } else {
            fields(out, tn, children);
        }
        out.append('}');
        for (int i = 0; i < n; i++) {
            out.append(',');
            nodes(out, children[i]);
        }
    }

    // TreeNode.jsonFields: a child as its index, a Seq of children as their indexes
    private void fields(StringBuilder out, Object tn, Object[] children)
            throws Exception {
        scala.Product p = (scala.Product) tn;
        int arity = p.productArity();
        Object[] other = array(((org.apache.spark.sql.catalyst.trees.TreeNode) tn)
                .otherCopyArgs());
        Object[] values = new Object[arity + other.length];
        for (int i = 0; i < values.length; i++) {
            values[i] = i < arity ? p.productElement(i) : other[i - arity];
        }
        String[] fieldNames = names(tn.getClass(), values);
        if (fieldNames.length != values.length) {
            throw new Unsupported(tn.getClass().getName() + ": fields and values differ");
        }
        for (int i = 0; i < values.length; i++) {
            Object value = values[i];
            int mark = out.length();
            out.append(',');
            quote(out, fieldNames[i]);
            out.append(':');
            int index = treeNode.isInstance(value) ? indexOf(children, value) : -1;
            if (index >= 0) {
                out.append(index);
            } else if (seqClass.isInstance(value) && allChildren(children, array(value))) {
                Object[] seq = array(value);
                out.append('[');
                for (int k = 0; k < seq.length; k++) {
                    if (k > 0) {
                        out.append(',');
                    }
                    out.append(indexOf(children, seq[k]));
                }
                out.append(']');
            } else if (!value(out, value)) {
                out.setLength(mark);  // None: no field
            }
        }
    }

    private static int indexOf(Object[] children, Object value) {
        for (int i = 0; i < children.length; i++) {
            Object c = children[i];
            if (c == value || (c != null && c.equals(value))) {
                return i;
            }
        }
        return -1;
    }

    private static boolean allChildren(Object[] children, Object[] seq) {
        for (int k = 0; k < seq.length; k++) {
            if (indexOf(children, seq[k]) < 0) {
                return false;
            }
        }
        return true;
    }

    // A Scala Seq's elements, walked once (a List's apply(i) walks from its head)
    private static Object[] array(Object seq) {
        scala.collection.Iterator it = ((scala.collection.Seq) seq).iterator();
        List out = new ArrayList();
        while (it.hasNext()) {
            out.add(it.next());
        }
        return out.toArray();
    }

    // TreeNode.parseToJson, case by case in its order; false for JNothing (None)
    private boolean value(StringBuilder out, Object v) throws Exception {
        if (v instanceof Boolean) {
            out.append(((Boolean) v).booleanValue());
        } else if (v instanceof Byte || v instanceof Short || v instanceof Integer
                || v instanceof Long) {
            out.append(((Number) v).longValue());
        } else if (v instanceof Float || v instanceof Double) {
            double d = ((Number) v).doubleValue();
            if (Double.isNaN(d) || Double.isInfinite(d)) {
                throw new Unsupported("a non-finite double");
            }
            out.append(d);
        } else if (v instanceof scala.math.BigInt) {
            out.append(v.toString());
        } else if (v == null) {
            out.append("null");
        } else if (v instanceof String) {
            quote(out, (String) v);
        } else if (v instanceof java.util.UUID) {
            quote(out, v.toString());
        } else if (v instanceof org.apache.spark.sql.types.DataType) {
            out.append(typeJson((org.apache.spark.sql.types.DataType) v));
        } else if (v instanceof org.apache.spark.sql.types.Metadata) {
            out.append("{}");  // SPARK-17356: always Metadata.empty
        } else if (v instanceof Class) {
            quote(out, ((Class) v).getName());
        } else if (v instanceof org.apache.spark.storage.StorageLevel) {
            org.apache.spark.storage.StorageLevel s = (org.apache.spark.storage.StorageLevel) v;
            out.append("{\"useDisk\":").append(s.useDisk())
               .append(",\"useMemory\":").append(s.useMemory())
               .append(",\"useOffHeap\":").append(s.useOffHeap())
               .append(",\"deserialized\":").append(s.deserialized())
               .append(",\"replication\":").append(s.replication()).append('}');
        } else if (treeNode.isInstance(v)) {
            tree(out, v);
        } else if (v instanceof scala.Option) {
            scala.Option o = (scala.Option) v;
            return o.isDefined() && value(out, o.get());
        } else if (seqClass.isInstance(v)) {
            seq(out, (scala.collection.Seq) v);
        } else if (mapClass.isInstance(v)) {
            out.append("null");
        } else if (v.getClass().getName().endsWith("$")) {
            out.append("{\"object\":");
            quote(out, v.getClass().getName());
            out.append('}');
        } else if (v instanceof scala.Product && convert((scala.Product) v)) {
            product(out, (scala.Product) v);
        } else {
            out.append("null");
        }
        return true;
    }

    // DataType.json (json4s render + jackson, per attribute) once per type instance: types
    // are immutable, atomic ones singletons, a table's schema the same instance in every
    // plan that reads it. At most TYPES_KEPT kept.
    private String typeJson(org.apache.spark.sql.types.DataType type) {
        String json = (String) typeJson.get(type);
        if (json == null) {
            json = type.json();
            if (typeJson.size() >= TYPES_KEPT) {
                typeJson.clear();
            }
            typeJson.put(type, json);
        }
        return json;
    }

    private void seq(StringBuilder out, scala.collection.Seq seq) throws Exception {
        Object[] t = array(seq);
        int n = t.length;
        if (all(t, partitioning) || all(t, org.apache.spark.sql.types.DataType.class)
                || all(t, scala.Product.class)) {
            out.append('[');
            for (int i = 0; i < n; i++) {
                int mark = out.length();
                if (out.charAt(mark - 1) != '[') {
                    out.append(',');
                }
                if (!value(out, t[i])) {
                    out.setLength(mark);
                }
            }
            out.append(']');
        } else if (n > 0 && t[0] instanceof String) {
            if (truncatedString == null) {  // its rule differs between Spark versions
                Class c = load("org.apache.spark.sql.catalyst.util.package$");
                Method[] methods = c.getMethods();
                for (int i = 0; i < methods.length; i++) {
                    if (methods[i].getName().equals("truncatedString")
                            && methods[i].getParameterCount() == 5) {
                        truncatedString = methods[i];
                    }
                }
                utilPackage = c.getField("MODULE$").get(null);
            }
            quote(out, (String) truncatedString.invoke(utilPackage,
                    new Object[] {seq, "[", ", ", "]", new Integer(maxFields)}));
        } else {
            out.append("null");
        }
    }

    private static boolean all(Object[] t, Class c) {
        for (int i = 0; i < t.length; i++) {
            if (!c.isInstance(t[i])) {
                return false;
            }
        }
        return true;
    }

    private boolean convert(scala.Product p) {
        for (int i = 0; i < convertible.length; i++) {
            if (convertible[i].isInstance(p)) {
                return true;
            }
        }
        for (int i = 0; i < p.productArity(); i++) {
            if (treeNode.isInstance(p.productElement(i))) {
                return true;
            }
        }
        return false;
    }

    private void product(StringBuilder out, scala.Product p) throws Exception {
        Class c = p.getClass();
        Object[] elements = new Object[p.productArity()];
        for (int i = 0; i < elements.length; i++) {
            elements[i] = p.productElement(i);
        }
        String[] fieldNames = names(c, elements);
        out.append("{\"product-class\":");
        quote(out, c.getName());
        for (int i = 0; i < fieldNames.length; i++) {
            Object value;
            if (elements.length == fieldNames.length) {
                value = elements[i];
            } else {
                Field f = c.getDeclaredField(fieldNames[i]);
                f.setAccessible(true);
                value = f.get(p);
            }
            int mark = out.length();
            out.append(',');
            quote(out, fieldNames[i]);
            out.append(':');
            if (!value(out, value)) {
                out.setLength(mark);
            }
        }
        out.append('}');
    }

    // The primary constructor's parameter names (ScalaReflection.getConstructorParameterNames):
    // those of the one constructor that takes `values` (a node's values, a
    // product's elements), when scalac wrote their names; else Scala reflection's. Cached
    // per class.
    private String[] names(Class c, Object[] values) throws Exception {
        String[] known = (String[]) names.get(c);
        if (known != null) {
            return known;
        }
        String[] found = null;
        java.lang.reflect.Constructor[] ctors = c.getDeclaredConstructors();
        java.lang.reflect.Constructor pick = null;
        int matching = 0;
        for (int i = 0; i < ctors.length; i++) {
            if (takes(ctors[i].getParameterTypes(), values)) {
                pick = ctors[i];
                matching++;
            }
        }
        if (matching == 1) {
            java.lang.reflect.Parameter[] params = pick.getParameters();
            found = new String[params.length];
            for (int i = 0; i < params.length && found != null; i++) {
                String name = params[i].getName();
                if (!params[i].isNamePresent() || name.indexOf('$') >= 0) {
                    found = null;
                } else {
                    found[i] = name;
                }
            }
        }
        if (found == null) {
            reflected.add(c.getName());
            Class module = load("org.apache.spark.sql.catalyst.ScalaReflection$");
            scala.collection.Seq seq = (scala.collection.Seq) module
                    .getMethod("getConstructorParameterNames", new Class[] {Class.class})
                    .invoke(module.getField("MODULE$").get(null), new Object[] {c});
            found = new String[seq.length()];
            for (int i = 0; i < found.length; i++) {
                found[i] = (String) seq.apply(i);
            }
        }
        names.put(c, found);
        return found;
    }

    private static boolean takes(Class[] types, Object[] values) {
        if (types.length != values.length) {
            return false;
        }
        for (int i = 0; i < types.length; i++) {
            Object v = values[i];
            Class t = types[i];
            if (t.isPrimitive()) {
                if (v == null || !BOXES.get(t).equals(v.getClass())) {
                    return false;
                }
            } else if (v != null && !t.isInstance(v)) {
                return false;
            }
        }
        return true;
    }

    private static final Map BOXES = new HashMap();
    static {
        BOXES.put(boolean.class, Boolean.class);
        BOXES.put(byte.class, Byte.class);
        BOXES.put(short.class, Short.class);
        BOXES.put(char.class, Character.class);
        BOXES.put(int.class, Integer.class);
        BOXES.put(long.class, Long.class);
        BOXES.put(float.class, Float.class);
        BOXES.put(double.class, Double.class);
    }

    // A node class with its own jsonFields (Literal): written by it, through json4s.
    private boolean ownJsonFields(Class c) throws Exception {
        Boolean known = (Boolean) customFields.get(c);
        if (known == null) {
            known = Boolean.valueOf(c.getMethod("jsonFields", new Class[0])
                    .getDeclaringClass() != treeNode);
            customFields.put(c, known);
        }
        return known.booleanValue();
    }

    private String ownFields(Object tn) throws Exception {
        if (compact == null) {
            Class jo = load("org.json4s.JsonAST$JObject");
            if (jo == null) {
                jo = load("org.json4s.JObject");
            }
            Class module = load("org.json4s.jackson.JsonMethods$");
            if (jo == null || module == null) {
                throw new Unsupported("json4s");
            }
            jObject = jo.getConstructor(new Class[] {scala.collection.immutable.List.class});
            jsonMethods = module.getField("MODULE$").get(null);
            Method[] methods = module.getMethods();
            for (int i = 0; i < methods.length; i++) {
                if (methods[i].getName().equals("compact")
                        && methods[i].getParameterCount() == 1) {
                    compact = methods[i];
                }
            }
            if (compact == null) {
                throw new Unsupported("json4s compact");
            }
        }
        Object list = ((org.apache.spark.sql.catalyst.trees.TreeNode) tn).jsonFields();
        return (String) compact.invoke(jsonMethods,
                new Object[] {jObject.newInstance(new Object[] {list})});
    }

    private static boolean supportedSpark() {
        try {
            Class c = Class.forName("org.apache.spark.package$", true,
                    PlanJson.class.getClassLoader());
            Object module = c.getField("MODULE$").get(null);
            String v = (String) c.getMethod("SPARK_VERSION", new Class[0])
                    .invoke(module, new Object[0]);
            String[] parts = v.split("[.-]");
            int major = Integer.parseInt(parts[0]);
            int minor = Integer.parseInt(parts[1]);
            return (major == 3 && minor >= 5) || major == 4;
        } catch (Throwable t) {
            return false;
        }
    }

    private static boolean hasDeclared(Class c, String method) {
        Method[] methods = c.getDeclaredMethods();
        for (int i = 0; i < methods.length; i++) {
            if (methods[i].getName().equals(method)) {
                return true;
            }
        }
        return false;
    }

    private Class load(String name) {
        try {
            return Class.forName(name, false, loader);
        } catch (Throwable t) {
            return null;
        }
    }

    static void quote(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                String hex = Integer.toHexString(c);
                out.append("\\u");
                for (int k = hex.length(); k < 4; k++) {
                    out.append('0');
                }
                out.append(hex);
            } else {
                out.append(c);
            }
        }
        out.append('"');
    }
}
