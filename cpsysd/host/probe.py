"""The import probe of :mod:`cpsysd.host.preflight`, run as a script in the app's OWN interpreter.

Its source is passed with ``python -c`` (not run by path: that would put this package's directory
first on ``sys.path``, ahead of the app's modules), with one JSON argument:
``{"working_directory", "module", "attribute", "kind", "config", "vhosts"}``. It imports nothing
of cpsysd: the interpreter may be a virtualenv that has only the app and CherryPy (``cpsysd
try`` provisions cpsysd into its container itself). It does what ``cpsysd serve`` does when the
service starts (:func:`cpsysd.runtime.app.load_app`): read the CherryPy config with CherryPy's own
reader, enter the working directory, import the entry module with that directory first on
``sys.path``, resolve the object, tell its kind the same way and create the root object. It also
reports where sessions are turned on and how they are stored (the config file's sections and the
root's ``_cp_config``, read with CherryPy's classes: ``storage_class`` is a Python expression), for
the warnings of :mod:`cpsysd.host.sessions`. The verdict is the last line of stdout that starts
with :data:`MARKER` (the app may print too).
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


def _read_config(path: str) -> tuple[dict[str, Any], Problem | None]:
    try:
        from cherrypy.lib import reprconf
    except ImportError as err:
        return {}, ("python", f"cannot import cherrypy: {err}", "install CherryPy into python")
    try:
        return reprconf.Parser().dict_from_file(path), None
    except OSError as err:
        hint = "create it, or fix config"
        return {}, ("config", f"cannot read {path}: {err.strerror or err}", hint)
    except Exception as err:  # reprconf evaluates values as Python expressions
        return {}, ("config", f"{path} does not parse: {type(err).__name__}: {err}", "fix the file")


SESSIONS = "tools.sessions."


def _storage(settings: dict[str, Any]) -> str:
    """How CherryPy 18's ``sessions.init`` would store sessions with these settings: ``ram``
    (its default), ``file`` or ``other`` (memcached, the app's own class)."""
    from cherrypy.lib import sessions

    storage = settings.get(SESSIONS + "storage_class", sessions.RamSession)
    if settings.get(SESSIONS + "storage_type"):  # deprecated, but still wins over the class
        storage = getattr(
            sessions, str(settings[SESSIONS + "storage_type"]).title() + "Session", None
        )
    if isinstance(storage, type) and issubclass(storage, sessions.FileSession):
        return "file"
    if isinstance(storage, type) and issubclass(storage, sessions.RamSession):
        return "ram"
    return "other"


def _session_uses(config: dict[str, Any], obj: object) -> list[dict[str, Any]]:
    """Every place that turns sessions on, with the storage it ends up with. The layers,
    lowest precedence first, as CherryPy merges them for a request: the config file's
    [global], the root's and its handlers' ``_cp_config``, the file's [/] and path sections.
    Settings seen only at a request (a tool turned on in code at run time) are not here."""
    layers: list[tuple[str, dict[str, Any]]] = [("config [global]", config.get("global", {}))]
    app_config: dict[str, Any] = {}
    if type(obj).__name__ == "Application" and hasattr(obj, "root"):
        app_config, obj = dict(getattr(obj, "config", {})), obj.root
    holder = obj if isinstance(obj, type) else type(obj)
    layers.append((f"{holder.__name__}._cp_config", dict(getattr(obj, "_cp_config", {}))))
    for name in dir(holder):
        handler = getattr(holder, name, None)
        if not name.startswith("_") and _exposed(handler):
            where = f"{holder.__name__}.{name}._cp_config"
            layers.append((where, dict(getattr(handler, "_cp_config", {}))))
    for source, sections in (("the app's config", app_config), ("config", config)):
        for section in sorted(key for key in sections if key.startswith("/")):
            layers.append((f"{source} [{section}]", dict(sections[section])))
    uses = []
    for index, (where, settings) in enumerate(layers):
        if not settings.get(SESSIONS + "on"):
            continue
        base = [layer for layer in layers[2:] if layer[0].endswith("[/]")]
        merged: dict[str, Any] = {}
        for _, lower in [*layers[:2], *base, layers[index]]:
            merged.update({k: v for k, v in lower.items() if k.startswith(SESSIONS)})
        path = merged.get(SESSIONS + "storage_path")
        uses.append({"where": where, "storage": _storage(merged), "path": path and str(path)})
    return uses


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


def _resolve(spec: dict[str, Any]) -> tuple[str | None, Any, Problem | None]:
    """The kind the entry object is served as and the object, or the problem with it."""
    entry = f"{spec['module']}:{spec['attribute']}"
    obj, problem = _import(spec["module"], spec["working_directory"])
    if problem:
        return None, None, problem
    for part in spec["attribute"].split("."):
        if not hasattr(obj, part):
            return (
                None,
                None,
                ("entry", f"{spec['module']!r} has no attribute {part!r}", "fix entry"),
            )
        obj = getattr(obj, part)
    import cherrypy  # the service imports it (cheroot serves every kind)

    root_like = isinstance(obj, (cherrypy.Application, type)) or _looks_like_cherrypy_root(obj)
    kind = spec["kind"]
    if kind == "auto":
        kind = "cherrypy" if root_like else "wsgi" if callable(obj) else ""
    if not kind:
        kind_hint = 'point entry at the root or the WSGI app, or set kind = "cherrypy"'
        return None, None, ("entry", f"{entry} is neither a CherryPy root nor callable", kind_hint)
    if kind == "wsgi" and not callable(obj):
        return (
            None,
            None,
            ("kind", f"{entry} is not callable, so it is no WSGI app", 'set kind = "auto"'),
        )
    if kind == "cherrypy" and not root_like:
        hint = 'set kind = "wsgi" (or "auto"), or expose handlers with @cherrypy.expose'
        return None, None, ("kind", f"{entry} is no CherryPy root: nothing in it is exposed", hint)
    if kind == "wsgi" and spec["vhosts"]:
        hint = "remove vhosts, or route domains in the WSGI app"
        return None, None, ("vhosts", "need a CherryPy app, but the entry is a WSGI callable", hint)
    if kind == "cherrypy" and isinstance(obj, type):
        try:
            obj()  # cpsysd serve creates the root object from the class without arguments
        except Exception as err:
            return None, None, ("entry", f"{entry}() failed: {type(err).__name__}: {err}", "fix it")
    return kind, obj, None


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
    config: dict[str, Any] = {}
    if spec["config"] and not problems:
        config, config_problem = _read_config(spec["config"])
        if config_problem:
            problems.append(config_problem)
    sessions: list[dict[str, Any]] = []
    if not problems or problems[0][0] == "config":
        kind, obj, problem = _resolve(spec)
        if problem:
            problems.append(problem)
        elif kind == "cherrypy":
            sessions = _session_uses(config, obj)
    verdict = {"kind": kind, "problems": problems, "sessions": sessions}
    sys.stdout.write("\n" + MARKER + json.dumps(verdict) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
