"""The local collector: an embedded Definity-compatible server with SQLite storage.

``Collector(db_path, host, port, token).start()`` returns its URL; ``stop()`` ends it.
See ``docs/collector.md`` for the endpoints, the validation rules and the read API.
"""

from definity_spark.collector.db import default_db_path
from definity_spark.collector.server import Collector
from definity_spark.collector.store import Store
from definity_spark.collector.validate import PayloadError, validate

__all__ = ["Collector", "Store", "default_db_path", "PayloadError", "validate"]
