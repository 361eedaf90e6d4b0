"""``cpsysd cert ...``: keys, self-signed certificates, a local CA, CSRs, show, check and renew.

Only argument parsing lives here; the work is done by :mod:`cpsysd.tls.certfiles` (imported inside
each command: cryptography is heavy and no other command should pay for it).
"""

# typer 0.7 (Debian bookworm) understands typing.List/Optional, not list[...] or X | None:
# ruff: noqa: UP006, UP035, UP045
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from cpsysd.cli.options import (
    config_option,
    find_description,
    force_option,
    passphrase_credential_option,
    passphrase_file_option,
    user_option,
)
from cpsysd.errors import CpsysdError

if TYPE_CHECKING:
    from cpsysd.description.model import AppSpec
    from cpsysd.tls.names import KeyType

cert_app = typer.Typer(
    name="cert",
    help="TLS keys and certificates without openssl: self-signed certificates, a local CA that "
    "issues them, CSRs for a public CA, and show/check for scripts and timers. Private keys "
    "are created with mode 0600 and never printed.",
    no_args_is_help=True,
)

_HOSTS_HELP = (
    "DNS names and IP addresses the certificate is for (subjectAltNames). An IP address "
    "becomes an IP SAN; DNS:NAME and IP:ADDRESS force the type."
)
_KEY_TYPE_HELP = "Key type: ec-p256 (default), ec-p384, rsa-2048, rsa-3072 or rsa-4096."
_FORCE_HELP = "Replace existing files (the old key is lost)."


def _key_type(text: str) -> KeyType:
    # Imported when a command runs, not for `cpsysd --help`: ipaddress and the enums cost
    # about a millisecond, which every other command would pay.
    from cpsysd.tls.names import parse_key_type

    return parse_key_type(text)


def _passphrase(file: str | None, credential: str | None) -> bytes | None:
    from cpsysd.tls.certfiles import read_passphrase

    return read_passphrase(file, credential)


@cert_app.command("selfsigned")
def selfsigned(
    hosts: List[str] = typer.Argument(..., metavar="HOST...", help=_HOSTS_HELP),
    cert: str = typer.Option(..., "--cert", metavar="FILE", help="Certificate to write (PEM)."),
    key: str = typer.Option(
        ..., "--key", metavar="FILE", help="Private key to write (PEM, mode 0600)."
    ),
    key_type: str = typer.Option("ec-p256", "--key-type", metavar="TYPE", help=_KEY_TYPE_HELP),
    days: int = typer.Option(365, "--days", metavar="N", help="Validity in days (at least 1)."),
    passphrase_file: Optional[str] = passphrase_file_option(),
    passphrase_credential: Optional[str] = passphrase_credential_option(),
    force: bool = force_option(help=_FORCE_HELP),
) -> None:
    """Create a key and a self-signed server certificate for HOST... (clients must trust the
    certificate itself, e.g. curl --cacert FILE)."""
    from cpsysd.tls import certfiles

    kind = _key_type(key_type)
    secret = _passphrase(passphrase_file, passphrase_credential)
    leaf = certfiles.make_self_signed(Path(cert), Path(key), hosts, kind, days, secret, force)
    typer.echo(f"wrote {key} ({leaf.private_key.description}, mode 0600)")
    typer.echo(f"wrote {cert}: {certfiles.summary(leaf.certificate)}")


@cert_app.command("ca")
def ca(
    directory: str = typer.Option(
        ...,
        "--dir",
        metavar="DIR",
        help="Directory for ca.pem and ca.key (created with mode 0700).",
    ),
    key_type: str = typer.Option("ec-p256", "--key-type", metavar="TYPE", help=_KEY_TYPE_HELP),
    days: int = typer.Option(
        3650, "--days", metavar="N", help="Validity of the CA certificate in days."
    ),
    name: Optional[str] = typer.Option(
        None,
        "--name",
        metavar="TEXT",
        help="Common name of the CA (default: host name and a random tag).",
    ),
    passphrase_file: Optional[str] = passphrase_file_option(),
    passphrase_credential: Optional[str] = passphrase_credential_option(),
    force: bool = force_option(
        help="Replace an existing CA (certificates it issued stop verifying)."
    ),
) -> None:
    """Create a local certificate authority once; `cert issue --ca DIR` then issues server
    certificates from it. Give clients DIR/ca.pem to trust."""
    from cpsysd.tls import certfiles

    kind = _key_type(key_type)
    secret = _passphrase(passphrase_file, passphrase_credential)
    authority = certfiles.create_ca(Path(directory), kind, days, secret, force, name)
    key_path, cert_path = (
        Path(directory) / certfiles.CA_KEY_NAME,
        Path(directory) / certfiles.CA_CERT_NAME,
    )
    typer.echo(f"wrote {key_path} ({authority.private_key.description}, mode 0600)")
    typer.echo(f"wrote {cert_path}: {certfiles.summary(authority.certificate)}")


@cert_app.command("issue")
def issue(
    hosts: List[str] = typer.Argument(..., metavar="HOST...", help=_HOSTS_HELP),
    ca_dir: str = typer.Option(
        ..., "--ca", metavar="DIR", help="The CA directory made by `cpsysd cert ca`."
    ),
    cert: str = typer.Option(
        ...,
        "--cert",
        metavar="FILE",
        help="Certificate to write; the chain goes next to it as NAME.chain.pem.",
    ),
    key: str = typer.Option(
        ..., "--key", metavar="FILE", help="Private key to write (PEM, mode 0600)."
    ),
    chain: Optional[str] = typer.Option(
        None, "--chain", metavar="FILE", help="Write the chain here instead."
    ),
    key_type: str = typer.Option("ec-p256", "--key-type", metavar="TYPE", help=_KEY_TYPE_HELP),
    days: int = typer.Option(365, "--days", metavar="N", help="Validity in days (at least 1)."),
    passphrase_file: Optional[str] = passphrase_file_option(),
    passphrase_credential: Optional[str] = passphrase_credential_option(),
    ca_passphrase_file: Optional[str] = passphrase_file_option(
        "--ca-passphrase-file", help="Passphrase file of an encrypted CA key."
    ),
    ca_passphrase_credential: Optional[str] = passphrase_credential_option(
        "--ca-passphrase-credential", help="Credential holding the CA key's passphrase."
    ),
    force: bool = force_option(help=_FORCE_HELP),
) -> None:
    """Issue a server certificate for HOST... from the local CA: writes the key, the
    certificate and the chain (the CA certificate) next to it."""
    from cpsysd.tls import certfiles

    kind = _key_type(key_type)
    secret = _passphrase(passphrase_file, passphrase_credential)
    ca_secret = _passphrase(ca_passphrase_file, ca_passphrase_credential)
    leaf, chain_path = certfiles.issue_from_ca(
        Path(ca_dir),
        Path(cert),
        Path(key),
        hosts,
        kind,
        days,
        secret,
        ca_secret,
        force,
        Path(chain) if chain else None,
    )
    typer.echo(f"wrote {key} ({leaf.private_key.description}, mode 0600)")
    typer.echo(f"wrote {cert}: {certfiles.summary(leaf.certificate)}")
    typer.echo(f"wrote {chain_path}: issued by {leaf.certificate.issuer}")


@cert_app.command("csr")
def csr(
    hosts: List[str] = typer.Argument(..., metavar="HOST...", help=_HOSTS_HELP),
    key: str = typer.Option(
        ...,
        "--key",
        metavar="FILE",
        help="Private key: used if it exists, else created (mode 0600).",
    ),
    out: str = typer.Option(
        ..., "--out", metavar="FILE", help="Certificate signing request to write (PEM)."
    ),
    key_type: str = typer.Option(
        "ec-p256", "--key-type", metavar="TYPE", help=_KEY_TYPE_HELP + " For a new key."
    ),
    passphrase_file: Optional[str] = passphrase_file_option(),
    passphrase_credential: Optional[str] = passphrase_credential_option(),
    force: bool = force_option(
        help="Replace an existing request file (the key is never replaced)."
    ),
) -> None:
    """Write a certificate signing request for HOST... to hand to a public CA."""
    from cpsysd.tls import certfiles

    kind = _key_type(key_type)
    secret = _passphrase(passphrase_file, passphrase_credential)
    created = certfiles.make_csr(Path(key), Path(out), hosts, kind, secret, force)
    if created:
        typer.echo(f"wrote {key} (new key, mode 0600)")
    typer.echo(f"wrote {out}: request for {' '.join(hosts)}")


@cert_app.command("show")
def show(
    file: Optional[str] = typer.Argument(
        None, metavar="[FILE]", help="A PEM certificate, chain or bundle; none: [tls] cert of -c."
    ),
    config: Optional[Path] = config_option(
        note="With [tls] acme: the CA, its ARI window and the next renewal."
    ),
) -> None:
    """Print subject, names, issuer, validity, key type and SHA-256 fingerprint of each
    certificate in FILE; with -c, also an ACME certificate's CA, ARI window and next renewal."""
    from cpsysd.tls import certfiles

    spec = _tls_description(config) if config is not None or file is None else None
    path = Path(file) if file else Path(spec.tls.cert) if spec and spec.tls else None
    if path is None:
        raise CpsysdError("no certificate to show", "name a FILE, or -c a description with [tls]")
    for line in certfiles.show_lines(path):
        typer.echo(line)
    if spec is not None:
        from cpsysd.host.acmerenew import acme_status

        for line in acme_status(spec)[0]:
            typer.echo(line)


def _tls_description(config: Optional[Path]) -> AppSpec:
    from cpsysd.description.load import load_spec

    spec = load_spec(find_description(config))
    if spec.tls is None:
        raise CpsysdError(f"{spec.source} has no [tls] table", "add [tls] cert and key")
    return spec


@cert_app.command("check")
def check(
    file: str = typer.Argument(
        ..., metavar="FILE", help="The certificate (followed by intermediates, if any)."
    ),
    key: Optional[str] = typer.Option(
        None,
        "--key",
        metavar="FILE",
        help="Check that this private key belongs to the certificate.",
    ),
    ca_file: Optional[str] = typer.Option(
        None,
        "--ca",
        metavar="FILE",
        help="Check that the certificate chains up to a CA in this PEM file.",
    ),
    days: int = typer.Option(
        30,
        "--days",
        metavar="N",
        help="Fail when the certificate expires within N days (0: only when expired).",
    ),
    passphrase_file: Optional[str] = passphrase_file_option(
        help="Passphrase file of an encrypted --key."
    ),
    passphrase_credential: Optional[str] = passphrase_credential_option(
        help="Credential holding the --key passphrase."
    ),
    config: Optional[Path] = config_option(
        note="With [tls] acme: also fail while its renewal is overdue and failing."
    ),
) -> None:
    """Exit non-zero when FILE expires within N days, does not match --key, or does not
    chain up to --ca; for scripts and timers. Prints one line either way."""
    from cpsysd.errors import TLSError
    from cpsysd.tls import certfiles

    secret = _passphrase(passphrase_file, passphrase_credential)
    report = certfiles.check_certificate(
        Path(file),
        Path(key) if key else None,
        Path(ca_file) if ca_file else None,
        days,
        secret,
    )
    if config is not None:
        from cpsysd.host.acmerenew import acme_status

        lines, problem = acme_status(_tls_description(config))
        if problem:
            raise TLSError(f"{file}: {problem}", "see journalctl -u NAME-cert-renew.service")
        renewal = [line.split("renewal:", 1)[1].strip() for line in lines if "renewal:" in line]
        report += "".join(f"; ACME renewal {text}" for text in renewal)
    typer.echo(report)


@cert_app.command("renew")
def renew(
    config: Optional[Path] = config_option(),
    force: bool = force_option(help="Renew even if the certificate is not due."),
    restart: bool = typer.Option(
        True,
        "--restart/--no-restart",
        help="Restart the app's service after renewing (default) so it loads the new files.",
    ),
    user: bool = user_option(),
) -> None:
    """Re-issue the app's certificate (from [tls] ca_dir, or self-signed) for [tls] hosts when
    it expires within [tls] renew_days; run by NAME-cert-renew.timer. An encrypted key stays
    encrypted ([tls] passphrase_file); an encrypted CA key opens with [tls] ca_passphrase_file
    (under the timer's service both are the credentials tls-key-passphrase, tls-ca-passphrase)."""
    from cpsysd.host import renew as renewing

    typer.echo(
        renewing.renew_from_description(
            find_description(config), force=force, restart=restart, user=user
        )
    )


def register(app: typer.Typer) -> None:
    """Add ``cpsysd cert ...`` to the root app."""
    app.add_typer(cert_app, name="cert")
