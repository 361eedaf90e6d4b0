"""``cpsysd debian``: write the maintainer scripts of an app's Debian package."""

from __future__ import annotations

from pathlib import Path

import typer

from cpsysd.cli.options import config_option, force_option, load_description


def register(app: typer.Typer) -> None:
    """Add ``cpsysd debian`` to ``app``."""

    @app.command("debian")
    def debian(
        config: Path = config_option(
            note="The package installs it; it must set working_directory and python."
        ),
        output: Path = typer.Option(
            Path("debian"), "-o", "--output", help="The package's debian/ directory."
        ),
        package: str = typer.Option(
            None, "--package", "-p", help="The binary package's name (default: the app's name)."
        ),
        description_path: str = typer.Option(
            None,
            "--description-path",
            help="Where the package installs the description (default /etc/cpsysd/NAME.toml).",
        ),
        admin_units: bool = typer.Option(
            False,
            "--admin-units",
            help="Install the units into /etc/systemd/system instead of the package unit "
            "directory /lib/systemd/system.",
        ),
        no_triggers: bool = typer.Option(
            False,
            "--no-triggers",
            help="No dpkg trigger: do not rewrite units and restart when cpsysd is upgraded.",
        ),
        force: bool = force_option(help="Replace scripts in the output that cpsysd did not write."),
    ) -> None:
        """Write PACKAGE.postinst, .prerm, .postrm (with #DEBHELPER#) and .triggers.

        postinst (configure): create the TLS key and certificate if missing, cpsysd install
        --no-start, then enable and start the sockets like dh_installsystemd; idempotent.
        prerm (remove): stop sockets and service. postrm: remove the units on remove; on
        purge also enable links, the TLS files it created and cpsysd's state of the app.
        """
        from cpsysd.targets.debian import DebianOptions, write_debian

        spec = load_description(config)
        options = DebianOptions(
            package=package or spec.name,
            description_path=description_path,
            vendor=not admin_units,
            triggers=not no_triggers,
        )
        for path in write_debian(spec, options, output, force=force):
            typer.echo(f"wrote {path}")
