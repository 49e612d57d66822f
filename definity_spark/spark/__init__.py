"""The py4j edge: the query listener, the fact reader and the session observer.

Only this package touches JVM objects; everything it learns leaves it as plain data
(``definity_spark.lineage.facts``).
"""
