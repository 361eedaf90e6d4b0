"""The import probe of :mod:`cpsysd.host.preflight`, run as a script in the app's OWN interpreter.

Its source is passed with ``python -c`` (not run by path: that would put this package's directory
first on ``sys.path``, ahead of the app's modules), with one JSON argument:
``{"working_directory", "module", "attribute", "kind", "config", "vhosts"}``. It imports nothing
of cpsysd: the interpreter may be a virtualenv that has only the app and CherryPy (``cpsysd
try`` provisions cpsysd into its container itself). It does what ``cpsysd serve`` does when the
service starts (:func:`cpsysd.runtime.app.load_app`): read the CherryPy config with CherryPy's own
reader, enter the working directory, import the entry module with that directory first on
``sys.path``, resolve the object, tell its kind the same way and create the root object. The
verdict is the last line of stdout that starts with :data:`MARKER` (the app may print too).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

MARKER = "cpsysd-probe: "
Problem = tuple[str, str, str]  # field, message, hint


def _exposed(value: object) -> bool:
    return bool(getattr(value, "exposed", False))


def _looks_like_cherrypy_root(obj: object) -> bool:
    # Mirrors cpsysd.runtime.app.looks_like_cherrypy_root; kept apart so this script runs
    # where cpsysd is not installed.
    if _exposed(obj) or hasattr(obj, "_cp_dispatch") or hasattr(obj, "_cp_config"):
        return True
    candidates = [
        getattr(type(obj), name, None) for name in dir(type(obj)) if not name.startswith("__")
    ]
    candidates += list(getattr(obj, "__dict__", {}).values())
    return any(_exposed(value) for value in candidates)


def _read_config(path: str) -> Problem | None:
    try:
        from cherrypy.lib import reprconf
    except ImportError as err:
        return ("python", f"cannot import cherrypy: {err}", "install CherryPy into python")
    try:
        reprconf.Parser().dict_from_file(path)
    except OSError as err:
        return ("config", f"cannot read {path}: {err.strerror or err}", "create it, or fix config")
    except Exception as err:  # reprconf evaluates values as Python expressions
        return ("config", f"{path} does not parse: {type(err).__name__}: {err}", "fix the file")
    return None


def _import(module_name: str, workdir: str) -> tuple[Any, Problem | None]:
    sys.path.insert(0, workdir)
    try:
        return importlib.import_module(module_name), None
    except ModuleNotFoundError as err:
        if err.name is not None and (module_name + ".").startswith(err.name + "."):
            return None, (
                "entry",
                f"no module {module_name!r} in {workdir} or in {sys.executable}",
                "check entry and working_directory",
            )
        return None, (
            "python",
            f"{sys.executable} cannot import {module_name!r}: {err}",
            "install the app's dependencies into it, or point python at the interpreter "
            "that has them",
        )
    except SyntaxError as err:
        where = f"{err.filename}, line {err.lineno}"
        return None, ("entry", f"{module_name!r} has a syntax error: {where}: {err.msg}", "fix it")
    except BaseException as err:  # SystemExit and KeyboardInterrupt from app code, too
        return None, (
            "entry",
            f"importing {module_name!r} failed: {type(err).__name__}: {err}",
            "run the import by hand with the same python to see the traceback",
        )


def _resolve(spec: dict[str, Any]) -> tuple[str | None, Problem | None]:
    """The kind the entry object is served as, or the problem with it."""
    entry = f"{spec['module']}:{spec['attribute']}"
    obj, problem = _import(spec["module"], spec["working_directory"])
    if problem:
        return None, problem
    for part in spec["attribute"].split("."):
        if not hasattr(obj, part):
            return None, ("entry", f"{spec['module']!r} has no attribute {part!r}", "fix entry")
        obj = getattr(obj, part)
    import cherrypy  # the service imports it (cheroot serves every kind)

    root_like = isinstance(obj, (cherrypy.Application, type)) or _looks_like_cherrypy_root(obj)
    kind = spec["kind"]
    if kind == "auto":
        kind = "cherrypy" if root_like else "wsgi" if callable(obj) else ""
    if not kind:
        kind_hint = 'point entry at the root or the WSGI app, or set kind = "cherrypy"'
        return None, ("entry", f"{entry} is neither a CherryPy root nor callable", kind_hint)
    if kind == "wsgi" and not callable(obj):
        return None, ("kind", f"{entry} is not callable, so it is no WSGI app", 'set kind = "auto"')
    if kind == "cherrypy" and not root_like:
        hint = 'set kind = "wsgi" (or "auto"), or expose handlers with @cherrypy.expose'
        return None, ("kind", f"{entry} is no CherryPy root: nothing in it is exposed", hint)
    if kind == "wsgi" and spec["vhosts"]:
        hint = "remove vhosts, or route domains in the WSGI app"
        return None, ("vhosts", "need a CherryPy app, but the entry is a WSGI callable", hint)
    if kind == "cherrypy" and isinstance(obj, type):
        try:
            obj()  # cpsysd serve creates the root object from the class without arguments
        except Exception as err:
            return None, ("entry", f"{entry}() failed: {type(err).__name__}: {err}", "fix it")
    return kind, None


def main(argv: list[str]) -> int:
    spec: dict[str, Any] = json.loads(argv[1])
    problems: list[Problem] = []
    kind = None
    try:
        os.chdir(spec["working_directory"])  # as WorkingDirectory= (and cpsysd serve) do
    except OSError as err:
        hint = "let the service's user enter it (chmod o+rx), or set user = to one that can"
        problems.append(
            (
                "working_directory",
                f"uid {os.getuid()} cannot enter {spec['working_directory']}: {err.strerror}",
                hint,
            )
        )
    if spec["config"] and not problems:
        config_problem = _read_config(spec["config"])
        if config_problem:
            problems.append(config_problem)
    if not problems or problems[0][0] == "config":
        kind, problem = _resolve(spec)
        if problem:
            problems.append(problem)
    sys.stdout.write("\n" + MARKER + json.dumps({"kind": kind, "problems": problems}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
