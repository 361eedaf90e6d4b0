"""``cpsysd try``: the app under a real systemd in an ephemeral container
(cpsysd.harness.trying)."""

from __future__ import annotations

from pathlib import Path

import typer

from cpsysd.cli.options import config_option, load_description
from cpsysd.cli.units import print_warnings
from cpsysd.errors import CpsysdError

JOURNAL_LINES = 15


def register(app: typer.Typer) -> None:
    """Add ``cpsysd try`` to ``app``."""

    @app.command("try")
    def try_command(
        config: Path = config_option(),
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

        report = try_app(spec, progress=lambda line: typer.echo(f"try: {line}"), warn=warn)
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
        left = ", ".join(report.leftovers) or "nothing left behind"
        typer.echo(f"teardown         {report.teardown_seconds:.2f} s, {left}")
        if report.problem:
            raise CpsysdError(report.problem, report.hint)
