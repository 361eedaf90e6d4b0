"""TLS under a real systemd: the key and certificate reach the DynamicUser service only through
LoadCredential= (the key file itself is root's, mode 0600), and the app serves HTTPS with them."""

from __future__ import annotations

import pytest
from e2etools import curl, example_spec, install_app

from cpsysd.description.load import Listener, TLSConfig
from cpsysd.harness.container import Container
from cpsysd.tls.pki import CertificateAuthority

pytestmark = pytest.mark.e2e


def test_https_with_keys_from_load_credential(container: Container) -> None:
    ca = CertificateAuthority.create()
    leaf = ca.issue_leaf_cert("localhost", "127.0.0.1")
    container.write_file("/etc/cpsysd/tls/ca.pem", ca.cert_pem.bytes().decode())
    container.write_file("/etc/cpsysd/tls/hello.crt", leaf.cert_pem.bytes().decode())
    container.write_file(
        "/etc/cpsysd/tls/hello.key", leaf.private_key_pem().bytes().decode(), 0o600
    )
    tls = TLSConfig(cert="/etc/cpsysd/tls/hello.crt", key="/etc/cpsysd/tls/hello.key")
    spec = example_spec(listeners=(Listener("https", True, port=443),), tls=tls)
    install_app(container, spec)

    status, _, body = curl(
        container, "https://127.0.0.1/whoami", "--cacert", "/etc/cpsysd/tls/ca.pem"
    )
    assert status == 200
    assert '"scheme": "https"' in body
    # curl verified the chain and the name against our CA; the handshake used TLS 1.2 or 1.3.
    handshake = container.sh(
        "openssl s_client -brief -connect 127.0.0.1:443 -CAfile /etc/cpsysd/tls/ca.pem"
        " -verify_ip 127.0.0.1 </dev/null 2>&1",
        check=False,
    ).stdout
    assert "Verification: OK" in handshake
    assert "Protocol version: TLSv1.3" in handshake or "Protocol version: TLSv1.2" in handshake
    refused = container.run(
        [
            "curl",
            "-s",
            "--tls-max",
            "1.1",
            "--tlsv1.0",
            "--cacert",
            "/etc/cpsysd/tls/ca.pem",
            "https://127.0.0.1/",
        ],
        check=False,
    )
    assert refused.returncode != 0  # TLS 1.0/1.1 are refused

    # The service got the files as credentials; its user could not have read the key file.
    assert (
        container.run(["stat", "-c", "%a %U", "/etc/cpsysd/tls/hello.key"]).stdout == "600 root\n"
    )
    credentials = container.run(["ls", "/run/credentials/hello.service"]).stdout.split()
    assert credentials == ["tls-cert", "tls-key"]
    unit = container.run(["systemctl", "cat", "hello.service"]).stdout
    assert "LoadCredential=tls-key:/etc/cpsysd/tls/hello.key" in unit
