"""Activation by configuration: the lazy hook armed at interpreter start.

The wheel installs ``definity_spark.pth`` into site-packages. Python's ``site`` module
executes its one line at every interpreter start, which calls :func:`install` here. That
must cost nearly nothing, because it runs in *every* Python process of the environment
(pip, Jupyter, Spark's executor workers ...):

* this module imports nothing beyond ``sys`` and ``os`` (both already loaded by then);
* it never imports pyspark: it only puts a tiny finder at the front of ``sys.meta_path``
  that waits for ``pyspark.sql.session`` to be imported by the program itself, and then
  wraps three entry points of the classic (py4j) ``SparkSession``:

  - ``SparkSession.__init__``: every Python session object goes through it:
    ``builder.getOrCreate()``, ``SparkSession(sc)``, a shell wrapping an existing JVM
    session (``SparkSession(sc, jsparkSession)``: pyspark shell, Databricks) and
    ``spark.newSession()`` (query listeners are per session, so each gets its own);
  - ``SparkSession.Builder.getOrCreate``: it may return an *existing* session after
    applying new options to it, so ``spark.definity.*`` options given there are seen too.

The decision is taken when a session comes to exist, because conf-only activation
(``--conf spark.definity.enabled=true``, ``spark-defaults.conf``) is only known then: the
session's conf is read (``spark.definity.enabled``, falling back to the environment
variable ``DEFINITY_ENABLED``). Not enabled: nothing else happens and the plugin is never
imported. Enabled: ``definity_spark.autoattach(session)`` is called, contained.

A broken plugin must never break session creation: every step after the original Spark
code has run is wrapped, and the original result is always returned. ``DEFINITY_STRICT=1``
(tests) re-raises instead. ``DEFINITY_AUTOLOAD=0`` disarms the hook entirely.
"""

from __future__ import annotations

import os
import sys
from _thread import get_ident  # builtin, already loaded: threading would cost more

# No runtime import of typing: it alone costs ~8 ms of interpreter start.
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable

TARGET_MODULE = "pyspark.sql.session"
PACKAGE = "definity_spark"
CONF_ENABLED = "spark.definity.enabled"
ENV_ENABLED = "DEFINITY_ENABLED"
ENV_AUTOLOAD = "DEFINITY_AUTOLOAD"
CONF_PREFIX = "spark.definity."

# The false words of definity_spark.settings' boolean parsing (plus empty). Anything
# else is handed to autoattach(), whose settings resolution decides, and warns about an
# unrecognised value by key.
_FALSE = ("0", "false", "no", "")
_TRUE = ("1", "true", "yes", "on")
# DEFINITY_AUTOLOAD=0 disarms the hook entirely (read before anything else).
_DISARM = ("0", "false", "no", "off")

# Attribute set on every function we wrap: marks it, and keeps the original for uninstall.
_WRAPPED_ATTR = "__definity_original__"

_finder: _SessionModuleFinder | None = None
_patched = False
# Threads currently inside our own code (per thread: sessions may be created
# concurrently), so that sessions created by the plugin itself or re-entrant getOrCreate
# calls do not recurse into autoattach.
_busy: set = set()
# Per thread: id() of the session the last wrapped __init__ made (getOrCreate skips it).
_just_created: dict = {}
# The Python session objects a decision was taken for (weak: stopped sessions go away).
# Created lazily so that interpreter start does not touch the weakref module.
_decided: Any = None


def _log_error(what: str, exc: BaseException) -> None:
    """Report a contained error through the plugin's logger (imports logging lazily)."""
    try:
        from definity_spark._internal import log_internal_error

        log_internal_error(what, exc)
    except Exception:  # pragma: no cover - the plugin itself is broken; stay silent-ish
        try:
            import logging

            logging.getLogger("definity_spark").warning(
                "definity-spark: %s failed (contained): %r", what, exc)
        except Exception:
            pass


_connect_logged = False


def _log_connect_once() -> None:
    """Spark Connect sessions have no py4j gateway: say so once, stay off."""
    global _connect_logged
    if _connect_logged:
        return
    _connect_logged = True
    import logging

    logging.getLogger("definity_spark").warning(
        "definity-spark: spark.definity.enabled is set but this is a Spark Connect session "
        "(no py4j in the client), which the plugin does not support; it stays off")


def _strict() -> bool:
    return os.environ.get("DEFINITY_STRICT", "").strip().lower() in _TRUE


# ---------------------------------------------------------------------------------------
# The decision: read the session's conf once, cheaply, without importing the plugin.


def _truthy(value: str | None) -> bool | None:
    """True/False for a recognised boolean, None for absent, True for unrecognised.

    Unrecognised values are passed on (True) so the settings resolution can warn about
    them by key instead of this hook dropping them silently.
    """
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in _FALSE:
        return False
    return True


def enabled_by_configuration(conf_value: str | None, environ_value: str | None) -> bool:
    """The gate: Spark conf ``spark.definity.enabled`` wins over ``DEFINITY_ENABLED``."""
    decision = _truthy(conf_value)
    if decision is None:
        decision = _truthy(environ_value)
    return bool(decision)


def _session_conf_value(session: Any, key: str) -> str | None:
    """One py4j round trip: the session conf falls back to the SparkContext's conf."""
    value = session.conf.get(key, None)
    return None if value is None else str(value)


def _remember(session: Any) -> None:
    global _decided
    if _decided is None:
        import weakref

        _decided = weakref.WeakSet()
    _decided.add(session)


def _seen(session: Any) -> bool:
    try:
        return _decided is not None and session in _decided
    except TypeError:  # not weak-referenceable: re-check, it is only a conf read
        return False


def _on_session(session: Any, reason: str) -> None:
    """Called right after Spark created or returned a session; never raises (unless strict)."""
    me = get_ident()
    if me in _busy or session is None:
        return
    _busy.add(me)
    try:
        _remember(session)
        conf_value = _session_conf_value(session, CONF_ENABLED)
        if not enabled_by_configuration(conf_value, os.environ.get(ENV_ENABLED)):
            return
        if type(session).__module__.startswith("pyspark.sql.connect"):
            _log_connect_once()
            return
        # Only now pay for importing the plugin (settings, delivery, requests ...).
        # autoattach resolves the settings properly (warning about bad values by key),
        # refuses Databricks shared access mode and is idempotent per session.
        import definity_spark

        definity_spark.autoattach(session)
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not break Spark
        _log_error(f"autoload ({reason})", exc)
        if _strict():
            raise
    finally:
        _busy.discard(me)


# ---------------------------------------------------------------------------------------
# Wrapping SparkSession once pyspark.sql.session has been imported by the program.


def _wrap_init(original: Callable[..., None]) -> Callable[..., None]:
    import functools  # pyspark is being imported anyway: no start cost

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        _just_created[get_ident()] = id(self)  # an id: keeps no session alive
        _on_session(self, "SparkSession.__init__")

    setattr(__init__, _WRAPPED_ATTR, original)
    return __init__


def _wrap_get_or_create(original: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(original)
    def getOrCreate(self: Any) -> Any:  # noqa: N802 - Spark's name
        me = get_ident()
        _just_created.pop(me, None)
        session = original(self)
        try:
            if _just_created.pop(me, None) == id(session):
                return session  # made by this call: __init__ has decided already
            options = getattr(self, "_options", None) or {}
            # An existing session is re-checked only when this builder could have changed
            # its definity conf (applyModifiableSettings on an existing session); keeps the
            # common "getOrCreate() everywhere" pattern free of py4j round trips.
            if not _seen(session) or any(str(k).startswith(CONF_PREFIX) for k in options):
                _on_session(session, "SparkSession.builder.getOrCreate")
        except Exception as exc:  # noqa: BLE001
            _log_error("autoload (getOrCreate)", exc)
            if _strict():
                raise
        return session

    setattr(getOrCreate, _WRAPPED_ATTR, original)
    return getOrCreate


def _patch_session_module(module: Any) -> None:
    """Wrap the classic SparkSession in an already executed ``pyspark.sql.session``."""
    global _patched
    if _patched:
        return
    cls = getattr(module, "SparkSession", None)
    if cls is None:
        return
    init = cls.__dict__.get("__init__")
    if init is not None and not hasattr(init, _WRAPPED_ATTR):
        cls.__init__ = _wrap_init(init)
    builder_cls = getattr(cls, "Builder", None)
    goc = builder_cls.__dict__.get("getOrCreate") if builder_cls is not None else None
    if goc is not None and not hasattr(goc, _WRAPPED_ATTR):
        builder_cls.getOrCreate = _wrap_get_or_create(goc)
    _patched = True


def _unpatch_session_module(module: Any) -> None:
    global _patched
    cls = getattr(module, "SparkSession", None)
    if cls is not None:
        init = cls.__dict__.get("__init__")
        if init is not None and hasattr(init, _WRAPPED_ATTR):
            cls.__init__ = getattr(init, _WRAPPED_ATTR)
        builder_cls = getattr(cls, "Builder", None)
        goc = builder_cls.__dict__.get("getOrCreate") if builder_cls is not None else None
        if goc is not None and hasattr(goc, _WRAPPED_ATTR):
            builder_cls.getOrCreate = getattr(goc, _WRAPPED_ATTR)
    _patched = False


class _PatchingLoader:
    """Delegates to the real loader; patches SparkSession right after the module ran."""

    def __init__(self, loader: Any, fullname: str) -> None:
        self._loader = loader
        self._fullname = fullname

    def create_module(self, spec: Any) -> Any:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: Any) -> None:
        if self._fullname == PACKAGE:
            # This module was loaded by _definity_spark_boot before its package; Python
            # does not bind a submodule found in sys.modules to its parent, so do it here,
            # before the package body runs, for ``import definity_spark.autoload``.
            this = sys.modules.get(__name__)
            if this is not None:
                module.autoload = this
            self._loader.exec_module(module)
            return
        self._loader.exec_module(module)
        try:
            _patch_session_module(module)
        except Exception as exc:  # noqa: BLE001 - pyspark must import regardless
            _log_error("autoload (patch pyspark.sql.session)", exc)
            if _strict():
                raise

    def __getattr__(self, name: str) -> Any:
        # get_source, get_code, is_package, get_resource_reader ... of the real loader.
        return getattr(self._loader, name)


class _SessionModuleFinder:
    """A ``sys.meta_path`` finder that only answers for ``pyspark.sql.session`` (and for
    ``definity_spark`` itself, to bind this module to its package when it was loaded first).

    For every other import it returns None after one string comparison, so its cost on
    imports is negligible. It asks the finders behind it for the real spec and swaps in a
    loader that patches the module after executing it.
    """

    def __init__(self) -> None:
        self._searching: set = set()  # thread ids inside find_spec (re-entry guard)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != TARGET_MODULE and fullname != PACKAGE:
            return None
        me = get_ident()
        if me in self._searching:
            return None
        self._searching.add(me)
        try:
            spec = None
            for finder in sys.meta_path:
                if finder is self:
                    continue
                find = getattr(finder, "find_spec", None)
                if find is None:
                    continue
                spec = find(fullname, path, target)
                if spec is not None:
                    break
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return None
            spec.loader = _PatchingLoader(spec.loader, fullname)
            return spec
        except Exception as exc:  # noqa: BLE001 - fall back to the normal import
            _log_error("autoload (find pyspark.sql.session)", exc)
            return None
        finally:
            self._searching.discard(me)

    def invalidate_caches(self) -> None:
        return None


# ---------------------------------------------------------------------------------------
# Public entry points.


def install() -> bool:
    """Arm the hook (idempotent). Returns True when armed (or already patched).

    Called by ``definity_spark.pth`` at interpreter start, or by one line
    ``import definity_spark.autoload`` in an application deployed without pip (then the
    sessions that already exist are examined immediately).
    """
    global _finder
    try:
        if os.environ.get(ENV_AUTOLOAD, "1").strip().lower() in _DISARM:
            return False
        module = sys.modules.get(TARGET_MODULE)
        if module is not None:
            # pyspark already imported (deployment without the .pth): patch now, and give
            # the sessions that already exist their chance.
            _patch_session_module(module)
            cls = getattr(module, "SparkSession", None)
            active = getattr(cls, "_activeSession", None) or getattr(
                cls, "_instantiatedSession", None)
            if active is not None:
                _on_session(active, "install")
            return True
        if _finder is None:
            _finder = _SessionModuleFinder()
            sys.meta_path.insert(0, _finder)
        return True
    except Exception as exc:  # noqa: BLE001 - never break interpreter start
        _log_error("autoload (install)", exc)
        return False


def uninstall() -> None:
    """Remove the finder and restore SparkSession's original methods (tests, opt-out)."""
    global _finder
    if _finder is not None:
        try:
            sys.meta_path.remove(_finder)
        except ValueError:
            pass
        _finder = None
    module = sys.modules.get(TARGET_MODULE)
    if module is not None:
        _unpatch_session_module(module)
    if _decided is not None:
        _decided.clear()


def is_armed() -> bool:
    """True when the finder waits for pyspark or SparkSession is already wrapped."""
    return _finder is not None or _patched


def hook_status() -> dict:
    """For ``definity-spark doctor``: is the start hook installed and armed in this Python?

    Returns ``{"armed": bool, "pth": path or None, "reason": str}``.
    """
    import site

    dirs = []
    try:
        dirs.extend(site.getsitepackages())
    except Exception:  # noqa: BLE001 - some embedded Pythons lack it
        pass
    try:
        dirs.append(site.getusersitepackages())
    except Exception:  # noqa: BLE001
        pass
    pth = next((os.path.join(d, "definity_spark.pth") for d in dirs
                if os.path.isfile(os.path.join(d, "definity_spark.pth"))), None)
    armed = is_armed()
    if os.environ.get(ENV_AUTOLOAD, "1").strip().lower() in _DISARM:
        reason = f"disarmed by {ENV_AUTOLOAD}={os.environ.get(ENV_AUTOLOAD)}"
    elif pth is None and not armed:
        reason = ("definity_spark.pth not found in site-packages: activation by "
                  "configuration needs a pip install (or `import definity_spark.autoload`)")
    elif armed:
        reason = ("armed: a SparkSession created with spark.definity.enabled=true "
                  "(or DEFINITY_ENABLED=true) activates the plugin")
    else:
        reason = "definity_spark.pth present but the hook is not armed in this process"
    return {"armed": armed, "pth": pth, "reason": reason}


# Importing this module arms the hook: that is what ``definity_spark.pth`` does at
# interpreter start, and the one line an application deployed without pip adds.
install()
