"""``cpsysd cert renew`` for an ACME certificate (``[tls] acme``): when it is due, and how a
failure is retried.

Due: when there is no certificate, when it is self-signed (the placeholder written below),
when the key does not match it or it lacks a name of ``hosts``, and from the time
:mod:`cpsysd.host.acmeari` plans: a random time inside the CA's suggested window (ARI, RFC
9773) when the CA offers one, else two thirds of its lifetime less a jitter of up to a
fifteenth of the lifetime taken from the serial number (a fleet issued the same day spreads
out, as Let's Encrypt asks; the timer adds its own ``RandomizedDelaySec=``). ``[tls]
renew_days``, when set, is the latest point. An encrypted key (``[tls] passphrase_file``)
stays encrypted with the same passphrase.

First issuance: the CA fetches the http-01 answer from the running app, and an app with a TLS
listener cannot start without a certificate; so the first run writes a short-lived self-signed
placeholder (key 0600 from the first byte), which the app serves until the CA's certificate
replaces it.

Failures keep the old certificate and key (nothing is published before the CA has issued), are
reported in one line, and are retried with a backoff kept beside the certificate in
``CERT.acme-retry``: one hour, doubling to a day, never before the CA's ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from pathlib import Path
from typing import TYPE_CHECKING

from cpsysd.errors import CpsysdError, TLSError
from cpsysd.host.acmeari import RenewalPlan, plan_renewal, recorded_lines, renewal_time

if TYPE_CHECKING:
    from cpsysd.description.model import AppSpec, TLSConfig
    from cpsysd.tls.pki import KeyType
    from cpsysd.tls.x509 import Certificate

BACKOFF_FIRST = datetime.timedelta(hours=1)
BACKOFF_MAX = datetime.timedelta(days=1)
PLACEHOLDER_DAYS = 7


def retry_path(tls: TLSConfig) -> Path:
    return Path(tls.cert + ".acme-retry")


def read_retry(tls: TLSConfig) -> tuple[int, datetime.datetime | None, str]:
    """``(failures so far, not before, last error)``; no file or an unreadable one: none."""
    try:
        state = json.loads(retry_path(tls).read_text())
        when = datetime.datetime.fromisoformat(state["next"])
        return int(state["failures"]), when, str(state["error"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0, None, ""


def next_attempt(
    failures: int, now: datetime.datetime, retry_after: datetime.datetime | None
) -> datetime.datetime:
    """When to try again after ``failures`` failures in a row (the CA's Retry-After wins)."""
    backoff = min(BACKOFF_FIRST * (1 << max(failures - 1, 0)), BACKOFF_MAX)
    return max(now + backoff, retry_after or now)


def _failing_since(tls: TLSConfig, now: datetime.datetime) -> datetime.datetime:
    """The first failure of the current run of failures (kept in the retry state)."""
    try:
        since = json.loads(retry_path(tls).read_text())["since"]
        return datetime.datetime.fromisoformat(since)
    except (OSError, ValueError, KeyError, TypeError):
        return now


def _record_failure(
    spec: AppSpec, failures: int, when: datetime.datetime, error: str, now: datetime.datetime
) -> None:
    """The retry state (root's, 0600), and the failure record the service puts in its STATUS=
    (:mod:`cpsysd.runtime.renewal`): world-readable, like the STATUS= text that shows it."""
    from cpsysd import fsutil

    assert spec.tls is not None
    since = _failing_since(spec.tls, now) if failures > 1 else now
    state = {"failures": failures, "next": when.isoformat(), "error": error}
    state["since"] = since.isoformat()
    fsutil.atomic_write(retry_path(spec.tls), json.dumps(state).encode() + b"\n", 0o600)
    if spec.acme_failure_path is not None:
        record = Path(spec.acme_failure_path)
        line = f"certificate renewal failing since {since:%Y-%m-%d %H:%M} UTC: {error}"
        # Best effort: the CA's error is what the job reports, not a second one about this.
        with contextlib.suppress(CpsysdError):
            fsutil.make_directories(record.parent, 0o755)
            fsutil.atomic_write(record, " ".join(line.split()).encode() + b"\n", 0o644)


def _clear_failure(spec: AppSpec) -> None:
    assert spec.tls is not None
    retry_path(spec.tls).unlink(missing_ok=True)
    if spec.acme_failure_path is not None:
        Path(spec.acme_failure_path).unlink(missing_ok=True)


def _why_replace(
    tls: TLSConfig, current: Certificate | None, passphrase: bytes | None
) -> str | None:
    """Why the certificate needs the CA now whatever its age, or None while it is good."""
    from cpsysd.host.renewkeys import _key_matches

    if current is None:
        return "no certificate yet"
    if current.issuer == current.subject:
        return "self-signed placeholder"
    names = {host.partition(":")[2].lower() for host in current.hosts}  # "DNS:example.org"
    missing = sorted({host.lower() for host in tls.hosts} - names)
    if missing:
        return f"lacks {', '.join(missing)}"
    if not _key_matches(Path(tls.key), current, passphrase):
        return "key does not match"
    return None


def renew_acme_certificate(
    spec: AppSpec, force: bool = False, now: datetime.datetime | None = None
) -> tuple[bool, str]:
    """Renew ``spec``'s ACME certificate when due (or ``force``); ``(renewed, report)``.
    Raises :class:`~cpsysd.tls.acme.AcmeError` naming the cause, the fix and the next try, and
    :class:`~cpsysd.host.acmelock.RenewalRunning` while another job renews it."""
    from cpsysd.host.acmelock import renewal_lock
    from cpsysd.tls.x509 import utc_now

    tls = spec.tls
    if tls is None or tls.acme is None or spec.acme_challenge_dir is None:
        raise TLSError(f"{spec.name} has no ACME certificate", 'set [tls] acme = "letsencrypt"')
    # One job at a time (acmelock.py): the sweep below removes every answer it finds.
    with renewal_lock(tls.cert, f"{spec.name}-cert-renew.service"):
        return _renew_locked(spec, force, now or utc_now())


def _renew_locked(spec: AppSpec, force: bool, now: datetime.datetime) -> tuple[bool, str]:
    from cpsysd.host.renewkeys import _passphrases
    from cpsysd.tls import certfiles
    from cpsysd.tls.acme import AcmeError, AcmeOrder, obtain_certificate, sweep_challenge_answers
    from cpsysd.tls.pki import Certificate

    tls, challenges = spec.tls, spec.acme_challenge_dir
    assert tls is not None
    assert tls.acme is not None
    assert challenges is not None
    cert_path, key_path = Path(tls.cert), Path(tls.key)
    # A job killed between publishing a file and removing its staging copy leaves that copy
    # (the account key's too: it is written once, so no later write would sweep it).
    for path in (cert_path, key_path, Path(tls.account_key_path)):
        certfiles.sweep_stale_staging(path)
    # And its http-01 answers: the order they belonged to is over (one job at a time).
    sweep_challenge_answers(Path(challenges))
    current = None
    if cert_path.exists():
        current = Certificate.list_from_pem(cert_path.read_bytes(), str(cert_path))[0]
    passphrase, _ = _passphrases(tls)
    why = "forced" if force else _why_replace(tls, current, passphrase)
    failures, not_before, last_error = read_retry(tls)
    if not force and not_before is not None and now < not_before:
        # A failed try means it was due; asking the CA anything now, ARI included, would not
        # respect the backoff.
        return False, (
            f"{cert_path}: due ({why or 'the last try failed'}), next try after "
            f"{not_before:%Y-%m-%d %H:%M} UTC ({failures} failed: {last_error})"
        )
    plan: RenewalPlan | None = None
    if why is None and current is not None:
        plan = plan_renewal(tls, current, now)
        if now >= plan.due:
            why = f"due since {plan.due:%Y-%m-%d %H:%M} UTC ({plan.basis})"
    note = f"{cert_path}: {plan.note}\n" if plan is not None and plan.note else ""
    if why is None and current is not None and plan is not None:
        return False, (
            f"{note}{cert_path}: not due, renewal from {tls.acme} after "
            f"{plan.due:%Y-%m-%d %H:%M} UTC ({plan.basis})"
        )
    if current is None:
        write_placeholder(tls, passphrase)
    order = AcmeOrder(
        tls.acme,
        tls.hosts,
        Path(tls.account_key_path),
        Path(challenges),
        tls.acme_email,
        tls.acme_ca_bundle,
        tls.acme_challenge.value,
    )
    try:
        issued = obtain_certificate(order, _key_type(current))
    except AcmeError as err:
        when = next_attempt(failures + 1, now, err.retry_after)
        _record_failure(spec, failures + 1, when, err.message, now)
        also = f" ({plan.note})" if plan is not None and plan.note else ""
        raise AcmeError(
            f"{err.message}; {cert_path} stays as it is, next try after "
            f"{when:%Y-%m-%d %H:%M} UTC{also}",
            err.hint,
            err.retry_after,
        ) from None
    certfiles.write_outputs(
        [
            certfiles.OutputFile(key_path, issued.key.pem(passphrase).bytes(), certfiles.KEY_MODE),
            certfiles.OutputFile(cert_path, issued.fullchain_pem, certfiles.PUBLIC_MODE),
        ],
        force=True,
    )
    _clear_failure(spec)
    leaf = issued.chain[0]
    return True, (
        f"{note}renewed {cert_path} ({why}) from {tls.acme}: {certfiles.summary(leaf)}; "
        f"next renewal after {renewal_time(leaf, tls.renew_days):%Y-%m-%d %H:%M} UTC "
        "(two thirds; the CA's ARI window instead, if it offers one, from the next run)"
    )


def write_placeholder(tls: TLSConfig, passphrase: bytes | None = None) -> bool:
    """Write the self-signed placeholder when there is no certificate yet (the app must start
    to answer the CA); False when there is one. ``install`` calls it before its checks."""
    from cpsysd.tls import certfiles

    if Path(tls.cert).exists():
        return False
    certfiles.make_self_signed(
        Path(tls.cert),
        Path(tls.key),
        list(tls.hosts),
        _key_type(None),
        PLACEHOLDER_DAYS,
        passphrase=passphrase,
        force=True,
    )
    return True


def _key_type(current: Certificate | None) -> KeyType:
    from cpsysd.tls.pki import KeyType
    from cpsysd.tls.x509 import key_type_of

    found = key_type_of(current.x509.public_key()) if current is not None else None
    return found or KeyType.EC_P256


def acme_status(
    spec: AppSpec, now: datetime.datetime | None = None
) -> tuple[list[str], str | None]:
    """What ``cert show -c``/``cert check -c`` add for an ACME certificate: lines (CA, next
    renewal, a failing renewal's last error) and the problem ``check`` fails on, if any: a
    renewal that keeps failing while the certificate is past its renewal time."""
    from cpsysd.tls.pki import Certificate
    from cpsysd.tls.x509 import utc_now

    tls = spec.tls
    if tls is None or tls.acme is None:
        return [], None
    now = now or utc_now()
    lines = [f"  ACME CA:     {tls.acme} ({tls.acme_challenge.value})"]
    cert_path = Path(tls.cert)
    problem = None
    if cert_path.exists():
        leaf = Certificate.list_from_pem(cert_path.read_bytes(), str(cert_path))[0]
        if leaf.issuer == leaf.subject:
            lines.append("  renewal:     due now (a self-signed placeholder)")
            problem = "still the self-signed placeholder: the CA has not issued yet"
        else:
            ari_lines, plan = recorded_lines(tls, leaf)
            lines += ari_lines
            due = plan.due if plan else renewal_time(leaf, tls.renew_days)
            state = "due now" if now >= due else f"after {due:%Y-%m-%d %H:%M} UTC"
            basis = "in the ARI window" if plan else "two thirds"
            lines.append(f"  renewal:     {state} ({basis}; {spec.name}-cert-renew.timer)")
            if now >= due:
                problem = f"past its renewal time {due:%Y-%m-%d %H:%M} UTC"
    failures, not_before, error = read_retry(tls)
    if failures:
        when = f"{not_before:%Y-%m-%d %H:%M} UTC" if not_before else "the next timer run"
        lines.append(f"  last try:    failed {failures}x: {error}; next after {when}")
        if problem:
            problem += f"; renewal failing: {error}"
    elif problem and not failures:
        problem = None  # due, not failing: the timer renews at its next run
    return lines, problem
