"""Commands that turn a description into units: init, generate, verify, install, uninstall."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cpsysd.cli.options import config_option, force_option, load_description, user_option
from cpsysd.description.docs import flag_help
from cpsysd.errors import WARNING_PREFIX

if TYPE_CHECKING:
    from cpsysd.host.install import InstallReport


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(
        name: str = typer.Option(..., "--name", help=flag_help("name")),
        entry: str = typer.Option(..., "--entry", help=flag_help("entry")),
        listen: list[str] = typer.Option(
            None,
            "--listen",
            help=flag_help("listen", "Repeatable. "),
        ),
        no_network: bool = typer.Option(
            False, "--no-network", help=flag_help("network", "Write network = false. ")
        ),
        output: Path = typer.Option(
            Path("cpsysd.toml"),
            "-o",
            "--output",
            help="Where to write the description ('-' prints it).",
        ),
        config: str = typer.Option(None, "--config", help=flag_help("config")),
        python: str = typer.Option(
            None,
            "--python",
            help=flag_help("python"),
        ),
        working_directory: str = typer.Option(
            None,
            "--working-directory",
            help=flag_help("working_directory"),
        ),
        tls_cert: str = typer.Option(
            None, "--tls-cert", help=flag_help("tls.cert", "[tls] cert: ")
        ),
        tls_key: str = typer.Option(None, "--tls-key", help=flag_help("tls.key", "[tls] key: ")),
        force: bool = force_option(help="Overwrite an existing description file."),
    ) -> None:
        """Write a commented cpsysd.toml describing an app."""
        from cpsysd.host.initfile import InitRequest, write_init

        request = InitRequest(
            name=name,
            entry=entry,
            listen=tuple(listen or ()),
            network=not no_network,
            config=config,
            python=python,
            working_directory=working_directory,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
        text = write_init(request, None if str(output) == "-" else output, force=force)
        if str(output) == "-":
            typer.echo(text, nl=False)
        else:
            typer.echo(f"wrote {output}; next: cpsysd verify -c {output}")

    @app.command("generate")
    def generate(
        config: Path = config_option(),
        output: str = typer.Option(
            ..., "-o", "--output", help="Directory for the unit files, or '-' to print them."
        ),
        user: bool = user_option(),
        target: str = typer.Option(
            "systemd",
            "--target",
            help="systemd (unit files) or supervisord (a [program:] section).",
        ),
        description_path: str = typer.Option(
            None,
            "--description-path",
            help="The description the service reads at run time (default: the -c file).",
        ),
    ) -> None:
        """Render NAME.service and NAME.socket (and any extras) into a directory."""
        from cpsysd.host.generating import generate_files

        spec = load_description(config)
        files = generate_files(
            spec, target=target, user_mode=user, description_path=description_path
        )
        if output == "-":
            for index, (fname, text) in enumerate(files.items()):
                typer.echo(("\n" if index else "") + f"# ---- {fname} ----\n{text}", nl=False)
            return
        from cpsysd.host.generating import write_files

        for path in write_files(files, Path(output)):
            typer.echo(f"wrote {path}")

    @app.command("verify")
    def verify(
        config: Path = config_option(),
        max_exposure: float = typer.Option(
            None,
            "--max-exposure",
            help="Fail above this systemd-analyze security score "
            "(default 0.3 without network, 0.9 with it).",
        ),
        no_preflight: bool = typer.Option(
            False,
            "--no-preflight",
            help="Check only the units, not that the app starts (importing it with its python, "
            "reading its config and TLS files): for units verified on another machine than the "
            "one they will run on, where the app and its files are not.",
        ),
    ) -> None:
        """Prove the app starts (preflight), then check the generated units with systemd-analyze
        verify and security --offline."""
        from cpsysd.host.verify import verify_app

        spec = load_description(config)
        report = verify_app(spec, max_exposure, preflight=not no_preflight)
        if report.preflight is not None:
            typer.echo(
                f"preflight: {spec.entry} imports as a {report.preflight.kind} app "
                f"({report.preflight.imported_as}, {spec.python})"
            )
            print_warnings(report.preflight.warnings)
        for unit, score in report.exposures.items():
            typer.echo(f"{unit}: verified, exposure {score:.1f}")
        typer.echo(f"exposure {report.exposure:.1f}")

    @app.command("install")
    def install(
        name: str = typer.Argument(..., help="The app's name (its description's name)."),
        config: Path = config_option(by_name=True),
        user: bool = user_option(),
        root: Path = typer.Option(
            None,
            "--root",
            help="Install under this directory (package and image builds); calls no systemctl.",
        ),
        vendor: bool = typer.Option(
            False,
            "--vendor",
            help="Use the package unit directory /lib/systemd/system, not /etc/systemd/system.",
        ),
        no_start: bool = typer.Option(
            False, "--no-start", help="Write and reload, but do not enable or start the sockets."
        ),
        force: bool = force_option(help="Replace unit files that cpsysd did not write."),
    ) -> None:
        """Write the units, reload systemd and enable --now the sockets. Idempotent."""
        from cpsysd.host.install import InstallTarget
        from cpsysd.host.install import install as do_install

        spec = load_description(config, name)
        report = do_install(
            spec,
            InstallTarget(root=root, user=user, vendor=vendor, start=not no_start, force=force),
        )
        _print_report(report)
        if report.enabled:
            typer.echo(f"enabled and started {' '.join(report.enabled)}")

    @app.command("uninstall")
    def uninstall(
        name: str = typer.Argument(..., help="The app's name."),
        user: bool = user_option(),
        root: Path = typer.Option(
            None, "--root", help="Uninstall from this directory tree; calls no systemctl."
        ),
        vendor: bool = typer.Option(
            False, "--vendor", help="The units were installed with --vendor."
        ),
        releases: bool = typer.Option(
            False, "--releases", help="Also delete the releases cpsysd deploy kept."
        ),
    ) -> None:
        """Stop, disable and remove exactly what install (and deploy) wrote."""
        from cpsysd.host.install import InstallTarget
        from cpsysd.host.install import uninstall as do_uninstall

        target = InstallTarget(root=root, user=user, vendor=vendor)
        _print_report(do_uninstall(name, target, purge_releases=releases))


def print_warnings(warnings: Sequence[str]) -> None:
    """Each warning on stderr as ``cpsysd: warning: ...`` (verify, install, try)."""
    # On stderr, one line each: the command still succeeds (the app starts), and its stdout
    # stays what scripts read.
    for warning in warnings:
        typer.echo(f"{WARNING_PREFIX}{warning}", err=True)


def _print_report(report: InstallReport) -> None:
    print_warnings(report.warnings)
    for path in report.written:
        typer.echo(f"wrote {path}")
    for path in report.unchanged:
        typer.echo(f"unchanged {path}")
    for path in report.removed:
        typer.echo(f"removed {path}")
    for note in report.notes:
        typer.echo(f"note: {note}")
