"""``cpsysd export ansible``: a role and playbook that run the app on a fleet of hosts."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``cpsysd export`` group to ``app``."""
    export = typer.Typer(
        name="export",
        help="Write what other tools need to run the app (export ansible: a fleet of hosts).",
        no_args_is_help=True,
    )
    app.add_typer(export, name="export")

    @export.command("ansible")
    def ansible(
        config: Path = typer.Option(
            Path("cpsysd.toml"), "-c", "--config", help="The app's description (cpsysd.toml)."
        ),
        output: Path = typer.Option(
            ..., "-o", "--output", help="A new or empty directory (or one made by export)."
        ),
        serial: str = typer.Option(
            "1", "--serial", help="App hosts changed at once: a number or a percentage."
        ),
    ) -> None:
        """Write site.yml, an example inventory and a role for inventory groups app and front.

        App hosts get cpsysd in a virtualenv under /opt, the app, its description and secrets
        (cpsysd_secrets, from Ansible Vault), then cpsysd install; changes roll host by host,
        each health-checked, stopping at the first failing host. Front hosts get the nginx site
        of cpsysd nginx with an upstream of every app host.
        """
        from cpsysd.description.load import load_spec
        from cpsysd.host.exporting import export_ansible

        report = export_ansible(load_spec(config), output, serial)
        typer.echo(f"wrote {len(report.written)} files into {output}")
        for path in report.removed:
            typer.echo(f"removed {path}")
        for path in report.private:
            typer.echo(f"note: left out {path}: others may not read it (secrets: cpsysd_secrets)")
        typer.echo(f"next: ansible-playbook -i inventory.ini {output / 'site.yml'}")
