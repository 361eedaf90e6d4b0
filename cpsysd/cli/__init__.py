"""The ``cpsysd`` command. Only argument parsing lives under ``cpsysd.cli``: each command calls
one library function and maps :class:`~cpsysd.errors.CpsysdError` to one line on stderr and an
exit code (a traceback only with ``--debug`` or ``CPSYSD_DEBUG=1``).

``cpsysd serve`` is dispatched before Typer is imported: it is the services' ExecStart and its
start-up time is the app's cold-start time.
"""

from __future__ import annotations

import os
import sys


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("CPSYSD_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cpsysd`` console script and of ``python -m cpsysd``."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    args = [arg for arg in args if arg != "--debug"]
    if args[:1] == ["serve"]:
        from cpsysd.runtime.main import serve_main

        sys.exit(serve_main(args[1:], debug=debug))
    from cpsysd.cli.app import run

    sys.exit(run(args, debug=debug))
