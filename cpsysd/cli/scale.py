"""Commands for more than one process: ``cpsysd restart`` (rolling) and ``cpsysd nginx``."""

from __future__ import annotations

from pathlib import Path

import typer

from cpsysd.cli.options import config_option, load_description, user_option


def register(app: typer.Typer) -> None:
    """Add ``restart`` and ``nginx`` to ``app``."""

    @app.command("restart")
    def restart(
        name: str = typer.Argument(..., help="The app's name (its units are NAME@*.service)."),
        user: bool = user_option(),
    ) -> None:
        """Restart the app's instances one at a time, each READY before the next: no request
        is refused meanwhile (the sockets stay open in systemd)."""
        from cpsysd.host.restart import rolling_restart

        for item in rolling_restart(name, user=user):
            typer.echo(f"restarted {item.unit} (pid {item.old_pid} -> {item.new_pid})")

    @app.command("nginx")
    def nginx(
        config: Path = config_option(note="It needs an [nginx] table."),
        output: str = typer.Option(
            "-", "-o", "--output", help="Where to write the site ('-' prints it)."
        ),
        listen_host: list[str] = typer.Option(
            None,
            "--listen-host",
            help="Address nginx listens on, e.g. 127.0.0.1 or [::1]; repeatable. "
            "Default: every IPv4 and IPv6 address.",
        ),
    ) -> None:
        """Write an nginx site (upstream of the instances, server blocks, static files, TLS)
        to include from nginx's http{} context."""
        from cpsysd.targets.nginx import DEFAULT_LISTEN_HOSTS, render_site, write_site

        text = render_site(load_description(config), tuple(listen_host or DEFAULT_LISTEN_HOSTS))
        if output == "-":
            typer.echo(text, nl=False)
            return
        write_site(text, Path(output))
        typer.echo(f"wrote {output}; check it with nginx -t, then reload nginx")
