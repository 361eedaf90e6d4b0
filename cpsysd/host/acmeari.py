"""When the renewal job renews an ACME certificate: inside the CA's suggested window (ARI,
RFC 9773) when the CA offers one, else at two thirds of its lifetime (:func:`renewal_time`).

The job asks the CA (:mod:`cpsysd.tls.ari`) at most once per ``Retry-After`` and keeps what it
learned beside the certificate, next to the retry state, in ``CERT.acme-ari`` (root's, 0600):
the certificate's ID, the window, the time picked in it, and when to ask again. The time is
picked uniformly at random inside the window (RFC 9773 section 4.2: a fleet spreads out) and
kept while the CA answers the same window, so asking again does not re-roll it towards the
start. A window in the past makes the certificate due now. No ``renewalInfo`` in the directory,
or anything wrong with it, falls back to two thirds and says so in one line (``note``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cpsysd.errors import CpsysdError

if TYPE_CHECKING:
    from cpsysd.description.model import TLSConfig
    from cpsysd.tls.x509 import Certificate

TWO_THIRDS = "two thirds of its lifetime"


@dataclass(frozen=True)
class RenewalPlan:
    """When the certificate is due, on what basis, and a fallback's one line (or None)."""

    due: datetime.datetime
    basis: str
    note: str | None = None


@dataclass(frozen=True)
class AriState:
    """What the job recorded from the CA's renewalInfo for one certificate."""

    cert_id: str
    start: datetime.datetime
    end: datetime.datetime
    chosen: datetime.datetime
    next_check: datetime.datetime
    checked: datetime.datetime


def renewal_time(cert: Certificate, renew_days: int = 0) -> datetime.datetime:
    """When an ACME certificate is due without ARI: two thirds of its lifetime, less a jitter
    of up to a fifteenth of it from the serial, and at the latest ``renew_days`` before it
    expires (``[tls] renew_days``, when set)."""
    lifetime = cert.not_after - cert.not_before
    jitter = lifetime / 15 * ((cert.x509.serial_number % 1000) / 1000)
    due = cert.not_before + lifetime * 2 / 3 - jitter
    return _at_latest(due, cert, renew_days)


def _at_latest(due: datetime.datetime, cert: Certificate, renew_days: int) -> datetime.datetime:
    if renew_days:
        due = min(due, cert.not_after - datetime.timedelta(days=renew_days))
    return due


def ari_path(tls: TLSConfig) -> Path:
    return Path(tls.cert + ".acme-ari")


def read_state(tls: TLSConfig, cid: str) -> AriState | None:
    """The recorded window of the certificate ``cid``; None for none, another's, or garbage."""
    try:
        state = json.loads(ari_path(tls).read_text())
        times = [
            datetime.datetime.fromisoformat(state[key])
            for key in ("start", "end", "chosen", "next_check", "checked")
        ]
        if state["cert_id"] != cid or any(when.tzinfo is None for when in times):
            return None
        return AriState(cid, *times)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(tls: TLSConfig, state: AriState) -> None:
    from cpsysd import fsutil

    record = {field.name: getattr(state, field.name) for field in dataclasses.fields(state)}
    text = json.dumps({k: v if isinstance(v, str) else v.isoformat() for k, v in record.items()})
    # Best effort: without the record the job asks the CA again next run, nothing worse.
    with contextlib.suppress(CpsysdError):
        fsutil.atomic_write(ari_path(tls), text.encode() + b"\n", 0o600)


def _forget(tls: TLSConfig) -> None:
    with contextlib.suppress(OSError):
        ari_path(tls).unlink(missing_ok=True)


def _from_state(state: AriState, cert: Certificate, renew_days: int) -> RenewalPlan:
    window = f"{state.start:%Y-%m-%d %H:%M} to {state.end:%Y-%m-%d %H:%M} UTC"
    return RenewalPlan(
        _at_latest(state.chosen, cert, renew_days), f"the CA's renewal window {window} (ARI)"
    )


def _pick(
    start: datetime.datetime, end: datetime.datetime, old: AriState | None
) -> datetime.datetime:
    if old is not None and (old.start, old.end) == (start, end):
        return old.chosen
    return start + (end - start) * random.SystemRandom().random()


def plan_renewal(tls: TLSConfig, cert: Certificate, now: datetime.datetime) -> RenewalPlan:
    """When ``cert`` (a CA-issued certificate of ``[tls] acme``) is due; asks the CA's
    renewalInfo when the recorded answer's Retry-After has passed. Never raises for ARI."""
    from cpsysd.tls import ari

    assert tls.acme is not None
    fallback = RenewalPlan(renewal_time(cert, tls.renew_days), TWO_THIRDS)
    try:
        cid = ari.cert_id(cert)
    except ari.AriError as err:
        note = f"cannot ask the CA's renewalInfo (ARI): {err.message}: renewal at {TWO_THIRDS}"
        return RenewalPlan(fallback.due, TWO_THIRDS, note)
    try:
        old = read_state(tls, cid)
        if old is not None and now < old.next_check:
            return _from_state(old, cert, tls.renew_days)
        info_url = ari.renewal_info_url(tls.acme, tls.acme_ca_bundle)
        if info_url is None:
            _forget(tls)
            note = "the CA's directory offers no renewalInfo (ARI)"
            return RenewalPlan(fallback.due, TWO_THIRDS, f"{note}: renewal at {TWO_THIRDS}")
        window = ari.fetch_window(info_url, cid, tls.acme_ca_bundle, now)
        if window.end > cert.not_after:
            # Following it would let the certificate expire first: a CA's mistake, not advice.
            raise ari.AriError(
                f"the suggested window ends ({window.end:%Y-%m-%d %H:%M} UTC) after the "
                "certificate expires"
            )
    except ari.AriError as err:
        # A record from an earlier answer would let cert show/check disagree with this run.
        _forget(tls)
        note = f"the CA's renewalInfo (ARI) is unusable: {err.message}: renewal at {TWO_THIRDS}"
        return RenewalPlan(fallback.due, TWO_THIRDS, note)
    state = AriState(
        cid,
        window.start,
        window.end,
        _pick(window.start, window.end, old),
        now + window.recheck,
        now,
    )
    _write_state(tls, state)
    return _from_state(state, cert, tls.renew_days)


def recorded_lines(tls: TLSConfig, cert: Certificate) -> tuple[list[str], RenewalPlan | None]:
    """What ``cert show/check`` print of the recorded window (no network), and the plan it
    makes; nothing when the job recorded none for this certificate."""
    from cpsysd.tls import ari

    try:
        state = read_state(tls, ari.cert_id(cert))
    except ari.AriError:
        return [], None
    if state is None:
        return [], None
    line = (
        f"  ARI window:  {state.start:%Y-%m-%d %H:%M} to {state.end:%Y-%m-%d %H:%M} UTC "
        f"(asked {state.checked:%Y-%m-%d %H:%M}, next {state.next_check:%Y-%m-%d %H:%M} UTC)"
    )
    return [line], _from_state(state, cert, tls.renew_days)
