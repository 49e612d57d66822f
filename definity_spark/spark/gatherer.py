"""The JVM half of the fact reader: ``FactGatherer.java``, loaded into the driver's JVM.

It is the session's listener on Spark's listener bus and reads each query inside the JVM
(one py4j call for a plain write, against ~40 through py4j). No JAR ships with the
plugin: the source is compiled with Janino (``org.codehaus.janino``), the compiler Spark
ships for its own code generation, the first time on a machine for this source, Spark
and Java; the class bytes are then kept in a private cache directory, and the next
applications define those classes directly instead of compiling again (compiling costs a
fresh JVM ~0.4-0.7 s and more CPU in its JIT threads). If neither works (no Janino, a
refused source), ``load`` answers None with the reason, and the plugin listens and reads
through py4j instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("definity_spark.spark")

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "FactGatherer.java")
CLASS_NAME = "FactGatherer"
_BYTES_LOADER = "org.codehaus.commons.compiler.util.reflect.ByteArrayClassLoader"


@dataclass(frozen=True)
class Loaded:
    """The outcome of loading the class into one JVM."""

    cls: Any  # the java.lang.Class, or None
    how: str  # "cached" (defined from cached bytes), "compiled", or "unavailable"
    reason: str | None = None  # why it is unavailable


_lock = threading.Lock()
# one class per JVM (per py4j gateway): id(gateway) -> (gateway, Loaded)
_loaded: dict[int, tuple[Any, Loaded]] = {}


def cache_dir(environ: Any = None) -> str:
    """``$XDG_CACHE_HOME/definity-spark/gatherer`` (else ``~/.cache/...``)."""
    environ = os.environ if environ is None else environ
    cache = environ.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(cache):
        cache = os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "definity-spark", "gatherer")


def load(gateway: Any, jsession: Any) -> Loaded:
    """The ``FactGatherer`` class in this JVM (loaded once per JVM)."""
    with _lock:
        known = _loaded.get(id(gateway))
        if known is not None and known[0] is gateway:
            return known[1]
        loaded = _load(gateway, jsession)
        _loaded[id(gateway)] = (gateway, loaded)
        return loaded


def new(loaded: Loaded, gateway: Any, *config: Any) -> Any | None:
    """An instance built with ``config`` (its constructor's arguments), or None."""
    if loaded.cls is None:
        return None
    ctor = loaded.cls.getConstructors()[0]
    args = gateway.new_array(gateway.jvm.java.lang.Object, len(config))
    for i, value in enumerate(config):
        args[i] = value
    return ctor.newInstance(args)


def _load(gateway: Any, jsession: Any) -> Loaded:
    parent = jsession.getClass().getClassLoader()
    try:
        with open(SOURCE, encoding="utf-8") as handle:
            source = handle.read()
        key = _cache_key(gateway, jsession, source)
    except Exception as exc:  # noqa: BLE001 - a broken JVM or install: py4j instead
        return Loaded(None, "unavailable", f"{type(exc).__name__}: {exc}"[:300])
    path = os.path.join(cache_dir(), f"{key}.classes")
    cached = _read_cache(path)
    if cached is not None:
        try:
            return Loaded(_define(gateway, parent, cached), "cached")
        except Exception as exc:  # noqa: BLE001 - stale or damaged: compile again
            logger.debug("cached gatherer classes not usable (%s); compiling", exc)
    try:
        compiler = gateway.jvm.org.codehaus.janino.SimpleCompiler()
        compiler.setParentClassLoader(parent)
        compiler.cook(source)
        cls = compiler.getClassLoader().loadClass(CLASS_NAME)
    except Exception as exc:  # noqa: BLE001 - no Janino, or it refused the source
        return Loaded(None, "unavailable", f"{type(exc).__name__}: {exc}"[:300])
    try:
        codes = compiler.getBytecodes()
        _write_cache(path, {str(name): bytes(codes.get(name))
                            for name in list(codes.keySet().toArray())})
    except Exception as exc:  # noqa: BLE001 - the next application compiles again
        logger.debug("gatherer classes not cached: %s", exc)
    return Loaded(cls, "compiled")


def _cache_key(gateway: Any, jsession: Any, source: str) -> str:
    """The source, Spark's version and the JVM's: what the class bytes depend on."""
    system = gateway.jvm.java.lang.System
    parts = [source, str(jsession.version()), str(system.getProperty("java.version")),
             str(system.getProperty("java.vm.name"))]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _define(gateway: Any, parent: Any, classes: dict[str, bytes]) -> Any:
    codes = gateway.jvm.java.util.HashMap()
    for name, code in classes.items():
        codes.put(name, bytearray(code))
    loader = gateway.jvm.__getattr__(_BYTES_LOADER.rsplit(".", 1)[0]).__getattr__(
        _BYTES_LOADER.rsplit(".", 1)[1])(codes, parent)
    return loader.loadClass(CLASS_NAME)


def _read_cache(path: str) -> dict[str, bytes] | None:
    """The cached classes, if the file is ours and no one else could have written it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        dir_st = os.stat(os.path.dirname(path))
        uid = os.getuid() if hasattr(os, "getuid") else st.st_uid
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid or dir_st.st_uid != uid \
                or (st.st_mode | dir_st.st_mode) & (stat.S_IWGRP | stat.S_IWOTH):
            logger.debug("gatherer cache %s not trusted (owner or mode)", path)
            return None
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            header, _, body = handle.read().partition(b"\n")
        index = json.loads(header)
        out, at = {}, 0
        for name, size in index["classes"]:
            out[str(name)] = body[at:at + int(size)]
            at += int(size)
        if at != len(body) or hashlib.sha256(body).hexdigest() != index["sha256"]:
            return None
        return out
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        if fd >= 0:
            os.close(fd)


def _write_cache(path: str, classes: dict[str, bytes]) -> None:
    """Written whole to a private temp file, then renamed into place (0600, dir 0700)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    body = b"".join(classes.values())
    header = json.dumps({"classes": [[n, len(c)] for n, c in classes.items()],
                         "sha256": hashlib.sha256(body).hexdigest()}).encode()
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(header + b"\n" + body)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
