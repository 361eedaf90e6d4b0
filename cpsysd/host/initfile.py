"""``cpsysd init``: a commented cpsysd.toml for an entry point, validated before it is written
(the text comes from :mod:`cpsysd.description.initfile`)."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import os
import sys
import tomllib
from pathlib import Path

from cpsysd import fsutil
from cpsysd.description.initfile import InitRequest, render_init
from cpsysd.description.load import parse_spec
from cpsysd.errors import CpsysdError, SpecError

__all__ = ["InitRequest", "render_init", "write_init"]


def _check_module(entry: str, workdir: Path) -> None:
    """The entry's top-level module must be importable from the working directory (or be
    installed for this interpreter): a typo found now, not at the first request."""
    top = entry.split(":", 1)[0].split(".", 1)[0]
    if importlib.machinery.PathFinder.find_spec(top, [str(workdir)]) is not None:
        return
    if importlib.machinery.PathFinder.find_spec(top) is not None:
        return
    raise SpecError(
        "entry",
        f"module {top!r} not found in {workdir}",
        "write the description next to the app, or pass --working-directory",
    )


def write_init(request: InitRequest, output: Path | None, *, force: bool = False) -> str:
    """Validate, then write the description to ``output`` (None: only return the text).

    Without ``--python`` the description names this interpreter, the one that found the app,
    by its absolute path. Left out, ``python`` would default to whichever interpreter runs the
    cpsysd that reads the description later (a root-owned system cpsysd, say), which may not
    have the app's dependencies at all. The path is not resolved: a virtualenv's ``bin/python``
    is a symlink whose target lacks the virtualenv's packages."""
    if request.python is None:
        request = dataclasses.replace(request, python=os.path.abspath(sys.executable))
    text = render_init(request)
    base = output.resolve().parent if output else Path.cwd()
    spec = parse_spec(tomllib.loads(text), str(base))
    _check_module(spec.entry, Path(spec.working_directory))
    if output is not None:
        if output.exists() and not force:
            raise CpsysdError(
                f"{output} exists", "pass --force to overwrite it, or -o another file"
            )
        fsutil.atomic_write(output, text.encode(), 0o644)
    return text
