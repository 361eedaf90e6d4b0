"""The Typer application: the root command, error mapping, and the command groups of the other
``cpsysd.cli`` modules."""

from __future__ import annotations

import logging
import sys

import typer

try:  # typer >= 0.22 vendors click; Debian's typer 0.7 uses the click package
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import ClickException  # type: ignore[import-not-found,no-redef]

from cpsysd import __version__
from cpsysd.errors import ERROR_PREFIX, CpsysdError

app = typer.Typer(
    name="cpsysd",
    help="Run CherryPy (and any WSGI) applications the systemd way: hardened units, socket "
    "activation, sd_notify, journald and TLS, from one description file (cpsysd.toml).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cpsysd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Show tracebacks and the commands run (also CPSYSD_DEBUG=1)."
    ),
) -> None:
    """Options that apply to every command."""


def _register() -> None:
    # Imported here, not at module top, so each module can register on the finished app.
    from cpsysd.cli import cert, debian, deploy, export, ops, scale, serve, trycmd, units

    for module in (units, serve, cert, trycmd, debian, scale, export, ops, deploy):
        module.register(app)


def fail(message: str) -> int:
    """Print one ``cpsysd: error: ...`` line on stderr; returns the exit code to use."""
    sys.stderr.write(f"{ERROR_PREFIX}{message}\n")
    return 1


def _show_commands() -> None:
    """With --debug, every command cpsysd runs (cpsysd.host.run logs it) goes to stderr."""
    logger = logging.getLogger("cpsysd.command")
    if any(handler.get_name() == "cpsysd-debug" for handler in logger.handlers):
        return  # run() called again in this process (tests)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("cpsysd-debug")
    handler.setFormatter(logging.Formatter("cpsysd: debug: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def run(argv: list[str], debug: bool = False) -> int:
    """Run the command line ``argv``; return the process exit code."""
    if debug:
        _show_commands()
    _register()
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="cpsysd", standalone_mode=False)
    except CpsysdError as err:
        if debug:
            raise
        fail(err.one_line())
        return err.exit_code
    except typer.Exit as err:
        return int(err.exit_code)
    except ClickException as err:
        err.show()
        return int(err.exit_code)
    except typer.Abort:
        return fail("interrupted") and 130
    except KeyboardInterrupt:
        return fail("interrupted") and 130
    except Exception as err:
        if debug:
            raise
        return (
            fail(f"unexpected {type(err).__name__}: {err} (run again with --debug for a traceback)")
            and 70
        )
    return result if isinstance(result, int) else 0
