"""``cpsysd deploy``, ``rollback`` and ``releases`` (:mod:`cpsysd.host.deploy`)."""

from __future__ import annotations

from pathlib import Path

import typer

from cpsysd.cli.options import config_option, load_description

_GRACE_HELP = "Seconds the new release must stay up before the old one is stopped."


def register(app: typer.Typer) -> None:
    """Add ``deploy``, ``rollback`` and ``releases`` to ``app``."""

    @app.command("deploy")
    def deploy(
        config: Path = config_option(),
        grace: float = typer.Option(3.0, "--grace", min=0, help=_GRACE_HELP),
        keep: int = typer.Option(5, "--keep", min=2, help="Releases kept on disk."),
    ) -> None:
        """Make a release of the app's code and swap it in behind the health gate: the old
        release serves until the new one is READY, then finishes its requests and stops."""
        from cpsysd.host.deploy import deploy as run_deploy

        done = run_deploy(load_description(config), grace=grace, keep=keep)
        typer.echo(f"release {done.live} is live (replaced {done.replaced})")
        if done.pruned:
            typer.echo(f"pruned {', '.join(done.pruned)}")

    @app.command("rollback")
    def rollback(
        name: str = typer.Argument(..., help="The app's name."),
        grace: float = typer.Option(3.0, "--grace", min=0, help=_GRACE_HELP),
    ) -> None:
        """Swap back to the release before the live one, the same health-gated way."""
        from cpsysd.host.deploy import rollback as run_rollback

        done = run_rollback(name, grace=grace)
        typer.echo(f"release {done.live} is live again (replaced {done.replaced})")

    @app.command("releases")
    def releases(name: str = typer.Argument(..., help="The app's name.")) -> None:
        """List the app's releases: id, when, made from which directory, which is live."""
        from cpsysd.host.deploy import release_table

        for release_id, created, source, mark in release_table(name):
            typer.echo(f"{release_id}\t{created}\t{source}\t{mark}".rstrip())
