"""Spike: a QueryExecutionListener compiled at run time with Janino (no JAR), via py4j.

    python tests/perf/janino_spike.py

Janino (org.codehaus.janino, Spark's own code-generation compiler) is on every Spark's
classpath. This compiles a small Java listener in the driver, registers it on the session
and reads, per write, one line it queued in the JVM (funcName, QueryExecution id, length
of the analyzed plan's JSON, JVM nanoseconds spent). Prints the compile time and those
lines. It is the measured starting point of the next step in tests/perf/notes.md (facts
gathered in the JVM, one py4j call per query instead of ~40 plus a Python callback), not
part of the plugin. Ran here on pyspark 3.5.9 and 4.3.0.
"""

import os
import tempfile
import time

from pyspark.sql import SparkSession

spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
jvm = spark._jvm
src = '''
import org.apache.spark.sql.util.QueryExecutionListener;
import org.apache.spark.sql.execution.QueryExecution;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
public class DefinityProbeListener implements QueryExecutionListener {
  private final LinkedBlockingQueue queue = new LinkedBlockingQueue(1000);
  public void onSuccess(String funcName, QueryExecution qe, long durationNs) {
    long t0 = System.nanoTime();
    String json = qe.analyzed().toJSON();
    long spent = System.nanoTime() - t0;
    queue.offer(funcName + "\\t" + qe.id() + "\\t" + json.length() + "\\t" + spent);
  }
  public void onFailure(String funcName, QueryExecution qe, Exception exception) {
    queue.offer("failed\\t" + funcName);
  }
  public String poll(long millis) throws InterruptedException {
    return (String) queue.poll(millis, TimeUnit.MILLISECONDS);
  }
}
'''
t = time.perf_counter()
compiler = jvm.org.codehaus.janino.SimpleCompiler()
compiler.setParentClassLoader(spark._jsparkSession.getClass().getClassLoader())
compiler.cook(src)
cls = compiler.getClassLoader().loadClass("DefinityProbeListener")
listener = cls.newInstance()
print("compiled+loaded in %.0f ms" % ((time.perf_counter() - t) * 1000))
spark._jsparkSession.listenerManager().register(listener)
p = tempfile.mkdtemp()
for _ in range(3):
    spark.range(1000).write.mode("overwrite").parquet(os.path.join(p, "x"))
    print(listener.poll(5000))
spark.stop()
