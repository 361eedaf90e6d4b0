"""The certificate renewal timer under a real systemd (cpsysd.harness): cpsysd install enables
NAME-cert-renew.timer; its sandboxed service re-issues an expiring certificate from the local
CA, restarts the app, and the app then serves the new certificate; a second run does nothing."""

from __future__ import annotations

import dataclasses
import datetime
import re

import pytest

from cpsysd.harness import Container
from cpsysd.spec import Listener, TLSConfig, load_spec
from cpsysd.tls import CertificateAuthority
from cpsysd.tomlwrite import spec_to_toml
from tests.conftest import EXAMPLE

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


def main_pid(box: Container) -> str:
    return box.run(
        ["systemctl", "show", "-p", "MainPID", "--value", "hello.service"]
    ).stdout.strip()


def test_renewal_timer_reissues_and_the_app_serves_the_new_certificate(box: Container) -> None:
    python = box.provision_cpsysd()
    box.run([python, "-m", "cpsysd", "cert", "ca", "--dir", CA_DIR])
    # An expiring certificate from that CA: made here with explicit dates, copied in.
    ca = CertificateAuthority.from_pem(
        box.read_file(f"{CA_DIR}/ca.pem").encode(),
        box.sh(f"cat {CA_DIR}/ca.key").stdout.encode(),
    )
    now = datetime.datetime.now(datetime.UTC)
    old = ca.issue_leaf_cert(
        "localhost", validity=(now - datetime.timedelta(days=85), now + datetime.timedelta(days=5))
    )
    box.run(["mkdir", "-p", "-m", "0755", TLS_DIR])
    box.write_file(f"{TLS_DIR}/hello.crt", old.cert_pem.bytes().decode())
    box.write_file(f"{TLS_DIR}/hello.key", old.private_key_pem().bytes().decode(), 0o600)

    spec = load_spec(EXAMPLE / "cpsysd.toml")
    tls = TLSConfig(
        cert=f"{TLS_DIR}/hello.crt",
        key=f"{TLS_DIR}/hello.key",
        renew_days=30,
        ca_dir=CA_DIR,
        hosts=("localhost", "127.0.0.1"),
    )
    spec = dataclasses.replace(
        spec,
        python=python,
        working_directory="/srv/hello",
        config="/srv/hello/app.conf",
        listeners=(Listener("https", True, port=443),),
        tls=tls,
    )
    box.copy_in(EXAMPLE, "/srv/hello", exclude=["__pycache__"])
    box.write_file("/etc/cpsysd/hello.toml", spec_to_toml(spec))
    box.run([python, "-m", "cpsysd", "install", "hello", "-c", "/etc/cpsysd/hello.toml"])

    assert (
        box.run(["systemctl", "is-enabled", "hello-cert-renew.timer"]).stdout.strip() == "enabled"
    )
    assert box.run(["systemctl", "is-active", "hello-cert-renew.timer"]).stdout.strip() == "active"
    before = served_serial(box)
    assert before == old.certificate.x509.serial_number
    pid_before = main_pid(box)

    box.run(["systemctl", "start", "hello-cert-renew.service"])  # oneshot: returns when done
    result = box.run(["systemctl", "show", "-p", "Result", "--value", "hello-cert-renew.service"])
    assert result.stdout.strip() == "success", box.journal("hello-cert-renew.service")
    log = box.journal("hello-cert-renew.service")
    assert re.search(r"renewed /etc/cpsysd/tls/hello.crt: .*; restarted hello.service", log), log

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
    box.run(["systemctl", "start", "hello-cert-renew.service"])
    reports = [
        line for line in box.journal("hello-cert-renew.service").splitlines() if "hello.crt" in line
    ]
    assert "not due" in reports[-1], reports
    assert main_pid(box) == pid
    assert served_serial(box) == after
