"""The JVM half of the fact reader: ``FactGatherer.java``, loaded into the driver's JVM.

It is the session's listener on Spark's listener bus and reads each query inside the JVM
(one py4j call for a plain write, against ~40 through py4j). No JAR ships with the
plugin: the source is compiled with Janino (``org.codehaus.janino``), the compiler Spark
ships for its own code generation, the first time on a machine for this source, Spark
and Java; the class bytes are then kept in a private cache directory, and the next
applications load those classes directly (a ``URLClassLoader`` over the directory)
instead of compiling again (compiling costs a fresh JVM ~0.4-0.7 s and more CPU in its JIT
threads). If neither works (no Janino, a
refused source), ``load`` answers None with the reason, and the plugin listens and reads
through py4j instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import threading
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("definity_spark.spark")

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "FactGatherer.java")
CLASS_NAME = "definity.FactGatherer"  # the three classes' package: ``definity``
# Structured Streaming (StreamWatch.java): compiled after FactGatherer, with its class
# loader as the parent; without it, streaming queries are not reported (logged)
STREAMS_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "StreamWatch.java")
STREAMS_CLASS = "definity.StreamWatch"
# the data quality rule (spark/quality.py): compiled and cached the same way, on its own
# (only where the setting asks for it), also with FactGatherer's class loader as its parent
RULE_SOURCE = os.path.join(os.path.dirname(SOURCE), "QualityRule.java")
RULE_CLASS = "definity.QualityRule"
INDEX = "index.json"  # of a cache directory: class name -> sha256 of its class file


@dataclass(frozen=True)
class Loaded:
    """The outcome of loading the class into one JVM."""

    cls: Any  # the java.lang.Class, or None
    how: str  # "cached" (defined from cached bytes), "compiled", or "unavailable"
    reason: str | None = None  # why it is unavailable
    streams_cls: Any = None  # StreamWatch's java.lang.Class, or None (streams not reported)


_lock = threading.Lock()
# one class per JVM (per py4j gateway): (id(gateway), class name) -> (gateway, Loaded)
_loaded: dict[tuple[int, str], tuple[Any, Loaded]] = {}


def cache_dir(environ: Any = None) -> str:
    """``$XDG_CACHE_HOME/definity-spark/gatherer`` (else ``~/.cache/...``)."""
    environ = os.environ if environ is None else environ
    cache = environ.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(cache):
        cache = os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "definity-spark", "gatherer")


def load(gateway: Any, jsession: Any, source: str | None = None,
         class_name: str = CLASS_NAME) -> Loaded:
    """The ``FactGatherer`` class (with ``StreamWatch``), or another source's
    ``class_name`` compiled against it, in this JVM (loaded once per JVM)."""
    with _lock:
        return _load_once(gateway, jsession, source or SOURCE, class_name)


def _load_once(gateway: Any, jsession: Any, source: str, class_name: str) -> Loaded:
    known = _loaded.get((id(gateway), class_name))
    if known is not None and known[0] is gateway:
        return known[1]
    if class_name == CLASS_NAME:
        loaded = _load(gateway, jsession.getClass().getClassLoader(), jsession, source,
                       class_name, STREAMS_SOURCE)
    else:  # it uses FactGatherer's helpers
        base = _load_once(gateway, jsession, SOURCE, CLASS_NAME)
        loaded = base if base.cls is None else _load(
            gateway, base.cls.getClassLoader(), jsession, source, class_name, SOURCE)
    _loaded[(id(gateway), class_name)] = (gateway, loaded)
    return loaded


def new(loaded: Loaded, *config: Any) -> Any | None:
    """An instance configured with ``config`` (``FactGatherer.configure``'s arguments), or
    None: two py4j calls."""
    if loaded.cls is None:
        return None
    g = loaded.cls.newInstance()
    g.configure(*config)
    return g


def _load(gateway: Any, parent: Any, jsession: Any, source_path: str, class_name: str,
          companion: str) -> Loaded:
    """``companion``: for the gatherer, StreamWatch's source (compiled against it, cached
    with it); for another class, the gatherer's (it is compiled against that)."""
    with_watch = class_name == CLASS_NAME
    try:
        with open(source_path, encoding="utf-8") as handle:
            source = handle.read()
        with open(companion, encoding="utf-8") as handle:
            companion_source = handle.read()
        key = _cache_key(gateway, jsession, source + "\0" + companion_source)
    except Exception as exc:  # noqa: BLE001 - a broken JVM or install: py4j instead
        return Loaded(None, "unavailable", f"{type(exc).__name__}: {exc}"[:300])
    path = os.path.join(cache_dir(), key)
    if _trusted(path):
        try:
            loader = _define(gateway, parent, path)
            return Loaded(loader.loadClass(class_name), "cached",
                          streams_cls=_cached_class(loader, STREAMS_CLASS) if with_watch
                          else None)
        except Exception as exc:  # noqa: BLE001 - stale or damaged: compile again
            logger.debug("cached gatherer classes not usable (%s); compiling", exc)
    try:
        compiler = gateway.jvm.org.codehaus.janino.SimpleCompiler()
        compiler.setParentClassLoader(parent)
        compiler.cook(source)
        cls = compiler.getClassLoader().loadClass(class_name)
    except Exception as exc:  # noqa: BLE001 - no Janino, or it refused the source
        return Loaded(None, "unavailable", f"{type(exc).__name__}: {exc}"[:300])
    codes = {}
    streams_cls: Any = None
    try:
        codes = _bytecodes(compiler)
        if with_watch:
            watch = gateway.jvm.org.codehaus.janino.SimpleCompiler()
            watch.setParentClassLoader(cls.getClassLoader())
            watch.cook(companion_source)
            streams_cls = watch.getClassLoader().loadClass(STREAMS_CLASS)
            codes.update(_bytecodes(watch))
    except Exception as exc:  # noqa: BLE001 - queries are still read; streams are not
        logger.info("definity-spark: streaming queries will not be reported (%s)",
                    f"{type(exc).__name__}: {exc}"[:300])
        codes = {}  # cached only whole: a cache has all its classes
    try:
        if codes:
            _write_cache(path, codes)
    except Exception as exc:  # noqa: BLE001 - the next application compiles again
        logger.debug("gatherer classes not cached: %s", exc)
    return Loaded(cls, "compiled", streams_cls=streams_cls)


def _bytecodes(compiler: Any) -> dict[str, bytes]:
    codes = compiler.getBytecodes()
    return {str(name): bytes(codes.get(name)) for name in list(codes.keySet().toArray())}


def _cached_class(loader: Any, name: str) -> Any:
    try:
        return loader.loadClass(name)
    except Exception:  # noqa: BLE001 - a cache without it: streams are not reported
        return None


def _cache_key(gateway: Any, jsession: Any, source: str) -> str:
    """The source, Spark's version and the JVM's: what the class bytes depend on."""
    system = gateway.jvm.java.lang.System
    parts = [source, str(jsession.version()), str(system.getProperty("java.vm.version")),
             str(system.getProperty("java.vm.name"))]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _define(gateway: Any, parent: Any, path: str) -> Any:
    """A ``URLClassLoader`` over a cache directory, which defines its classes (a JDK class
    the JVM has loaded already: no Janino class is touched)."""
    jvm = gateway.jvm
    urls = gateway.new_array(jvm.java.net.URL, 1)
    urls[0] = jvm.java.io.File(path + os.sep).toURI().toURL()
    return jvm.java.net.URLClassLoader(urls, parent)


def _owned_private(st: os.stat_result) -> bool:
    uid = os.getuid() if hasattr(os, "getuid") else st.st_uid
    return st.st_uid == uid and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _trusted(path: str) -> bool:
    """A cache directory that is ours, that no one else could have written, and whose
    class files are those its index lists (sha256)."""
    try:
        dir_st = os.lstat(path)
        if not stat.S_ISDIR(dir_st.st_mode) or not _owned_private(dir_st) \
                or not _owned_private(os.stat(os.path.dirname(path))):
            return False
        with open(os.path.join(path, INDEX), "rb") as handle:
            index = json.loads(handle.read())
        for name, digest in index["classes"].items():
            file = os.path.join(path, name.replace(".", os.sep) + ".class")
            fd = os.open(file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as handle:
                st = os.fstat(handle.fileno())
                if not stat.S_ISREG(st.st_mode) or not _owned_private(st) or \
                        hashlib.sha256(handle.read()).hexdigest() != digest:
                    return False
        return bool(index["classes"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _write_cache(path: str, classes: dict[str, bytes]) -> None:
    """Written whole into a private temporary directory, then renamed into place (files
    0600, directories 0700); another application that got there first wins."""
    parent = os.path.dirname(path)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    os.makedirs(tmp, mode=0o700)
    try:
        for name, code in classes.items():
            file = os.path.join(tmp, name.replace(".", os.sep) + ".class")
            os.makedirs(os.path.dirname(file), mode=0o700, exist_ok=True)
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(code)
        index = {"classes": {n: hashlib.sha256(c).hexdigest() for n, c in classes.items()}}
        fd = os.open(os.path.join(tmp, INDEX), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(index, handle)
        if os.path.isdir(path):  # stale (not trusted): replaced
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
