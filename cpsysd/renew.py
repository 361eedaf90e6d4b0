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

Rendering is pure; only :func:`renew_from_description` touches files and runs systemctl.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cpsysd import escape
from cpsysd.errors import SpecError, TLSError
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
            # ReadWritePaths= cannot reach into a ProtectHome=yes tree (systemd.exec(5)).
            protect_home="read-only" if any(_under_home(path) for path in writable) else "yes",
            user_mode=options.user_mode,
        ),
    }


def _under_home(path: str) -> bool:
    return any(path == top or path.startswith(top + "/") for top in ("/home", "/root", "/run/user"))


def restart_target(spec: AppSpec) -> str:
    """What a renewal restarts: the service, or every worker instance (``NAME@*.service``)."""
    return f"{spec.name}@*.service" if spec.workers > 1 else f"{spec.name}.service"


def renew_certificate(
    tls: TLSConfig, force: bool = False, now: datetime.datetime | None = None
) -> tuple[bool, str]:
    """Re-issue ``tls.cert`` and ``tls.key`` (and the chain for a CA) when due; returns
    ``(renewed, one-line report)``. A new key every time, of the current key's type."""
    from cpsysd import certfiles
    from cpsysd.tls import Certificate, KeyType
    from cpsysd.tlscert import key_type_of, utc_now

    cert_path, key_path = Path(tls.cert), Path(tls.key)
    chain_path = _chain_path(tls)
    for path in (cert_path, key_path, *([Path(chain_path)] if chain_path else [])):
        certfiles.sweep_stale_staging(path)  # a killed earlier run's; also when not due
    current = None
    if cert_path.exists():
        current = Certificate.list_from_pem(cert_path.read_bytes(), str(cert_path))[0]
        left = current.not_after - (now or utc_now())
        due = left <= datetime.timedelta(days=tls.renew_days)
        if not force and not due and _key_matches(key_path, current):
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
            force=True,
            chain=Path(chain) if chain else None,
        )
    else:
        leaf = certfiles.make_self_signed(cert_path, key_path, hosts, key_type, days, force=True)
    return True, f"renewed {cert_path}: {certfiles.summary(leaf.certificate)}"


def _key_matches(key_path: Path, cert: Certificate) -> bool:
    """False when the key is missing or is not the certificate's: a run killed between the
    key's and the certificate's rename leaves a new key beside the old certificate, which the
    app cannot load, so renewing then repairs the pair. A key that cannot be read without a
    passphrase counts as matching (it cannot be checked here)."""
    from cpsysd.tls import PrivateKey

    try:
        key = PrivateKey.from_pem(key_path.read_bytes(), source=str(key_path))
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
