"""An example pipeline for `definity-spark demo`: a tiny shop, raw files to marts.

It contains no reference to definity_spark: the demo turns the plugin on with
`spark-submit --conf spark.definity.enabled=true ...` only.

Usage: spark-submit demo_pipeline.py DATA_DIR
"""

import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

data_dir = sys.argv[1] if len(sys.argv) > 1 else "/tmp/definity-demo-data"
spark = SparkSession.builder.appName("definity-demo").enableHiveSupport().getOrCreate()

# 1. land raw files (in-memory data is not a dataset: this write has no inputs)
orders = spark.createDataFrame(
    [(1, 10, "2025-09-01", 120.5), (2, 11, "2025-09-01", 80.0), (3, 10, "2025-09-02", 42.0)],
    "order_id INT, customer_id INT, order_date STRING, amount DOUBLE",
)
customers = spark.createDataFrame(
    [(10, "Ada", "UK"), (11, "Linus", "FI")], "customer_id INT, name STRING, country STRING"
)
orders.write.mode("overwrite").partitionBy("order_date").parquet(f"{data_dir}/raw/orders")
customers.write.mode("overwrite").json(f"{data_dir}/raw/customers")

# 2. staging tables in the session catalog
spark.sql("CREATE DATABASE IF NOT EXISTS shop")
spark.read.parquet(f"{data_dir}/raw/orders").write.mode("overwrite").saveAsTable("shop.orders")
spark.read.json(f"{data_dir}/raw/customers").createOrReplaceTempView("customers_raw")
spark.sql("DROP TABLE IF EXISTS shop.customers")  # DDL without data: not reported
spark.sql("CREATE TABLE shop.customers USING parquet AS "
          "SELECT customer_id, name, country FROM customers_raw")

# 3. a mart joining both
spark.sql("DROP TABLE IF EXISTS shop.revenue_by_country")
spark.sql("""
    CREATE TABLE shop.revenue_by_country USING parquet AS
    SELECT c.country, sum(o.amount) AS revenue, count(*) AS orders
    FROM shop.orders o JOIN shop.customers c ON o.customer_id = c.customer_id
    GROUP BY c.country
""")

# 4. an export by path; read-only actions are not transformations
top = spark.table("shop.revenue_by_country").where(F.col("revenue") > 50)
top.write.mode("overwrite").csv(f"{data_dir}/exports/top_countries", header=True)
print("rows in mart:", spark.table("shop.revenue_by_country").count())
spark.stop()
