"""The JVM half of the fact reader: ``FactGatherer.java``, compiled in the driver.

Reading one write through py4j accessor calls costs ~35 round trips and ~15 more when
py4j releases the Java objects they returned; each is ~0.1 ms of CPU split between
Python and the JVM, on the driver's cores, while the user's job runs. ``FactGatherer``
makes the same accessor calls inside the JVM and answers each phase of
``FactReader`` with one string, so a write costs two round trips; a plain write, one:
the observer's pump takes its callback with both phases already read (``setEager``). It
also writes the plan's JSON itself (``PlanJson``: the value of Spark's ``TreeNode.toJSON``
without its uncached Scala reflection, ~3x faster, and no ~1 s Scala-reflection start in
a JVM).

It is compiled from source at run time with Janino (``org.codehaus.janino``), the
compiler Spark ships for its own code generation: no JAR to install, nothing on the
classpath. Compiling takes ~0.3-1 s of one core once per JVM, on the extraction worker
(never on the listener bus or the caller's thread). If Janino is missing or compiling
fails, ``load`` answers None and ``FactReader`` keeps reading through py4j.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

logger = logging.getLogger("definity_spark.spark")

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "FactGatherer.java")

_lock = threading.Lock()
# one compiled class per JVM (per py4j gateway): id(gateway) -> (gateway, class or None)
_classes: dict[int, tuple[Any, Any]] = {}


def load(gateway: Any, jsession: Any, *config: Any) -> Any | None:
    """A ``FactGatherer`` instance built with ``config`` (its constructor's arguments),
    or None when it cannot be compiled in this JVM."""
    cls = _compiled(gateway, jsession)
    if cls is None:
        return None
    try:
        ctor = cls.getConstructors()[0]
        args = gateway.new_array(gateway.jvm.java.lang.Object, len(config))
        for i, value in enumerate(config):
            args[i] = value
        return ctor.newInstance(args)
    except Exception as exc:  # noqa: BLE001 - an unexpected JVM: read through py4j
        logger.debug("FactGatherer could not be created: %s", exc)
        return None


def _compiled(gateway: Any, jsession: Any) -> Any | None:
    with _lock:
        known = _classes.get(id(gateway))
        if known is not None and known[0] is gateway:
            return known[1]
        cls = None
        try:
            with open(SOURCE, encoding="utf-8") as handle:
                source = handle.read()
            compiler = gateway.jvm.org.codehaus.janino.SimpleCompiler()
            compiler.setParentClassLoader(jsession.getClass().getClassLoader())
            compiler.cook(source)
            cls = compiler.getClassLoader().loadClass("FactGatherer")
        except Exception as exc:  # noqa: BLE001 - no Janino, or it refused the source
            logger.debug("FactGatherer not compiled (facts are read through py4j): %s", exc)
        _classes[id(gateway)] = (gateway, cls)
        return cls
