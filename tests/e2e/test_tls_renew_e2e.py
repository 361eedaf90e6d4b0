"""The certificate renewal timer under a real systemd (cpsysd.harness.container): cpsysd install
enables
NAME-cert-renew.timer; its sandboxed service re-issues an expiring certificate from the local
CA, restarts the app, and the app then serves the new certificate; a second run does nothing.
With an encrypted key and a CA whose key is encrypted, the job gets both passphrases as
credentials and the new key is encrypted again."""

from __future__ import annotations

import datetime
import re

import pytest

from cpsysd.description.load import Listener, TLSConfig
from cpsysd.harness.container import Container
from cpsysd.harness.provision import provision
from cpsysd.tls.pki import Certificate, CertificateAuthority, LeafCert, PrivateKey
from tests.e2e.e2etools import example_spec, install_app, wait_until

pytestmark = pytest.mark.e2e

TLS_DIR = "/etc/cpsysd/tls"
CA_DIR = "/etc/cpsysd/ca"


@pytest.fixture
def box(container: Container) -> Container:
    """The shared booted container of tests/e2e/conftest.py."""
    return container


def served_serial(box: Container) -> int:
    """Serial number of the certificate the app serves on port 443.

    Compared as a number: openssl prints whole bytes, so a serial whose first
    hex digit is zero reads "0D85..." where Python's ``:X`` gives "D85...".
    """
    script = (
        f"openssl s_client -connect 127.0.0.1:443 -servername localhost -CAfile {CA_DIR}/ca.pem "
        "-verify_return_error </dev/null 2>/dev/null | openssl x509 -noout -serial"
    )
    line = box.sh(script).stdout.strip()
    assert line.startswith("serial="), line
    return int(line.removeprefix("serial="), 16)


def renew_and_restart(box: Container) -> None:
    """Run the renewal job once (a oneshot: `systemctl start` returns when it is done) and check
    that it succeeded, re-issued the certificate and restarted the app."""
    box.run(["systemctl", "start", "hello-cert-renew.service"])
    result = box.run(["systemctl", "show", "-p", "Result", "--value", "hello-cert-renew.service"])
    assert result.stdout.strip() == "success", box.journal("hello-cert-renew.service")
    # Its report travels to journald over a stream socket: it may arrive after the job ended.
    wait_until(
        lambda: bool(
            re.search(
                r"renewed /etc/cpsysd/tls/hello.crt: .*; restarted hello.service",
                box.journal("hello-cert-renew.service"),
            )
        ),
        what="the renewal report in the journal",
    )


def renewal_reports(box: Container) -> list[str]:
    """The renewal job's report lines about hello.crt in the journal, oldest first."""
    log = box.journal("hello-cert-renew.service")
    return [line for line in log.splitlines() if "hello.crt" in line]


def main_pid(box: Container) -> str:
    return box.run(
        ["systemctl", "show", "-p", "MainPID", "--value", "hello.service"]
    ).stdout.strip()


def install_with_expiring_cert(
    box: Container, ca: CertificateAuthority, key_passphrase: bytes | None = None, **tls: str
) -> LeafCert:
    """A certificate from ``ca`` that expires in 5 days (explicit dates: the CLI makes only
    fresh ones), its key encrypted with ``key_passphrase`` if given, both copied in; then the
    example app installed to serve them over HTTPS on 443 with renewal 30 days before expiry
    and ``tls`` as further [tls] fields. Returns the expiring certificate."""
    now = datetime.datetime.now(datetime.UTC)
    old = ca.issue_leaf_cert(
        "localhost", validity=(now - datetime.timedelta(days=85), now + datetime.timedelta(days=5))
    )
    box.run(["mkdir", "-p", "-m", "0755", TLS_DIR])
    box.write_file(f"{TLS_DIR}/hello.crt", old.cert_pem.bytes().decode())
    key = old.private_key_pem(key_passphrase).bytes().decode()
    box.write_file(f"{TLS_DIR}/hello.key", key, 0o600)
    config = TLSConfig(
        cert=f"{TLS_DIR}/hello.crt",
        key=f"{TLS_DIR}/hello.key",
        renew_days=30,
        ca_dir=CA_DIR,
        hosts=("localhost", "127.0.0.1"),
        **tls,
    )
    install_app(box, example_spec(listeners=(Listener("https", True, port=443),), tls=config))
    return old


def test_renewal_timer_reissues_and_the_app_serves_the_new_certificate(box: Container) -> None:
    python = provision(box)
    box.run([python, "-m", "cpsysd", "cert", "ca", "--dir", CA_DIR])
    # The CA read back, to issue an expiring certificate from it (install_with_expiring_cert).
    ca = CertificateAuthority.from_pem(
        box.read_file(f"{CA_DIR}/ca.pem").encode(),
        box.sh(f"cat {CA_DIR}/ca.key").stdout.encode(),
    )
    old = install_with_expiring_cert(box, ca)

    assert (
        box.run(["systemctl", "is-enabled", "hello-cert-renew.timer"]).stdout.strip() == "enabled"
    )
    assert box.run(["systemctl", "is-active", "hello-cert-renew.timer"]).stdout.strip() == "active"
    before = served_serial(box)
    assert before == old.certificate.x509.serial_number
    pid_before = main_pid(box)

    renew_and_restart(box)

    after = served_serial(box)
    assert after != before
    assert main_pid(box) != pid_before  # restarted: LoadCredential= copies are made at start
    assert box.run(["stat", "-c", "%a %U", f"{TLS_DIR}/hello.key"]).stdout == "600 root\n"
    check = box.run(
        [
            python,
            "-m",
            "cpsysd",
            "cert",
            "check",
            f"{TLS_DIR}/hello.crt",
            "--key",
            f"{TLS_DIR}/hello.key",
            "--ca",
            f"{CA_DIR}/ca.pem",
            "--days",
            "60",
        ]
    )
    assert "chain verifies" in check.stdout

    # Not due any more: the next run leaves certificate and app alone.
    pid = main_pid(box)
    earlier = len(renewal_reports(box))
    box.run(["systemctl", "start", "hello-cert-renew.service"])
    wait_until(lambda: len(renewal_reports(box)) > earlier, what="the second run's report")
    reports = renewal_reports(box)
    assert "not due" in reports[-1], reports
    assert main_pid(box) == pid
    assert served_serial(box) == after


KEY_PASSPHRASE = "e2e key passphrase 9d1c, kept through renewal"
CA_PASSPHRASE = "e2e CA passphrase 03fa, for the renewal job only"


def test_renewal_keeps_an_encrypted_key_encrypted_and_opens_an_encrypted_ca(
    box: Container,
) -> None:
    """Passphrases under /root, which ProtectHome=yes hides from both services: they can only
    arrive as credentials, read by systemd before the sandbox exists."""
    python = provision(box)
    box.write_file("/root/hello.pass", KEY_PASSPHRASE + "\n", 0o600)
    box.write_file("/root/ca.pass", CA_PASSPHRASE + "\n", 0o600)
    box.run(
        [
            python,
            "-m",
            "cpsysd",
            "cert",
            "ca",
            "--dir",
            CA_DIR,
            "--passphrase-file",
            "/root/ca.pass",
        ]
    )
    ca_key = box.sh(f"cat {CA_DIR}/ca.key").stdout.encode()
    assert ca_key.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    ca = CertificateAuthority.from_pem(
        box.read_file(f"{CA_DIR}/ca.pem").encode(), ca_key, CA_PASSPHRASE.encode()
    )
    old = install_with_expiring_cert(
        box,
        ca,
        KEY_PASSPHRASE.encode(),
        passphrase_file="/root/hello.pass",
        ca_passphrase_file="/root/ca.pass",
    )
    old_key = box.sh(f"cat {TLS_DIR}/hello.key").stdout.encode()  # as written, encrypted
    before = served_serial(box)  # the app opened the encrypted key with its credential
    assert before == old.certificate.x509.serial_number
    app_credentials = box.run(["ls", "/run/credentials/hello.service"]).stdout.split()
    assert sorted(app_credentials) == ["tls-cert", "tls-key", "tls-key-passphrase"]  # no CA's

    renew_and_restart(box)

    after = served_serial(box)
    assert after != before
    on_disk = Certificate.list_from_pem(box.read_file(f"{TLS_DIR}/hello.crt").encode())[0]
    assert after == on_disk.x509.serial_number
    new_key = box.sh(f"cat {TLS_DIR}/hello.key").stdout.encode()
    assert new_key != old_key
    assert new_key.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert box.run(["stat", "-c", "%a %U", f"{TLS_DIR}/hello.key"]).stdout == "600 root\n"
    opens = ["openssl", "pkey", "-in", f"{TLS_DIR}/hello.key", "-noout", "-passin"]
    assert box.run([*opens, "file:/root/hello.pass"], check=False).returncode == 0
    assert box.run([*opens, "pass:"], check=False).returncode != 0
    assert PrivateKey.from_pem(new_key, KEY_PASSPHRASE.encode()).matches(on_disk)
    assert box.sh(f"cat {CA_DIR}/ca.key").stdout.encode() == ca_key  # read, never rewritten

    # Neither passphrase nor any line of a key, encrypted or not, shows up anywhere.
    needles = [KEY_PASSPHRASE, CA_PASSPHRASE, KEY_PASSPHRASE[:14], CA_PASSPHRASE[:14]]
    plain = PrivateKey.from_pem(new_key, KEY_PASSPHRASE.encode()).pem().bytes()
    for pem in (new_key, plain, old_key, old.private_key_pem().bytes(), ca_key):
        needles += [ln.decode() for ln in pem.splitlines() if len(ln) >= 40 and b"--" not in ln]
    units = ["hello.service", "hello-cert-renew.service", "hello-cert-renew.timer"]
    views = {
        "journal": box.run(["journalctl", "--no-pager", "-o", "export"]).stdout,
        "show": box.run(["systemctl", "show", *units]).stdout,
        "units": box.run(["systemctl", "cat", *units]).stdout,
    }
    assert "renewed /etc/cpsysd/tls/hello.crt" in views["journal"]
    for where, text in views.items():
        leaked = [needle for needle in needles if needle in text]
        assert leaked == [], f"{where} shows secret material"


def test_after_a_deploy_the_renewal_restarts_the_live_release(box: Container) -> None:
    """After ``cpsysd deploy`` the app runs as ``hello-release@r1.service`` and hello.service is
    stopped: the renewed certificate must reach the release (a restart: LoadCredential=)."""
    python = provision(box)
    box.run([python, "-m", "cpsysd", "cert", "ca", "--dir", CA_DIR])
    ca = CertificateAuthority.from_pem(
        box.read_file(f"{CA_DIR}/ca.pem").encode(),
        box.sh(f"cat {CA_DIR}/ca.key").stdout.encode(),
    )
    old = install_with_expiring_cert(box, ca)
    deployed = box.run([python, "-m", "cpsysd", "deploy", "-c", "/etc/cpsysd/hello.toml"])
    assert deployed.stdout.startswith("release r1 is live"), deployed.stdout
    assert served_serial(box) == old.certificate.x509.serial_number
    release_pid = box.run(
        ["systemctl", "show", "-p", "MainPID", "--value", "hello-release@r1.service"]
    ).stdout.strip()

    box.run(["systemctl", "start", "hello-cert-renew.service"])
    wait_until(
        lambda: "restarted hello-release@r1.service" in box.journal("hello-cert-renew.service"),
        what="the renewal report naming the live release",
    )
    assert served_serial(box) != old.certificate.x509.serial_number
    assert (
        box.run(
            ["systemctl", "show", "-p", "MainPID", "--value", "hello-release@r1.service"]
        ).stdout.strip()
        != release_pid
    )
    assert box.run(["systemctl", "is-active", "hello.service"], check=False).stdout.strip() != (
        "active"
    )
