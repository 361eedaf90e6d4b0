"""An ACME certificate under a real systemd (cpsysd.harness.container): Debian's pebble runs in
the container as a transient service, with real http-01 validation and pebble-challtestsrv's
DNS answering every name with 127.0.0.1 (the container's own loopback). ``cpsysd install``
writes a self-signed placeholder, enables the sockets and NAME-cert-renew.timer, and runs the
sandboxed renewal job once: pebble fetches the answer from the DynamicUser app on port 80 (read
from /run/cpsysd/acme/hello, the job's RuntimeDirectory), and the app, restarted, serves
pebble's certificate on 443. Then a short-lived certificate is renewed by the same job."""

from __future__ import annotations

import datetime
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from cpsysd.description.load import Listener, TLSConfig
from cpsysd.harness.container import Container
from cpsysd.harness.provision import provision
from tests.e2e.e2etools import example_spec, install_app, wait_until

pytestmark = pytest.mark.e2e

TLS_DIR = "/etc/cpsysd/tls"
PEBBLE = "/etc/pebble"
HOST = "app.test"
DIRECTORY = "https://127.0.0.1:14000/dir"


def start_pebble(box: Container, tls_port: int = 5001, validity: int = 0) -> None:
    """Pebble and its DNS in ``box``; ``validity``: its certificates' lifetime in seconds
    (``certificateValidityPeriod``, pebble's own setting; 0: its default of five years)."""
    python = provision(box)
    box.run(["mkdir", "-p", "-m", "0755", PEBBLE, TLS_DIR])
    box.run([python, "-m", "cpsysd", "cert", "selfsigned", "--cert", f"{PEBBLE}/https.pem",
             "--key", f"{PEBBLE}/https.key", "127.0.0.1", "localhost"])  # fmt: skip
    config = {"pebble": {
        "listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
        "certificate": f"{PEBBLE}/https.pem", "privateKey": f"{PEBBLE}/https.key",
        "httpPort": 80, "tlsPort": tls_port, "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }}  # fmt: skip
    if validity:
        config["pebble"]["certificateValidityPeriod"] = validity
    box.write_file(f"{PEBBLE}/pebble.json", json.dumps(config))
    box.run(["systemd-run", "--unit=pebble-dns", "pebble-challtestsrv", "-dns01",
             "127.0.0.1:8053", "-defaultIPv6", "", "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-management", "127.0.0.1:8055"])  # fmt: skip
    # PEBBLE_AUTHZREUSE=0: every order validates again (by default pebble reuses half).
    box.run(["systemd-run", "--unit=pebble", "-E", "PEBBLE_VA_NOSLEEP=1",
             "-E", "PEBBLE_AUTHZREUSE=0", "-E", "PEBBLE_WFE_NONCEREJECT=0", "pebble",
             "-config", f"{PEBBLE}/pebble.json", "-dnsserver", "127.0.0.1:8053"])  # fmt: skip
    probe = ["curl", "-sf", "--cacert", f"{PEBBLE}/https.pem", DIRECTORY]
    wait_until(
        lambda: box.run(probe, check=False).returncode == 0,
        what="pebble's directory",
    )


def served_issuer(box: Container) -> str:
    """The issuer of what the app serves on 443, verified against pebble's root."""
    box.sh(f"curl -sf --cacert {PEBBLE}/https.pem https://127.0.0.1:15000/roots/0 > /root/root.pem")
    script = (
        f"openssl s_client -connect 127.0.0.1:443 -servername {HOST} -verify_hostname {HOST} "
        "-CAfile /root/root.pem -verify_return_error </dev/null 2>/dev/null "
        "| openssl x509 -noout -issuer"
    )
    return box.sh(script).stdout.strip()


def test_install_issues_from_pebble_and_the_job_renews(container: Container) -> None:
    box = container
    start_pebble(box)
    config = TLSConfig(
        cert=f"{TLS_DIR}/hello.crt",
        key=f"{TLS_DIR}/hello.key",
        acme=DIRECTORY,
        acme_ca_bundle=f"{PEBBLE}/https.pem",
        acme_email="ops@example.org",
        hosts=(HOST,),
    )
    listeners = (Listener("http", False, port=80), Listener("https", True, port=443))
    install_app(box, example_spec(listeners=listeners, tls=config))
    result = box.run(["systemctl", "show", "-p", "Result", "--value", "hello-cert-renew.service"])
    assert result.stdout.strip() == "success", box.journal("hello-cert-renew.service")
    assert "Pebble Intermediate" in served_issuer(box)
    # the keys, and the lock the sandboxed job took (acmelock.py): root's, 0600
    for key in ("hello.key", "acme-account.pem", "hello.crt.acme-lock"):
        assert box.run(["stat", "-c", "%a %U", f"{TLS_DIR}/{key}"]).stdout == "600 root\n"
    # the app's journal names the validation it answered (runtime/acmelog.py)
    assert f"answered the http-01 validation for {HOST} to " in box.journal("hello.service")
    assert box.run(["systemctl", "is-active", "hello-cert-renew.timer"]).stdout.strip() == "active"

    # A short-lived certificate past two thirds of its life: the job renews it and restarts.
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, HOST)])
    old = (
        x509.CertificateBuilder().subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "old CA")]))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=3))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        # an AKI, so the job can name it to renewalInfo (ARI) and asks pebble's directory
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    box.write_file(
        f"{TLS_DIR}/hello.key",
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode(),
        0o600,
    )
    box.write_file(f"{TLS_DIR}/hello.crt", old.public_bytes(Encoding.PEM).decode())
    box.run(["systemctl", "restart", "hello.service"])
    box.run(["systemctl", "start", "hello-cert-renew.service"])
    wait_until(
        lambda: "two thirds of its lifetime" in box.journal("hello-cert-renew.service"),
        what="the renewal report",
    )
    assert "restarted hello.service" in box.journal("hello-cert-renew.service")
    # pebble 2.4 has no renewalInfo: the sandboxed job asked, fell back, and said so in a line
    assert "offers no renewalInfo (ARI): renewal at two thirds" in box.journal(
        "hello-cert-renew.service"
    )
    assert "Pebble Intermediate" in served_issuer(box)

    # The timer's job while another holds the lock (flock(1), as a manual cert renew would):
    # it says so in one line and exits 75, which its unit counts as success (acmelock.py).
    lock = f"{TLS_DIR}/hello.crt.acme-lock"
    box.run(["systemd-run", "--unit=acme-lock-holder", "flock", lock, "sleep", "300"])
    try:
        wait_until(
            lambda: box.run(["flock", "-n", lock, "true"], check=False).returncode == 1,
            what="the lock holder",
        )
        box.run(["systemctl", "start", "hello-cert-renew.service"])
        result = box.run(
            ["systemctl", "show", "-p", "Result,ExecMainStatus", "hello-cert-renew.service"]
        )
        assert result.stdout == "Result=success\nExecMainStatus=75\n", result.stdout
        assert "a renewal of /etc/cpsysd/tls/hello.crt is already running" in box.journal(
            "hello-cert-renew.service"
        )
    finally:
        box.run(["systemctl", "stop", "acme-lock-holder.service"], check=False)
