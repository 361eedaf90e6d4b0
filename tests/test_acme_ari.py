"""ACME Renewal Information (ARI, RFC 9773) in the renewal job: the real ``cpsysd cert renew``
process asks the CA's renewalInfo for a real certificate and renews inside the suggested
window, honours Retry-After, and falls back to two thirds of the lifetime (one line, never a
failed renewal) when the CA offers no ARI or answers garbage.

The ARI side is played by a small real HTTPS server on loopback (tests/arikit.py): no
ARI-capable CA runs here (Debian's pebble 2.4 has no renewalInfo). The fallback for a CA without
ARI is checked against that real pebble, and the renewal inside a past window orders from it.
"""

from __future__ import annotations

import datetime
import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from acmekit import available, running_pebble
from arikit import Answer, FakeAri, expected_cert_id, issued_certificate, running_fake_ari
from runtimekit import CPSYSD, Proc, free_port, socket_activate, wait_listening, write_app

from cpsysd.tls.ari import DEFAULT_RECHECK, MAX_RECHECK, MIN_RECHECK, retry_after

HOST = "app.test"
DAY = datetime.timedelta(days=1)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeAri]:
    with running_fake_ari(tmp_path / "ari") as server:
        yield server


def _describe(tmp_path: Path, directory: str, ca_bundle: Path, port: int = 0) -> Path:
    tls = tmp_path / "tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    extra = (
        "[tls]\n"
        f'cert = "{tls}/cert.pem"\nkey = "{tls}/key.pem"\n'
        f'acme = "{directory}"\nacme_ca_bundle = "{ca_bundle}"\n'
        f'hosts = ["{HOST}"]\n'
        f'acme_challenge_dir = "{tmp_path}/challenges"\n'
        f'acme_status_dir = "{tmp_path}/status"\n'
    )
    return write_app(tmp_path / "app", [f"127.0.0.1:{port or free_port()}"], extra=extra)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CPSYSD, *args], capture_output=True, text=True, timeout=120)


def _renew(description: Path) -> subprocess.CompletedProcess[str]:
    return _run("cert", "renew", "-c", str(description), "--no-restart")


def _state(tmp_path: Path) -> dict[str, str]:
    return dict(json.loads((tmp_path / "tls" / "cert.pem.acme-ari").read_text()))


def _when(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def test_cert_id_is_rfc_9773s_example() -> None:
    """Appendix A of RFC 9773: keyIdentifier 69:88:5B:..., serial 00:87:65:43:21."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from cpsysd.tls.ari import cert_id
    from cpsysd.tls.x509 import Certificate

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")])
    aki = x509.AuthorityKeyIdentifier(
        bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4"), None, None
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder(name, name, key.public_key(), 0x87654321, now, now + DAY)
        .add_extension(aki, critical=False)
        .sign(key, hashes.SHA256())
    )
    assert cert_id(Certificate(cert)) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_retry_after_is_clamped() -> None:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    assert retry_after(None, now) == DEFAULT_RECHECK
    assert retry_after("7200", now) == datetime.timedelta(hours=2)
    assert retry_after("0", now) == MIN_RECHECK
    assert retry_after("99999999999999999999", now) == MAX_RECHECK
    assert retry_after("Thu, 01 Jan 2026 03:00:00 GMT", now) == datetime.timedelta(hours=3)
    assert retry_after("soon", now) == DEFAULT_RECHECK


def test_a_future_window_is_asked_once_per_retry_after_and_shown(
    tmp_path: Path, fake: FakeAri
) -> None:
    description = _describe(tmp_path, fake.directory, fake.ca_bundle)
    tls = tmp_path / "tls"
    cert = issued_certificate(tls, HOST, age=DAY, left=89 * DAY)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now + 30 * DAY, now + 32 * DAY
    fake.window(start, end, **{"Retry-After": "3600"})
    done = _renew(description)
    assert done.returncode == 0, done.stderr
    assert fake.asked == [expected_cert_id(tls, cert)]
    assert "not due" in done.stdout
    assert "(ARI)" in done.stdout
    state = _state(tmp_path)
    assert start <= _when(state["chosen"]) <= end
    assert now + datetime.timedelta(minutes=59) < _when(state["next_check"]) < now + 2 * DAY / 24
    assert stat.S_IMODE((tls / "cert.pem.acme-ari").stat().st_mode) == 0o600
    # Within Retry-After the job does not ask again.
    again = _renew(description)
    assert again.returncode == 0, again.stderr
    assert len(fake.asked) == 1
    # Once it has passed it asks again, and the same window keeps the time picked in it.
    state["next_check"] = (now - DAY).isoformat()
    (tls / "cert.pem.acme-ari").write_text(json.dumps(state))
    third = _renew(description)
    assert third.returncode == 0, third.stderr
    assert len(fake.asked) == 2
    assert _state(tmp_path)["chosen"] == state["chosen"]
    chosen = _when(state["chosen"])
    shown = _run("cert", "show", "-c", str(description))
    assert shown.returncode == 0, shown.stderr
    assert f"  ARI window:  {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC" in shown.stdout
    assert f"  renewal:     after {chosen:%Y-%m-%d %H:%M} UTC (in the ARI window" in shown.stdout
    checked = _run("cert", "check", str(tls / "cert.pem"), "-c", str(description))
    assert checked.returncode == 0, checked.stderr
    assert f"; ACME renewal after {chosen:%Y-%m-%d %H:%M} UTC (in the ARI window" in checked.stdout


def test_a_past_window_makes_a_young_certificate_due(tmp_path: Path, fake: FakeAri) -> None:
    """In-process: the plan the job acts on (the renewal itself is ordered from pebble below)."""
    from cpsysd.description.load import load_spec
    from cpsysd.host.acmeari import plan_renewal
    from cpsysd.tls.x509 import Certificate

    spec = load_spec(_describe(tmp_path, fake.directory, fake.ca_bundle))
    assert spec.tls is not None
    cert = issued_certificate(tmp_path / "tls", HOST, age=DAY, left=89 * DAY)
    now = datetime.datetime.now(datetime.UTC)
    fake.window(now - 3 * DAY, now - 2 * DAY)
    plan = plan_renewal(spec.tls, Certificate(cert), now)
    assert plan.due <= now - 2 * DAY
    assert "(ARI)" in plan.basis
    assert plan.note is None


def _window(start: str, end: str) -> Answer:
    return Answer(200, json.dumps({"suggestedWindow": {"start": start, "end": end}}).encode())


def test_a_failing_renewal_backs_off_without_asking_ari(tmp_path: Path, fake: FakeAri) -> None:
    description = _describe(tmp_path, fake.directory, fake.ca_bundle)
    issued_certificate(tmp_path / "tls", HOST, age=DAY, left=89 * DAY)
    later = (datetime.datetime.now(datetime.UTC) + DAY / 24).isoformat()
    retry = {"failures": 1, "next": later, "error": "the CA rate-limits this account"}
    (tmp_path / "tls" / "cert.pem.acme-retry").write_text(json.dumps(retry | {"since": later}))
    done = _renew(description)
    assert done.returncode == 0, done.stderr
    assert "next try after" in done.stdout
    assert fake.asked == []


GARBAGE = {
    "an error status": (Answer(503, b"{}"), "answered HTTP 503"),
    "not JSON": (Answer(200, b"<html>"), "answered no JSON"),
    "no window": (Answer(200, b'{"explanationURL": "x"}'), "no suggestedWindow"),
    "a window ending before it starts": (
        _window("2026-03-02T00:00:00Z", "2026-03-01T00:00:00Z"),
        "ends (2026-03-01 00:00) before it starts",
    ),
    "a time without a zone": (
        _window("2026-03-01T00:00:00", "2026-03-02T00:00:00Z"),
        "has no time zone",
    ),
    "a window after the certificate expires": (
        _window("2099-03-01T00:00:00Z", "2099-03-02T00:00:00Z"),
        "ends (2099-03-02 00:00 UTC) after the certificate expires",
    ),
    "an endless answer": (Answer(200, b" " * 70_000), "more than 65536 bytes"),
    "no answer at all": (Answer(hang=True), "timed out"),
}


@pytest.mark.parametrize(
    "case",
    # the hang waits out the job's 10 s ARI timeout
    [
        pytest.param(case, marks=[pytest.mark.slow] if GARBAGE[case][0].hang else [])
        for case in GARBAGE
    ],
)
def test_garbage_falls_back_to_two_thirds_in_one_line(
    tmp_path: Path, fake: FakeAri, case: str
) -> None:
    description = _describe(tmp_path, fake.directory, fake.ca_bundle)
    cert = issued_certificate(tmp_path / "tls", HOST, age=DAY, left=89 * DAY)
    # An earlier answer's record, due to be asked again: the fallback must not keep showing it.
    past = (datetime.datetime.now(datetime.UTC) - DAY).isoformat()
    record = {"cert_id": expected_cert_id(tmp_path / "tls", cert), "start": past, "end": past}
    record |= {"chosen": past, "next_check": past, "checked": past}
    (tmp_path / "tls" / "cert.pem.acme-ari").write_text(json.dumps(record))
    fake.answer, reason = GARBAGE[case]
    done = _renew(description)
    assert done.returncode == 0, done.stderr
    assert len(fake.asked) == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    assert "renewalInfo (ARI) is unusable" in lines[0]
    assert reason in lines[0]
    assert lines[0].endswith("renewal at two thirds of its lifetime")
    assert "not due" in lines[1]
    assert "(two thirds of its lifetime)" in lines[1]
    assert not (tmp_path / "tls" / "cert.pem.acme-ari").exists()


needs_pebble = pytest.mark.skipif(not available(), reason="pebble is not installed")


@needs_pebble
@pytest.mark.slow
def test_pebble_has_no_renewal_info_so_two_thirds_rule(tmp_path: Path) -> None:
    with running_pebble(tmp_path / "pebble") as pebble:
        description = _describe(tmp_path, pebble.directory, pebble.ca_bundle)
        issued_certificate(tmp_path / "tls", HOST, age=DAY, left=89 * DAY)
        done = _renew(description)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.endswith(
        "the CA's directory offers no renewalInfo (ARI): renewal at two thirds of its lifetime"
    )
    assert "not due" in second
    assert "(two thirds of its lifetime)" in second


@needs_pebble
@pytest.mark.slow
def test_a_past_window_renews_now_from_the_real_ca(tmp_path: Path, fake: FakeAri) -> None:
    """The fake's directory is pebble's plus renewalInfo: ARI says when, pebble issues."""
    import ssl
    import urllib.request

    from cpsysd.tls.x509 import Certificate

    with running_pebble(tmp_path / "pebble") as pebble:
        context = ssl.create_default_context(cafile=str(pebble.ca_bundle))
        with urllib.request.urlopen(pebble.directory, context=context) as response:
            fake.merge = json.loads(response.read())
        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(pebble.ca_bundle.read_bytes() + fake.ca_bundle.read_bytes())
        description = _describe(tmp_path, fake.directory, bundle, pebble.http_port)
        old = issued_certificate(tmp_path / "tls", HOST, age=DAY, left=89 * DAY)
        now = datetime.datetime.now(datetime.UTC)
        fake.window(now - 3 * DAY, now - 2 * DAY)
        argv = socket_activate(
            [f"127.0.0.1:{pebble.http_port}"], [*CPSYSD, "serve", "-c", str(description)]
        )
        proc = Proc(argv, tmp_path / "serve.log")
        try:
            wait_listening(f"127.0.0.1:{pebble.http_port}")
            done = _renew(description)
        finally:
            proc.stop()
    assert done.returncode == 0, done.stderr
    assert fake.asked == [expected_cert_id(tmp_path / "tls", old)]
    assert "renewed" in done.stdout
    assert "(ARI)" in done.stdout
    cert = tmp_path / "tls" / "cert.pem"
    leaf = Certificate.list_from_pem(cert.read_bytes(), str(cert))[0]
    assert "Pebble Intermediate" in leaf.issuer
