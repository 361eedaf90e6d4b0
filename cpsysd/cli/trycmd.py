"""``cpsysd try``: the app under a real systemd in an ephemeral container
(cpsysd.harness.trying)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from cpsysd.cli.options import config_option, load_description
from cpsysd.cli.units import print_warnings
from cpsysd.errors import CpsysdError

if TYPE_CHECKING:
    from cpsysd.harness.trydemos import DeployShow, IdleShow

JOURNAL_LINES = 15


def register(app: typer.Typer) -> None:
    """Add ``cpsysd try`` to ``app``."""

    @app.command("try")
    def try_command(
        config: Path = config_option(),
        deploy: Optional[Path] = typer.Option(  # noqa: UP045 (typer 0.7, cli/cert.py)
            None,
            "--deploy",
            metavar="DIR_OR_FILE",
            help="Then show a deploy: the app as release 1, then DIR_OR_FILE (the next "
            "version's working directory, or its description) as release 2 while 4 clients "
            "loop on the app; prints requests ok/failed and whether the answers changed.",
        ),
        show_idle: bool = typer.Option(
            False,
            "--show-idle",
            help="Then show the idle stop (the description needs idle_stop_sec): wait until "
            "the service exits, print its memory before and after and the wait of the next "
            "request, which starts it again.",
        ),
    ) -> None:
        """Install and start the app under a real systemd, in an ephemeral container (needs
        root and Linux namespaces): socket activation, DynamicUser, the sandbox, the journal.
        The app gets the packages of the description's python; cpsysd is the one running here.
        Prints the status, the first journal lines, the first-request latency and the exposure
        score; nothing on this machine is changed."""
        from cpsysd.harness.trying import service_units, try_app

        spec = load_description(config)
        warned: list[str] = []  # the preflight's here, before the boot

        def warn(line: str) -> None:
            warned.append(line)
            print_warnings([line])

        report = try_app(
            spec,
            progress=lambda line: typer.echo(f"try: {line}"),
            warn=warn,
            deploy=deploy,
            idle=show_idle,
        )
        # install inside runs the preflight on the copy, which this machine may not have read
        print_warnings([line for line in report.warnings if line not in warned])
        typer.echo(report.install_output.rstrip())
        if report.first_request_seconds is not None:
            typer.echo(f"first request: HTTP {report.http_status} from {report.url}")
            typer.echo(report.body.rstrip())
        typer.echo("")
        typer.echo(report.status.rstrip())
        typer.echo("")
        shown = min(JOURNAL_LINES, len(report.journal))
        typer.echo(
            f"journal of {', '.join(service_units(spec))} "
            f"(first {shown} of {len(report.journal)} lines):"
        )
        for line in report.journal[:JOURNAL_LINES]:
            typer.echo(f"  {line}")
        typer.echo("")
        typer.echo(f"boot             {report.boot_seconds:.2f} s")
        typer.echo(f"install          {report.install_seconds:.2f} s")
        if report.first_request_seconds is not None:
            how = (
                f"the instances were started by {spec.name}.target at install"
                if spec.workers > 1
                else "socket activation: service start included"
            )
            typer.echo(f"first request    {report.first_request_seconds * 1000:.0f} ms ({how})")
        typer.echo(f"exposure         {report.exposure or 'unknown'} (systemd-analyze security)")
        if report.idle is not None:
            _echo_idle(report.idle)
        if report.deploy is not None:
            _echo_deploy(report.deploy)
        left = ", ".join(report.leftovers) or "nothing left behind"
        typer.echo(f"teardown         {report.teardown_seconds:.2f} s, {left}")
        if report.problem:
            raise CpsysdError(report.problem, report.hint)


def _echo_idle(idle: IdleShow) -> None:
    if idle.problem is not None and not idle.stopped_after:
        return
    typer.echo(f"idle stop        {idle.unit} exited {idle.stopped_after:.1f} s after the last "
               f"request; restarts {idle.restarts}")  # fmt: skip
    after = "no process" if idle.pid_after == 0 else f"PID {idle.pid_after} still there"
    typer.echo(f"memory           {idle.rss_kib / 1024:.1f} MiB while running (VmRSS), "
               f"{after} once idle")  # fmt: skip
    if idle.http_status:
        typer.echo(f"after idle       {idle.wait_seconds * 1000:.0f} ms to the first answer, "
                   f"HTTP {idle.http_status} (socket activation: a cold start)")  # fmt: skip


def _echo_deploy(shown: DeployShow) -> None:
    if shown.first:
        typer.echo(f"release 1        {shown.first}")
    if not (shown.ok or shown.failed):
        return
    typer.echo(f"release 2        {shown.second or 'not live'} ({shown.seconds:.1f} s under load)")
    errors = f" ({'; '.join(shown.errors)})" if shown.failed else ""
    typer.echo(f"requests         {shown.ok} ok, {shown.failed} failed{errors} "
               "(4 clients in a loop, a new connection each)")  # fmt: skip
    typer.echo(f"answers before   {' | '.join(shown.before) or 'none'}")
    typer.echo(f"answers after    {' | '.join(shown.after) or 'none'}")
    typer.echo(f"answers changed  {'yes' if shown.changed else 'no'}")
