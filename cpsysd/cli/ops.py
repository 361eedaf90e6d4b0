"""Day-one operations on an installed app: ``cpsysd run``, ``cpsysd status``, ``cpsysd logs``."""

from __future__ import annotations

import sys

import typer

from cpsysd.cli.options import user_option

_NAME_HELP = "The installed app's name (its units are NAME.service or NAME@*.service)."


def register(app: typer.Typer) -> None:
    """Add ``run``, ``status`` and ``logs`` to ``app``."""

    @app.command("run", context_settings={"ignore_unknown_options": True})
    def run(
        name: str = typer.Argument(..., help=_NAME_HELP),
        command: list[str] = typer.Argument(
            ...,
            metavar="-- COMMAND [ARGS]...",
            help="The command; a leading python or python3 is the service's own interpreter.",
        ),
        setenv: list[str] = typer.Option(
            None,
            "-E",
            "--setenv",
            metavar="NAME[=VALUE]",
            help="Add to the command's "
            "environment; NAME alone passes this shell's value (keeps secrets off the command "
            "line). Repeatable.",
        ),
        user: bool = user_option(),
    ) -> None:
        """Run a command the way the installed service runs: its user (the dynamic user too),
        sandbox, environment, credentials, state and working directory. With a terminal when
        one is attached; exits with the command's exit status."""
        from cpsysd.host.oneoff import run_oneoff

        tty = sys.stdin.isatty()
        status = run_oneoff(name, command, user=user, tty=tty, setenv=setenv or ())
        raise typer.Exit(status)

    @app.command("status")
    def status(
        name: str = typer.Argument(..., help=_NAME_HELP),
        lines: int = typer.Option(5, "-n", "--lines", min=0, help="Journal lines per unit."),
        user: bool = user_option(),
    ) -> None:
        """Every unit of the app (instances, sockets, target): state, main PID, STATUS text,
        since when, restarts and the last error lines of its journal. Exit status 1 when any
        unit failed."""
        from cpsysd.host.status import app_status

        report = app_status(name, user=user, lines=lines)
        for line in report.lines():
            typer.echo(line)
        if report.failed:
            raise typer.Exit(1)

    @app.command("logs")
    def logs(
        name: str = typer.Argument(..., help=_NAME_HELP),
        follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new lines."),
        since: str = typer.Option(
            None,
            "--since",
            metavar="TIME",
            help="From TIME on, as journalctl takes it "
            "('1 hour ago', 'today', '2024-05-01 12:00').",
        ),
        lines: int = typer.Option(
            None, "-n", "--lines", min=0, help="The last N lines (default 50 without --since)."
        ),
        user: bool = user_option(),
    ) -> None:
        """The journal of every instance and socket of the app, merged in time, with the
        request fields of access entries."""
        from cpsysd.host.logs import app_logs

        for line in app_logs(name, user=user, follow=follow, since=since, lines=lines):
            typer.echo(line)
