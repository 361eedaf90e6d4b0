"""tls-alpn-01 under a real systemd: the app listens on 443 only (no plain listener for
http-01), pebble's VA validates tls-alpn-01 against that port for real, and the answer is read by
the DynamicUser app from /run/cpsysd/acme/hello/tls-alpn-01/ (the sandboxed job's
RuntimeDirectory). ``cpsysd install`` issues; the restarted app serves pebble's certificate,
verified against pebble's root; keys stay root's 0600; an acme-tls/1 client of a name without a
pending challenge gets the normal certificate."""

from __future__ import annotations

import pytest

from cpsysd.description.load import Listener, TLSConfig
from cpsysd.description.model import AcmeChallenge
from cpsysd.harness.container import Container
from tests.e2e.e2etools import example_spec, install_app
from tests.e2e.test_acme_e2e import DIRECTORY, HOST, PEBBLE, TLS_DIR, served_issuer, start_pebble

pytestmark = pytest.mark.e2e


def test_install_issues_over_tls_alpn_01(container: Container) -> None:
    box = container
    start_pebble(box, tls_port=443)
    config = TLSConfig(
        cert=f"{TLS_DIR}/hello.crt",
        key=f"{TLS_DIR}/hello.key",
        acme=DIRECTORY,
        acme_ca_bundle=f"{PEBBLE}/https.pem",
        acme_email="ops@example.org",
        acme_challenge=AcmeChallenge.TLS_ALPN_01,
        hosts=(HOST,),
    )
    install_app(box, example_spec(listeners=(Listener("https", True, port=443),), tls=config))
    result = box.run(["systemctl", "show", "-p", "Result", "--value", "hello-cert-renew.service"])
    assert result.stdout.strip() == "success", box.journal("hello-cert-renew.service")
    assert "Pebble Intermediate" in served_issuer(box)
    # the app's journal names the validation it answered (runtime/acmelog.py)
    assert f"answered the tls-alpn-01 validation for {HOST} to " in box.journal("hello.service")
    for key in ("hello.key", "acme-account.pem"):
        assert box.run(["stat", "-c", "%a %U", f"{TLS_DIR}/{key}"]).stdout == "600 root\n"
    # the answers go with the order (and the job's RuntimeDirectory with the job)
    left = box.run(["find", "/run/cpsysd/acme", "-type", "f"], check=False).stdout
    assert left == ""
    # a validator's handshake for a name without a pending challenge: the normal certificate
    probe = (
        f"openssl s_client -connect 127.0.0.1:443 -servername {HOST} -alpn acme-tls/1 "
        "</dev/null 2>/dev/null | openssl x509 -noout -issuer"
    )
    assert "Pebble Intermediate" in box.sh(probe).stdout
