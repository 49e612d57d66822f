"""Interpreter-start bootstrap of definity-spark, imported by ``definity_spark.pth``.

Every Python process of an environment where definity-spark is installed runs this, so
it must cost nearly nothing. It loads ``definity_spark/autoload.py`` *without* executing
the package's ``__init__`` (which imports logging, threading, settings ...): it asks the
import system's own finders for the two specs and executes only the small module. The
package itself is imported later, and only when a SparkSession is created with the plugin
enabled by configuration. ``DEFINITY_AUTOLOAD=0`` skips everything.

Errors are swallowed: a broken install must not print tracebacks into every Python start
(the hook then simply is not armed; ``definity-spark doctor`` reports whether it is). The
``.pth`` line guards its own import the same way, for an install whose ``.pth`` outlived
this module.
"""

import os
import sys

_PACKAGE = "definity_spark"
_MODULE = "definity_spark.autoload"


def _find(name, path):  # type: ignore[no-untyped-def]
    for finder in list(sys.meta_path):
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        spec = find(name, path)
        if spec is not None:
            return spec
    return None


def boot():  # type: ignore[no-untyped-def]
    """Load and execute definity_spark.autoload (which arms the hook); never raises."""
    try:
        if os.environ.get("DEFINITY_AUTOLOAD", "1").strip().lower() in ("0", "false", "no", "off"):
            return
        if _MODULE in sys.modules:
            return
        package = _find(_PACKAGE, None)
        if package is None or not package.submodule_search_locations:
            return
        spec = _find(_MODULE, list(package.submodule_search_locations))
        if spec is None or spec.loader is None:
            return
        # _frozen_importlib is always loaded: module_from_spec without importing importlib.util.
        module = sys.modules["_frozen_importlib"].module_from_spec(spec)
        sys.modules[_MODULE] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(_MODULE, None)
            raise
    except Exception:
        pass


boot()
