"""``cpsysd cert renew``: re-issue an app's certificate when it is due and restart its service.
The timer and service that run it are rendered by :mod:`cpsysd.render.renew`."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cpsysd.errors import TLSError
from cpsysd.host.renewkeys import _key_matches, _passphrases
from cpsysd.render.releases import RELEASES_DIR
from cpsysd.render.renew import renewal_chain_path, restart_target

if TYPE_CHECKING:
    from cpsysd.description.model import AppSpec, TLSConfig


def renew_certificate(
    tls: TLSConfig, force: bool = False, now: datetime.datetime | None = None
) -> tuple[bool, str]:
    """Re-issue ``tls.cert`` and ``tls.key`` (and the chain for a CA) when due; returns
    ``(renewed, one-line report)``. A new key every time, of the current key's type, encrypted
    with the key's passphrase when there is one. The passphrases are read, and an encrypted key
    without one refused, on every run: a timer that will fail when it is due fails today."""
    from cpsysd.tls import certfiles
    from cpsysd.tls.pki import Certificate, KeyType
    from cpsysd.tls.x509 import key_type_of, utc_now

    cert_path, key_path = Path(tls.cert), Path(tls.key)
    chain_path = renewal_chain_path(tls)
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
        chain = renewal_chain_path(tls)
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


def renew_from_description(
    description: Path, force: bool = False, restart: bool = True, user: bool = False
) -> str:
    """``cpsysd cert renew``: renew the certificate of the app described in ``description``
    when due, then ``systemctl try-restart`` its service (it only restarts a running one)."""
    from cpsysd.description.load import load_spec

    spec = load_spec(description)
    if spec.tls is None:
        raise TLSError(f"{description} has no [tls] table", "nothing to renew")
    if spec.tls.acme is not None:
        from cpsysd.host.acmerenew import renew_acme_certificate

        renewed, report = renew_acme_certificate(spec, force)
    else:
        renewed, report = renew_certificate(spec.tls, force)
    if renewed and restart:
        from cpsysd.host.run import systemctl

        units = units_to_restart(spec, user)
        systemctl("try-restart", *units, user=user)
        report += f"; restarted {' '.join(units)}"
    return report


def units_to_restart(
    spec: AppSpec, user: bool = False, releases_dir: Path = Path(RELEASES_DIR)
) -> tuple[str, ...]:
    """What a renewed certificate restarts (``LoadCredential=`` copies the key only at a start):
    after ``cpsysd deploy`` the live release's units, which serve the app while the install's
    own units stay stopped (``try-restart`` of those would do nothing and the old certificate
    would serve until it expired); else the install's (:func:`restart_target`)."""
    from cpsysd.host.releases import read_state
    from cpsysd.host.restart import app_unit_patterns

    if user or read_state(releases_dir / spec.name).live is None:
        return (restart_target(spec),)
    return app_unit_patterns(spec.name, user, releases_dir)
