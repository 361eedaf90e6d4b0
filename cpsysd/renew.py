"""Renewal of an app's local TLS certificate: ``NAME-cert-renew.timer`` and its service.

When ``[tls] renew_days`` is above 0, :func:`render_renew_units` adds a timer (twice a day) and
a oneshot service running ``cpsysd cert renew -c DESCRIPTION``. That command
(:func:`renew_from_description`) re-issues the certificate when it expires within
``renew_days`` days, from ``[tls] ca_dir`` or self-signed, for ``[tls] hosts`` (or the names of
the current certificate), then restarts the app's service if it runs.

Why a restart and not ``systemctl reload``: the service receives key and certificate through
``LoadCredential=``, which systemd copies into ``$CREDENTIALS_DIRECTORY`` when the service
starts; before v260 (``RefreshOnReload=credentials``) a reload does not refresh that copy, so
the app would re-read the old files. The sockets belong to systemd, so connections arriving
during the restart wait in the listen backlog instead of being refused, and ``cpsysd serve``
finishes in-flight requests on SIGTERM.

An encrypted key stays encrypted: the new key is written with the passphrase of ``[tls]
passphrase_file``, and a CA key is unlocked with ``[tls] ca_passphrase_file``. The service gets
both as credentials (``tls-key-passphrase``, ``tls-ca-passphrase``), like the app gets the first,
and never on its command line or in its environment; see :func:`renew_credentials`.

Rendering is pure; only :func:`renew_from_description` touches files and runs systemctl.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cpsysd import escape
from cpsysd.errors import SpecError, TLSError
from cpsysd.reach import protect_home_tree
from cpsysd.tlsnames import chain_path_for

if TYPE_CHECKING:
    from cpsysd.render import RenderOptions
    from cpsysd.spec import AppSpec, TLSConfig
    from cpsysd.tls import Certificate


def renew_unit_names(spec: AppSpec) -> tuple[str, str] | None:
    """``(NAME-cert-renew.timer, NAME-cert-renew.service)``, or None without renewal."""
    if spec.tls is None or spec.tls.renew_days <= 0:
        return None
    return f"{spec.name}-cert-renew.timer", f"{spec.name}-cert-renew.service"


def _chain_path(tls: TLSConfig) -> str | None:
    if tls.chain:
        return tls.chain
    if not tls.ca_dir:
        return None
    return str(chain_path_for(Path(tls.cert)))


def renew_credentials(tls: TLSConfig) -> list[str]:
    """``LoadCredential=`` values (``ID:PATH``) of the renewal service: the passphrases only.

    The job runs as root and could open the files itself, but credentials are better: PID 1
    reads them before it builds the sandbox, so a file the sandbox hides (``ProtectHome=yes``)
    still arrives; the job encrypts the new key with exactly the copy the app unlocks it with;
    and the service learns a credential's name, never the secret, on its command line."""
    from cpsysd.credentials import CREDENTIAL_CA_PASSPHRASE, CREDENTIAL_PASSPHRASE

    credentials = []
    if tls.passphrase_file:
        credentials.append(f"{CREDENTIAL_PASSPHRASE}:{tls.passphrase_file}")
    if tls.ca_dir and tls.ca_passphrase_file:
        credentials.append(f"{CREDENTIAL_CA_PASSPHRASE}:{tls.ca_passphrase_file}")
    return credentials


def render_renew_units(spec: AppSpec, options: RenderOptions) -> dict[str, str]:
    """The renewal timer and service for ``spec`` (file name -> text); empty without renewal."""
    from cpsysd.render import MARKER, comment_text, render_template

    names = renew_unit_names(spec)
    if names is None or spec.tls is None:
        return {}
    timer, service = names
    tls = spec.tls
    argv = [spec.python, "-m", "cpsysd", "cert", "renew", "-c", options.description_path]
    if options.user_mode:
        argv.append("--user")
    try:
        exec_start = escape.command_line(argv)
    except ValueError as err:
        raise SpecError("python", str(err)) from None
    outputs = [tls.cert, tls.key, _chain_path(tls)]
    writable = sorted({os.path.dirname(path) for path in outputs if path})
    common = {
        "marker": MARKER,
        "source": comment_text(spec.source or options.description_path),
        "description": escape.escape_specifiers(spec.description),
        "description_path": escape.file_url_path(options.description_path),
        "renew_days": tls.renew_days,
    }
    return {
        timer: render_template("cert-renew.timer.j2", **common),
        service: render_template(
            "cert-renew.service.j2",
            **common,
            timer=timer,
            service=restart_target(spec),
            cert_comment=comment_text(tls.cert),
            issuer=comment_text(f"CA in {tls.ca_dir}" if tls.ca_dir else "self-signed"),
            exec_start=exec_start,
            writable=[escape.escape_specifiers(path) for path in writable],
            credentials=[escape.escape_specifiers(c) for c in renew_credentials(tls)],
            # ReadWritePaths= cannot reach into a ProtectHome=yes tree (systemd.exec(5)).
            protect_home="read-only" if any(map(protect_home_tree, writable)) else "yes",
            user_mode=options.user_mode,
        ),
    }


def restart_target(spec: AppSpec) -> str:
    """What a renewal restarts: the service, or every worker instance (``NAME@*.service``)."""
    return f"{spec.name}@*.service" if spec.workers > 1 else f"{spec.name}.service"


def renew_certificate(
    tls: TLSConfig, force: bool = False, now: datetime.datetime | None = None
) -> tuple[bool, str]:
    """Re-issue ``tls.cert`` and ``tls.key`` (and the chain for a CA) when due; returns
    ``(renewed, one-line report)``. A new key every time, of the current key's type, encrypted
    with the key's passphrase when there is one. The passphrases are read, and an encrypted key
    without one refused, on every run: a timer that will fail when it is due fails today."""
    from cpsysd import certfiles
    from cpsysd.tls import Certificate, KeyType
    from cpsysd.tlscert import key_type_of, utc_now

    cert_path, key_path = Path(tls.cert), Path(tls.key)
    chain_path = _chain_path(tls)
    for path in (cert_path, key_path, *([Path(chain_path)] if chain_path else [])):
        certfiles.sweep_stale_staging(path)  # a killed earlier run's; also when not due
    passphrase, ca_passphrase = _passphrases(tls)
    current = None
    if cert_path.exists():
        current = Certificate.list_from_pem(cert_path.read_bytes(), str(cert_path))[0]
        left = current.not_after - (now or utc_now())
        due = left <= datetime.timedelta(days=tls.renew_days)
        if not force and not due and _key_matches(key_path, current, passphrase):
            return False, (
                f"{cert_path}: not due, expires {current.not_after:%Y-%m-%d} ({left.days} days "
                f"left; renewal {tls.renew_days} days before)"
            )
    hosts = list(tls.hosts) or list(current.hosts if current else ())
    if not hosts:
        raise TLSError(
            f"{cert_path}: no host names to renew for",
            'add hosts = ["example.org", "127.0.0.1"] to [tls] in the description',
        )
    key_type = (key_type_of(current.x509.public_key()) if current else None) or KeyType.EC_P256
    days = max(current.lifetime_days if current else 365, tls.renew_days + 1)
    if tls.ca_dir:
        chain = _chain_path(tls)
        leaf, _ = certfiles.issue_from_ca(
            Path(tls.ca_dir),
            cert_path,
            key_path,
            hosts,
            key_type,
            days,
            passphrase=passphrase,
            ca_passphrase=ca_passphrase,
            force=True,
            chain=Path(chain) if chain else None,
        )
    else:
        leaf = certfiles.make_self_signed(
            cert_path, key_path, hosts, key_type, days, passphrase=passphrase, force=True
        )
    return True, f"renewed {cert_path}: {certfiles.summary(leaf.certificate)}"


def _read_passphrase(path: str | None, credential: str) -> bytes | None:
    """The credential ``credential`` when the job runs in NAME-cert-renew.service (it has
    ``LoadCredential=``), else the file ``path`` (``cpsysd cert renew`` run by hand); None
    when there is neither."""
    from cpsysd.certfiles import read_passphrase

    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and os.path.isfile(os.path.join(directory, credential)):
        return read_passphrase(credential=credential)
    return read_passphrase(path) if path else None


def _encrypted(path: Path) -> bool:
    """Whether a PEM key file is encrypted (PKCS#8 ``ENCRYPTED PRIVATE KEY`` or the
    traditional ``Proc-Type: 4,ENCRYPTED``); False when it is missing or unreadable."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return False
    marks = (b"-----BEGIN ENCRYPTED ", b"Proc-Type: 4,ENCRYPTED")
    return any(line.startswith(marks) for line in lines)


def _passphrases(tls: TLSConfig) -> tuple[bytes | None, bytes | None]:
    """``(key passphrase, CA key passphrase)``. Refuses to go on without a passphrase for an
    encrypted key (the renewal would write the new key unencrypted) or an encrypted CA key."""
    from cpsysd.certfiles import CA_KEY_NAME
    from cpsysd.credentials import CREDENTIAL_CA_PASSPHRASE, CREDENTIAL_PASSPHRASE

    passphrase = _read_passphrase(tls.passphrase_file, CREDENTIAL_PASSPHRASE)
    if passphrase is None and _encrypted(Path(tls.key)):
        raise TLSError(
            f"{tls.key} is encrypted, and a renewal would write the new key unencrypted",
            "set [tls] passphrase_file to the file holding its passphrase",
        )
    ca_passphrase = None
    if tls.ca_dir:
        ca_passphrase = _read_passphrase(tls.ca_passphrase_file, CREDENTIAL_CA_PASSPHRASE)
        ca_key = Path(tls.ca_dir) / CA_KEY_NAME
        if ca_passphrase is None and _encrypted(ca_key):
            raise TLSError(
                f"the CA key {ca_key} is encrypted",
                "set [tls] ca_passphrase_file to the file holding its passphrase",
            )
    return passphrase, ca_passphrase


def _key_matches(key_path: Path, cert: Certificate, passphrase: bytes | None = None) -> bool:
    """False when the key is missing or is not the certificate's: a run killed between the
    key's and the certificate's rename leaves a new key beside the old certificate, which the
    app cannot load, so renewing then repairs the pair. A key that cannot be read (with
    ``passphrase``, if any) counts as matching: it cannot be checked here."""
    from cpsysd.tls import PrivateKey

    try:
        key = PrivateKey.from_pem(key_path.read_bytes(), passphrase, source=str(key_path))
    except FileNotFoundError:
        return False
    except (OSError, TLSError):
        return True
    return key.matches(cert)


def renew_from_description(
    description: Path, force: bool = False, restart: bool = True, user: bool = False
) -> str:
    """``cpsysd cert renew``: renew the certificate of the app described in ``description``
    when due, then ``systemctl try-restart`` its service (it only restarts a running one)."""
    from cpsysd.spec import load_spec

    spec = load_spec(description)
    if spec.tls is None:
        raise TLSError(f"{description} has no [tls] table", "nothing to renew")
    renewed, report = renew_certificate(spec.tls, force)
    if renewed and restart:
        from cpsysd.systemctl import systemctl

        systemctl("try-restart", restart_target(spec), user=user)
        report += f"; restarted {restart_target(spec)}"
    return report
