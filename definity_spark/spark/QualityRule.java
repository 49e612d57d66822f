// Opt-in data quality of written data (lineage/quality.py, docs/metrics.md "Data quality").
//
// An optimizer rule in the session's experimental.extraOptimizations, compiled at run
// time with Janino as FactGatherer.java is (spark/gatherer.py): for a write whose target
// may be one the setting names, it adds Spark's observed metrics (CollectMetrics, what
// Dataset.observe adds) on top of the written query: the rows, and per named column its
// non-null count, approximate distinct count, min and max. They are computed by the
// write's own tasks as the rows go by (no other job, no other scan); the gatherer reads
// them from QueryExecution.observedMetrics when the write has ended.
//
// Which targets: the command table's accessor paths of the target's table name or path
// (commands.py, Command.quality_names), matched against one regular expression per entry
// of the setting (lineage/quality.py, jvm_rules): a loose match on the name's last part;
// the exact dataset name is checked in Python before anything is reported.
//
// Never breaks the user's query: any error leaves the plan as it was (counted).
// Janino compiles a subset of Java: no generics (raw types and casts), no lambdas. It is
// compiled with FactGatherer's class loader as its parent, and uses FactGatherer's helpers.

package definity;

import java.lang.reflect.Method;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Pattern;

import org.apache.spark.sql.catalyst.expressions.Alias;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.Literal$;
import org.apache.spark.sql.catalyst.expressions.NamedExpression$;
import org.apache.spark.sql.catalyst.expressions.aggregate.AggregateFunction;
import org.apache.spark.sql.catalyst.expressions.aggregate.Count$;
import org.apache.spark.sql.catalyst.expressions.aggregate.HyperLogLogPlusPlus;
import org.apache.spark.sql.catalyst.expressions.aggregate.Max;
import org.apache.spark.sql.catalyst.expressions.aggregate.Min;
import org.apache.spark.sql.catalyst.plans.logical.CollectMetrics;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.rules.Rule;
import org.apache.spark.sql.catalyst.trees.TreeNode;
import org.apache.spark.sql.types.BinaryType;
import org.apache.spark.sql.types.BooleanType;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DateType;
import org.apache.spark.sql.types.NumericType;
import org.apache.spark.sql.types.StringType;
import org.apache.spark.sql.types.TimestampType;

import static definity.FactGatherer.call;
import static definity.FactGatherer.invoke;
import static definity.FactGatherer.optionValue;
import static definity.FactGatherer.path;
import static definity.FactGatherer.seqApply;
import static definity.FactGatherer.seqSize;
import static definity.FactGatherer.simpleName;

public class QualityRule extends Rule {
    private String name;  // of the CollectMetrics (FactGatherer.observe reads it back)
    private Pattern[] targets = new Pattern[0];
    private Set[] columns = new Set[0];  // lower-cased column names; null: every column
    private final Map names = new HashMap();  // command's simple name -> String[] paths
    private final AtomicLong instrumented = new AtomicLong();
    private final AtomicLong failures = new AtomicLong();
    private volatile String lastError;

    // `rules`: a line per entry of the setting: a regular expression over the target's
    // name values, a tab, the columns separated by tabs ("*": every column).
    // `commands`: a line per command: its simple name, a tab, its accessor paths (tabs).
    public void configure(String name, String rules, String commands) {
        this.name = name;
        String[] lines = rules.split("\n");
        List ts = new ArrayList();
        List cs = new ArrayList();
        for (int i = 0; i < lines.length; i++) {
            String[] f = lines[i].split("\t");
            if (f.length < 2) {
                continue;
            }
            ts.add(Pattern.compile(f[0]));
            Set set = null;
            if (!(f.length == 2 && f[1].equals("*"))) {
                set = new HashSet();
                for (int k = 1; k < f.length; k++) {
                    set.add(f[k].toLowerCase());
                }
            }
            cs.add(set);
        }
        targets = (Pattern[]) ts.toArray(new Pattern[ts.size()]);
        columns = (Set[]) cs.toArray(new Set[cs.size()]);
        String[] cmds = commands.split("\n");
        for (int i = 0; i < cmds.length; i++) {
            String[] f = cmds[i].split("\t");
            if (f.length >= 2) {
                String[] paths = new String[f.length - 1];
                System.arraycopy(f, 1, paths, 0, paths.length);
                names.put(f[0], paths);
            }
        }
    }

    public long instrumented() {
        return instrumented.get();
    }

    public long failures() {
        return failures.get();
    }

    public String lastError() {
        return lastError;
    }

    // -- the rule: runs in the optimizer on the query's thread, for every query of the
    // session (FixedPoint batch: again until nothing changes); anything but a write
    // command it knows returns at once
    public TreeNode apply(TreeNode plan) {
        try {
            String[] paths = (String[]) names.get(simpleName(plan.getClass().getName()));
            if (paths == null) {
                return plan;
            }
            return instrument((LogicalPlan) plan, paths);
        } catch (Throwable t) {
            failures.incrementAndGet();
            lastError = String.valueOf(t);
            return plan;
        }
    }

    private LogicalPlan instrument(LogicalPlan cmd, String[] paths) throws Exception {
        Object query = call(cmd, "query");
        if (!(query instanceof LogicalPlan) || measured((LogicalPlan) query)) {
            return cmd;
        }
        Set wanted = new HashSet();
        boolean all = false;
        boolean matched = false;
        for (int p = 0; p < paths.length; p++) {
            Object value = optionValue(path(cmd, paths[p]));
            if (value == null) {
                continue;
            }
            String text = String.valueOf(value);
            for (int i = 0; i < targets.length; i++) {
                if (targets[i].matcher(text).matches()) {
                    matched = true;
                    if (columns[i] == null) {
                        all = true;
                    } else {
                        wanted.addAll(columns[i]);
                    }
                }
            }
        }
        if (!matched) {
            return cmd;
        }
        LogicalPlan data = (LogicalPlan) query;
        // V1 writes (Spark 3.4+): the planned write's WriteFiles must stay the command's
        // child; the measures go right under it
        boolean writeFiles = simpleName(data.getClass().getName()).equals("WriteFiles");
        LogicalPlan under = writeFiles ? (LogicalPlan) seqApply(data.children(), 0) : data;
        LogicalPlan measuredPlan = measure(under, all, wanted);
        if (measuredPlan == null) {
            return cmd;
        }
        LogicalPlan newQuery = writeFiles
                ? (LogicalPlan) data.withNewChildren(list(new Object[] {measuredPlan}))
                : measuredPlan;
        instrumented.incrementAndGet();
        return (LogicalPlan) replace(cmd, data, newQuery);
    }

    // The measures of `plan`'s output columns named (`all`: every one), or null if none.
    private LogicalPlan measure(LogicalPlan plan, boolean all, Set wanted) throws Exception {
        List exprs = new ArrayList();
        exprs.add(alias(Count$.MODULE$.apply(Literal$.MODULE$.apply(new Integer(1))), "rows"));
        Object output = plan.output();
        int n = seqSize(output);
        for (int i = 0; i < n; i++) {
            Attribute a = (Attribute) seqApply(output, i);
            String col = a.name();
            if (!all && !wanted.contains(col.toLowerCase())) {
                continue;
            }
            DataType t = a.dataType();
            exprs.add(alias(Count$.MODULE$.apply(a), "nn:" + col));
            if (orderable(t) || t instanceof StringType || t instanceof BinaryType) {
                exprs.add(alias(new HyperLogLogPlusPlus(a), "dc:" + col));
            }
            if (orderable(t)) {
                exprs.add(alias(new Min(a), "min:" + col));
                exprs.add(alias(new Max(a), "max:" + col));
            }
        }
        if (exprs.size() == 1) {
            return null;  // none of the named columns is written
        }
        return new CollectMetrics(name, list(exprs.toArray()), plan, 0L);
    }

    // min and max: types whose values are numbers on the wire (dates and timestamps as
    // Unix seconds, booleans 0/1)
    private static boolean orderable(DataType t) {
        return t instanceof NumericType || t instanceof DateType || t instanceof TimestampType
                || t instanceof BooleanType || "timestamp_ntz".equals(t.typeName());
    }

    private static Expression alias(AggregateFunction f, String as) {
        scala.collection.immutable.List none = list(new Object[0]);
        scala.Option noMetadata = scala.None$.MODULE$;
        return new Alias(f.toAggregateExpression(), as, NamedExpression$.MODULE$.newExprId(),
                none, noMetadata, none);
    }

    // Whether the query already carries the measures, on its single-child spine (a CTAS's
    // nested insert: the outer command's query was measured).
    private boolean measured(LogicalPlan plan) throws Exception {
        Object node = plan;
        for (int depth = 0; depth < 16; depth++) {
            if (node instanceof CollectMetrics && name.equals(((CollectMetrics) node).name())) {
                return true;
            }
            Object kids = ((TreeNode) node).children();
            if (seqSize(kids) != 1) {
                return false;
            }
            node = seqApply(kids, 0);
        }
        return false;
    }

    // `cmd` with `query` replaced: a child (an insert's), or a constructor argument that
    // is not a child (a CTAS's query)
    private static TreeNode replace(LogicalPlan cmd, LogicalPlan old, LogicalPlan now)
            throws Exception {
        Object kids = cmd.children();
        int n = seqSize(kids);
        Object[] children = new Object[n];
        boolean child = false;
        for (int i = 0; i < n; i++) {
            children[i] = seqApply(kids, i);
            if (children[i] == old) {
                children[i] = now;
                child = true;
            }
        }
        if (child) {
            return cmd.withNewChildren(list(children));
        }
        int arity = cmd.productArity();
        Object[] args = new Object[arity];
        boolean found = false;
        for (int i = 0; i < arity; i++) {
            args[i] = cmd.productElement(i);
            if (args[i] == old) {
                args[i] = now;
                found = true;
            }
        }
        if (!found) {
            throw new IllegalStateException("query of " + cmd.nodeName() + " not found");
        }
        return cmd.makeCopy(args);
    }

    // -- install on a session: after every rule there, instead of an earlier QualityRule
    public void install(Object session) throws Exception {
        setRules(session, this);
    }

    public void uninstall(Object session) throws Exception {
        setRules(session, null);
    }

    private static void setRules(Object session, Object rule) throws Exception {
        Object methods = call(session, "experimental");
        Object now = call(methods, "extraOptimizations");
        List kept = new ArrayList();
        int n = seqSize(now);
        for (int i = 0; i < n; i++) {
            Object r = seqApply(now, i);
            if (!simpleName(r.getClass().getName()).equals("QualityRule")) {
                kept.add(r);
            }
        }
        if (rule != null) {
            kept.add(rule);
        }
        Method set = null;
        Method[] all = methods.getClass().getMethods();
        for (int i = 0; i < all.length; i++) {
            if (all[i].getName().equals("extraOptimizations_$eq")) {
                set = all[i];
            }
        }
        invoke(set, methods, new Object[] {list(kept.toArray())});
    }

    // -- helpers --------------------------------------------------------------------------
    // a scala List of the items (a Seq on Scala 2.12 and 2.13 alike)
    private static scala.collection.immutable.List list(Object[] items) {
        scala.collection.immutable.List out = scala.collection.immutable.Nil$.MODULE$;
        for (int i = items.length - 1; i >= 0; i--) {
            out = out.$colon$colon(items[i]);
        }
        return out;
    }
}
