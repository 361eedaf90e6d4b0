"""Certificates from an ACME CA: Debian's pebble on loopback validates every http-01 challenge for
real against ``cpsysd serve`` (under the real systemd-socket-activate), which answers them from
the challenge directory before the app sees the request. The job is the real ``cpsysd cert
renew`` process the timer's service runs. Faults keep the old certificate and say why in one
line. Needs pebble (scripts/setup.sh installs it)."""

from __future__ import annotations

import datetime
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from acmekit import Pebble, available, running_pebble
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from runtimekit import CPSYSD, Proc, free_port, get, socket_activate, wait_listening, write_app

from cpsysd.tls.x509 import Certificate, utc_now, verify_chain

pytestmark = [
    pytest.mark.skipif(not available(), reason="pebble is not installed (scripts/setup.sh)"),
    pytest.mark.slow,
]
HOST = "app.test"


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with running_pebble(tmp_path_factory.mktemp("pebble")) as server:
        yield server


def _describe(tmp_path: Path, pebble: Pebble, port: int, acme: str = "", hosts: str = "") -> Path:
    tls = tmp_path / "tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    extra = (
        "[tls]\n"
        f'cert = "{tls}/cert.pem"\nkey = "{tls}/key.pem"\n'
        f'acme = "{acme or pebble.directory}"\nacme_ca_bundle = "{pebble.ca_bundle}"\n'
        f'acme_email = "ops@example.org"\nhosts = [{hosts or chr(34) + HOST + chr(34)}]\n'
        f'acme_challenge_dir = "{tmp_path}/challenges"\n'
        f'acme_status_dir = "{tmp_path}/status"\n'
    )
    return write_app(tmp_path / "app", [f"127.0.0.1:{port}"], extra=extra)


def _serve(tmp_path: Path, description: Path, port: int) -> Proc:
    argv = socket_activate([f"127.0.0.1:{port}"], [*CPSYSD, "serve", "-c", str(description)])
    proc = Proc(argv, tmp_path / "serve.log")
    wait_listening(f"127.0.0.1:{port}")
    return proc


def _renew(description: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CPSYSD, "cert", "renew", "-c", str(description), "--no-restart", *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _cert(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CPSYSD, "cert", *args], capture_output=True, text=True, timeout=60)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _short_lived(tls: Path, hours_left: float) -> bytes:
    """A CA-issued (not self-signed) certificate for HOST, 3 h old, ``hours_left`` to go."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, HOST)]))
        .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "old CA")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=3))
        .not_valid_after(now + datetime.timedelta(hours=hours_left))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(tls / "key.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem)
    pem = cert.public_bytes(Encoding.PEM)
    (tls / "cert.pem").write_bytes(pem)
    return pem


def _verify_against_pebble(pebble: Pebble, cert: Path) -> Certificate:
    chain = Certificate.list_from_pem(cert.read_bytes(), str(cert))
    roots = Certificate.list_from_pem(pebble.root_pem(), "pebble root")
    verify_chain(chain, roots, utc_now())
    (cert.parent / "pebble-root.pem").write_bytes(pebble.root_pem())
    # And OpenSSL agrees, as a TLS client checking the name would.
    check = subprocess.run(
        ["openssl", "verify", "-purpose", "sslserver", "-verify_hostname", HOST,
         "-CAfile", str(cert.parent / "pebble-root.pem"), "-untrusted", str(cert), str(cert)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    return chain[0]


def test_first_issuance_over_http01_answered_by_the_runtime(tmp_path: Path, pebble: Pebble) -> None:
    description = _describe(tmp_path, pebble, pebble.http_port)
    proc = _serve(tmp_path, description, pebble.http_port)
    try:
        done = _renew(description)
        assert done.returncode == 0, done.stderr
        assert "renewed" in done.stdout
        assert "no certificate yet" in done.stdout
        tls = tmp_path / "tls"
        leaf = _verify_against_pebble(pebble, tls / "cert.pem")
        assert leaf.hosts == (f"DNS:{HOST}",)
        assert "Pebble Intermediate" in leaf.issuer
        assert _mode(tls / "key.pem") == 0o600
        assert _mode(tls / "acme-account.pem") == 0o600
        assert not list((tmp_path / "challenges").iterdir())  # answers removed after the order
        # The runtime answers the prefix itself: unknown tokens and other names are its 404s.
        status, body = get(f"127.0.0.1:{pebble.http_port}", "/.well-known/acme-challenge/nope")
        assert (status, body) == (404, b"no such ACME challenge\n")
        status, body = get(f"127.0.0.1:{pebble.http_port}", "/.well-known/acme-challenge/..%2fx")
        assert status == 404
        assert get(f"127.0.0.1:{pebble.http_port}", "/")[1] == b"hello\n"
        shown = _cert("show", "-c", str(description))
        assert shown.returncode == 0, shown.stderr
        assert f"  ACME CA:     {pebble.directory} (http-01)" in shown.stdout
        assert "  renewal:     after " in shown.stdout
        assert "rt-cert-renew.timer" in shown.stdout
        checked = _cert("check", str(tls / "cert.pem"), "-c", str(description))
        assert checked.returncode == 0, checked.stderr
        assert "; ACME renewal after " in checked.stdout
        again = _renew(description)
        assert again.returncode == 0, again.stderr
        assert "not due" in again.stdout
        assert "renewal from" in again.stdout
    finally:
        proc.stop()


def test_the_real_job_renews_a_short_lived_certificate(tmp_path: Path, pebble: Pebble) -> None:
    description = _describe(tmp_path, pebble, pebble.http_port)
    old = _short_lived(tmp_path / "tls", hours_left=1)  # 3 h of 4 gone: past two thirds
    proc = _serve(tmp_path, description, pebble.http_port)
    try:
        done = _renew(description)
        assert done.returncode == 0, done.stderr
        assert "(two thirds of its lifetime)" in done.stdout
        cert = tmp_path / "tls" / "cert.pem"
        assert cert.read_bytes() != old
        leaf = _verify_against_pebble(pebble, cert)
        assert leaf.not_after > utc_now() + datetime.timedelta(days=30)
        assert _mode(tmp_path / "tls" / "key.pem") == 0o600
    finally:
        proc.stop()


def _fails_keeping_the_old(description: Path, tls: Path, old: bytes) -> str:
    key = (tls / "key.pem").read_bytes()
    done = _renew(description)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "stays as it is, next try after" in done.stderr
    assert (tls / "cert.pem").read_bytes() == old
    assert (tls / "key.pem").read_bytes() == key
    assert _mode(tls / "key.pem") == 0o600
    # The backoff holds: the next run does not ask the CA again, and says why.
    waiting = _renew(description)
    assert waiting.returncode == 0, waiting.stderr
    assert "next try after" in waiting.stdout
    # cert check -c fails while the renewal is overdue and failing; show says why.
    checked = _cert("check", str(tls / "cert.pem"), "--days", "0", "-c", str(description))
    assert checked.returncode != 0
    assert "renewal failing: " in checked.stderr
    assert "  last try:    failed 1x: " in _cert("show", "-c", str(description)).stdout
    # The record the service puts in its STATUS=: the cause, readable by the app's user.
    record = description.parent.parent / "status" / "failure"
    assert record.read_text().startswith("certificate renewal failing since ")
    assert _mode(record) == 0o644
    return done.stderr


def test_unreachable_directory_keeps_the_old_certificate(tmp_path: Path, pebble: Pebble) -> None:
    description = _describe(
        tmp_path, pebble, pebble.http_port, f"https://127.0.0.1:{free_port()}/dir"
    )
    old = _short_lived(tmp_path / "tls", hours_left=1)
    error = _fails_keeping_the_old(description, tmp_path / "tls", old)
    assert "cannot reach the ACME directory" in error
    assert "check [tls] acme" in error


def test_a_name_the_ca_refuses(tmp_path: Path, pebble: Pebble) -> None:
    # A wildcard: pebble, like Let's Encrypt, validates it only over dns-01 (RFC 8555 7.1.3).
    description = _describe(tmp_path, pebble, pebble.http_port, hosts=f'"*.{HOST}"')
    old = _short_lived(tmp_path / "tls", hours_left=1)
    error = _fails_keeping_the_old(description, tmp_path / "tls", old)
    assert f"the CA refuses to validate *.{HOST} over http-01 (it offers dns-01)" in error
    assert "list each name in [tls] hosts" in error


def test_a_challenge_nobody_answers(tmp_path: Path, pebble: Pebble) -> None:
    description = _describe(tmp_path, pebble, pebble.http_port)
    old = _short_lived(tmp_path / "tls", hours_left=1)
    # No app on the plain listener: the CA's validation request is refused.
    error = _fails_keeping_the_old(description, tmp_path / "tls", old)
    assert f"the CA could not validate {HOST}" in error
    assert "acme-challenge" in error
    assert not list((tmp_path / "challenges").iterdir())


def test_leftover_answers_of_a_killed_job_are_swept_at_the_next_run(
    tmp_path: Path, pebble: Pebble
) -> None:
    description = _describe(tmp_path, pebble, pebble.http_port)
    _short_lived(tmp_path / "tls", hours_left=100)  # not due: the run asks no CA
    challenges = tmp_path / "challenges"
    challenges.mkdir()
    # What a SIGKILL mid-order leaves: an answer, and fsutil's staging copy of another.
    (challenges / "dGhlLXRva2VuLW9mLWEtZGVhZC1vcmRlcg").write_text("token.thumbprint")
    (challenges / ".Zm9v_LWJhcg.cpsysd-tmp").write_text("token.thumbprint")
    (challenges / "README.txt").write_text("not an answer: kept")
    (challenges / "tls-alpn-01").mkdir()  # and a tls-alpn-01 answer (its name is the host)
    (challenges / "tls-alpn-01" / HOST).write_text("token.thumbprint")
    done = _renew(description)
    assert done.returncode == 0, done.stderr
    assert "not due" in done.stdout
    assert sorted(p.name for p in challenges.iterdir()) == ["README.txt", "tls-alpn-01"]
    assert not list((challenges / "tls-alpn-01").iterdir())


def test_answers_written_before_a_refused_name_are_removed(tmp_path: Path, pebble: Pebble) -> None:
    # pebble offers http-01 for the plain names (their answers are written) and dns-01 only for
    # the wildcard, which fails the order. Its authorizations come in no fixed order, so with
    # the wildcard not first in at least one of five orders (1 - 3**-5), answers were on disk.
    hosts = f'"{HOST}", "www.{HOST}", "*.{HOST}"'
    description = _describe(tmp_path, pebble, pebble.http_port, hosts=hosts)
    old = _short_lived(tmp_path / "tls", hours_left=1)
    (tmp_path / "challenges").mkdir()
    for _ in range(5):
        done = _renew(description, "--force")
        assert done.returncode != 0
        assert f"the CA refuses to validate *.{HOST} over http-01" in done.stderr
        assert (tmp_path / "tls" / "cert.pem").read_bytes() == old
        assert not list((tmp_path / "challenges").iterdir())
