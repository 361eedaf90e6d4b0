"""Import the entry point of a description (``module:attribute``), without CherryPy: the
WSGI kind is served on cheroot alone (:mod:`~cpsysd.runtime.lean`), the CherryPy kind through
:mod:`~cpsysd.runtime.app`."""

from __future__ import annotations

import importlib
import sys

from cpsysd.description.load import AppSpec
from cpsysd.errors import CpsysdError


def import_entry(spec: AppSpec) -> object:
    """Import ``spec.entry`` with the working directory first on sys.path."""
    if spec.working_directory not in sys.path:
        sys.path.insert(0, spec.working_directory)
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError as err:
        if err.name is not None and (spec.module + ".").startswith(err.name + "."):
            raise CpsysdError(
                f"cannot import {spec.module!r}: no such module in {spec.working_directory}",
                "check entry and working_directory in the description",
            ) from err
        raise CpsysdError(
            f"importing {spec.module!r} failed: {err}",
            "install the app's dependencies into the interpreter the service uses",
        ) from err
    except Exception as err:
        raise CpsysdError(
            f"importing {spec.module!r} failed: {type(err).__name__}: {err}",
            "run with --debug for the traceback",
        ) from err
    obj: object = module
    for part in spec.attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CpsysdError(
                f"{spec.module!r} has no attribute {spec.attribute!r}",
                "check entry in the description (MODULE:OBJECT)",
            ) from None
    return obj
