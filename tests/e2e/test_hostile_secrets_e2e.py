"""Secrets under a real systemd (cpsysd.harness.container): the example app installed with an
encrypted
TLS key whose passphrase is a credential too. Neither the key nor the passphrase shows up in
the journal (every field of every entry), the service's environment or command line, or
``systemctl show``; the key file stays root's 0600 and the service reads copies from its
private credentials directory."""

from __future__ import annotations

import re

import pytest

from cpsysd.description.load import Listener, TLSConfig
from cpsysd.harness.container import Container
from cpsysd.tls.pki import self_signed_cert
from tests.e2e.e2etools import curl, example_spec, install_app, wait_until

pytestmark = pytest.mark.e2e
PASSPHRASE = "e2e passphrase 41d8 never to be logged"


@pytest.fixture
def box(container: Container) -> Container:
    """The shared booted container of tests/e2e/conftest.py."""
    return container


def test_no_secret_in_journal_environment_or_process(box: Container) -> None:
    leaf = self_signed_cert("localhost", "127.0.0.1")
    key = leaf.private_key_pem(PASSPHRASE.encode()).bytes()
    needles = [PASSPHRASE, PASSPHRASE[:14]]
    for pem in (key, leaf.private_key_pem().bytes()):
        needles += [ln.decode() for ln in pem.splitlines() if len(ln) >= 40 and b"--" not in ln]
    box.write_file("/etc/cpsysd/tls/hello.crt", leaf.cert_pem.bytes().decode())
    box.write_file("/etc/cpsysd/tls/hello.key", key.decode(), 0o600)
    box.write_file("/etc/cpsysd/tls/hello.pass", PASSPHRASE + "\n", 0o600)
    box.write_file(  # the admin's drop-in: cpsysd never writes or touches it
        "/etc/systemd/system/hello.service.d/passphrase.conf",
        "[Service]\nLoadCredential=tls-key-passphrase:/etc/cpsysd/tls/hello.pass\n",
    )
    tls = TLSConfig(cert="/etc/cpsysd/tls/hello.crt", key="/etc/cpsysd/tls/hello.key")
    spec = example_spec(listeners=(Listener("https", True, port=443),), tls=tls)
    install_app(box, spec)

    status, _, _ = curl(box, "https://127.0.0.1/whoami", "--insecure")
    assert status == 200
    box.run(["systemctl", "reload", "hello.service"])  # re-reads key and passphrase
    wait_until(lambda: curl(box, "https://127.0.0.1/", "--insecure")[0] == 200, what="reload")
    bad, _, _ = curl(box, "https://127.0.0.1/nonexistent", "--insecure")
    assert bad == 404
    # The access log reaches journald asynchronously: read the journal once it is there.
    wait_until(lambda: "/nonexistent" in box.journal("hello.service"), what="the access log")

    pid = box.run(["systemctl", "show", "-p", "MainPID", "--value", "hello.service"]).stdout
    views = {
        "journal": box.run(["journalctl", "--no-pager", "-o", "export"]).stdout,
        "show": box.run(["systemctl", "show", "hello.service", "hello.socket"]).stdout,
        "process": box.sh(
            f"cat /proc/{pid.strip()}/environ /proc/{pid.strip()}/cmdline; echo;"
            f" cat /proc/{pid.strip()}/task/*/comm"
        ).stdout,
        "units": box.run(["systemctl", "cat", "hello.service", "hello.socket"]).stdout,
    }
    assert "hello" in views["journal"]
    assert "/nonexistent" in views["journal"]
    for where, text in views.items():
        leaked = [needle for needle in needles if needle in text]
        assert leaked == [], f"{where} shows secret material"
    assert box.run(["stat", "-c", "%a %U", "/etc/cpsysd/tls/hello.key"]).stdout == "600 root\n"
    listing = box.run(["ls", "-l", "/run/credentials/hello.service"]).stdout
    for name in ("tls-cert", "tls-key", "tls-key-passphrase"):  # 0400, the service's own user
        assert re.search(rf"^-r-------- 1 hello .* {name}$", listing, re.MULTILINE), listing
