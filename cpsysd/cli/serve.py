"""``cpsysd serve`` as seen by ``cpsysd --help``. The real dispatch happens in
:func:`cpsysd.cli.main` before Typer is imported; this entry exists for help and completeness."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command(
        "serve",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def serve(ctx: typer.Context) -> None:
        """Serve the app on the sockets systemd passes (or binds them itself); the units' ExecStart.
        Run `cpsysd serve --help` for its options."""
        from cpsysd.runtime.main import serve_main

        raise typer.Exit(serve_main(list(ctx.args), debug=False))
