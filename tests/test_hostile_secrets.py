"""Secrets never leak, and the TLS a real client gets is the promised one.

A private key or its passphrase must not appear in a unit file, an environment variable, a
command line or process title, a log line or an error message; key files are 0600 and reach the
service through LoadCredential=. Checked by grepping for the key's PEM lines and the passphrase
in everything cpsysd produces, including /proc/PID/{environ,cmdline,comm} of a running
``cpsysd serve`` with TLS. Then ``openssl s_client`` probes that server: TLS 1.0/1.1 and weak
suites are refused (with the client's own floor lowered, and a control server showing the
client could have spoken them)."""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from cpsysd.description.load import parse_spec
from cpsysd.render.units import RenderOptions, render_units
from cpsysd.tls.certfiles import create_ca
from cpsysd.tls.pki import KeyType, PrivateKey, self_signed_cert
from tests import unitparse as up
from tests.conftest import EXAMPLE, free_port
from tests.scalekit import stop_process

PASSPHRASE = b"correct horse battery staple 7f3a"
CA_PASSPHRASE = b"the CA key's own passphrase, 2b9e"


@dataclass
class Secrets:
    cert: Path
    key: Path  # encrypted with PASSPHRASE
    passphrase: Path
    ca_passphrase: Path  # of an encrypted local CA key, for the renewal job
    needles: list[bytes]  # what must never show up: the key's base64 lines, the passphrases

    def key_lines(self, *pems: bytes) -> None:
        """Add the base64 lines of more keys (e.g. a renewed one) to the needles."""
        lines = [line for pem in pems for line in pem.splitlines()]
        self.needles += [line for line in lines if len(line) >= 40 and b"-----" not in line]

    def leaked(self, data: bytes) -> list[bytes]:
        return [needle for needle in self.needles if needle in data]


@pytest.fixture
def secrets(tmp_path: Path) -> Secrets:
    leaf = self_signed_cert("localhost", "127.0.0.1")
    directory = tmp_path / "tls"
    directory.mkdir(mode=0o700)
    cert, key = directory / "tls-cert", directory / "tls-key"
    phrase = directory / "tls-key-passphrase"
    cert.write_bytes(leaf.cert_pem.bytes())
    key.touch(mode=0o600)
    key.write_bytes(leaf.private_key_pem(PASSPHRASE).bytes())
    phrase.touch(mode=0o600)
    phrase.write_bytes(PASSPHRASE + b"\n")
    ca_phrase = directory / "tls-ca-passphrase"
    ca_phrase.touch(mode=0o600)
    ca_phrase.write_bytes(CA_PASSPHRASE + b"\n")
    found = Secrets(cert, key, phrase, ca_phrase, [PASSPHRASE, PASSPHRASE[:12], CA_PASSPHRASE[:14]])
    found.key_lines(leaf.private_key_pem().bytes(), key.read_bytes())  # plain form too
    return found


def test_units_name_key_files_only_in_load_credential(secrets: Secrets) -> None:
    table = {
        "name": "app",
        "entry": "app:Root",
        "python": "/usr/bin/python3",
        "listen": ["443=https"],
        "tls": {
            "cert": str(secrets.cert),
            "key": str(secrets.key),
            "renew_days": 30,
            "ca_dir": "/etc/cpsysd/ca",
            "passphrase_file": str(secrets.passphrase),
            "ca_passphrase_file": str(secrets.ca_passphrase),
        },
        "environment": {"A": "1"},
    }
    units = render_units(parse_spec(table, "/srv"), RenderOptions("/var/lib/cpsysd/app.toml"))
    assert set(units) == {"app.service", "app.socket", "app-cert-renew.service"} | {
        "app-cert-renew.timer"
    }
    # Each secret file is named only as a credential, and only where it is needed.
    needs = {
        "app.service": {"tls-key": secrets.key, "tls-key-passphrase": secrets.passphrase},
        "app-cert-renew.service": {
            "tls-key-passphrase": secrets.passphrase,
            "tls-ca-passphrase": secrets.ca_passphrase,
        },
    }
    secret_files = (secrets.key, secrets.passphrase, secrets.ca_passphrase)
    for name, text in units.items():
        assert secrets.leaked(text.encode()) == [], name
        unit = up.parse_unit(text, name.rsplit(".", 1)[1])
        named = {}
        for assignment in unit.assignments:
            for path in secret_files:
                if str(path) in assignment.value:
                    assert assignment.key == "LoadCredential", (name, assignment.key)
                    credential, source = up.split_load_credential(assignment.value)
                    named[credential] = Path(source)
        assert named == needs.get(name, {}), name
        for line in unit.values("Service", "Environment"):
            assert "KEY" not in line.upper(), line
            assert "PASS" not in line.upper(), line
    service = up.parse_unit(units["app.service"])
    assert "DynamicUser" in dict(service.pairs("Service"))  # root's 0600 key: via credentials


def test_cert_commands_print_no_secret(tmp_path: Path, secrets: Secrets) -> None:
    cpsysd = [sys.executable, "-m", "cpsysd", "cert"]
    made = subprocess.run(
        [
            *cpsysd,
            "selfsigned",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "localhost",
            "--passphrase-file",
            str(secrets.passphrase),
        ],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )
    key = (tmp_path / "k.pem").read_bytes()
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED" in key
    body = [line for line in key.splitlines() if len(line) >= 40]
    for output in (made.stdout, made.stderr):
        assert PASSPHRASE not in output
        assert not any(line in output for line in body)
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"not the passphrase at all 1234\n")
    checked = subprocess.run(
        [*cpsysd, "check", "c.pem", "--key", "k.pem", "--passphrase-file", str(wrong)],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert checked.returncode != 0
    assert checked.stderr.count(b"\n") == 1, checked.stderr
    assert b"not the passphrase" not in checked.stderr + checked.stdout
    assert not any(line in checked.stderr + checked.stdout for line in body)


def test_cert_renew_prints_no_secret(tmp_path: Path, secrets: Secrets) -> None:
    """``cpsysd cert renew`` of an encrypted key from a CA with an encrypted key: neither
    passphrase nor any key line in its output, and a wrong CA passphrase is one line."""
    ca_dir = tmp_path / "ca"
    create_ca(ca_dir, KeyType.EC_P256, 365, CA_PASSPHRASE)
    secrets.key_lines((ca_dir / "ca.key").read_bytes())
    description = tmp_path / "app.toml"

    def describe(ca_passphrase: Path) -> None:
        description.write_text(
            'name = "app"\nentry = "app:Root"\nlisten = ["443=https"]\n[tls]\n'
            f'cert = "{secrets.cert}"\nkey = "{secrets.key}"\nrenew_days = 30\n'
            f'hosts = ["localhost"]\nca_dir = "{ca_dir}"\n'
            f'passphrase_file = "{secrets.passphrase}"\nca_passphrase_file = "{ca_passphrase}"\n'
        )

    renew = [sys.executable, "-m", "cpsysd", "cert", "renew", "-c", str(description)]
    renew += ["--force", "--no-restart"]
    describe(secrets.ca_passphrase)
    done = subprocess.run(renew, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    renewed = secrets.key.read_bytes()
    assert renewed.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    secrets.key_lines(renewed, PrivateKey.from_pem(renewed, PASSPHRASE).pem().bytes())
    assert secrets.leaked(done.stdout + done.stderr) == []
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"not the CA passphrase 55aa\n")
    describe(wrong)
    failed = subprocess.run(renew, capture_output=True, check=False)
    assert failed.returncode != 0
    assert failed.stderr.count(b"\n") == 1, failed.stderr
    assert b"wrong passphrase" in failed.stderr
    assert secrets.leaked(failed.stdout + failed.stderr) == []
    assert b"not the CA" not in failed.stdout + failed.stderr


# --- a running cpsysd serve with TLS ----------------------------------------------------------


@contextmanager
def serving(
    tmp_path: Path, secrets: Secrets, credentials: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``cpsysd serve`` of the example app on a TLS listener under systemd-socket-activate, the
    TLS files handed in as credentials (as LoadCredential= does)."""
    port = free_port()
    description = tmp_path / "tls-app.toml"
    description.write_text(
        f'name = "tlsapp"\nentry = "hello:Root"\nworking_directory = "{EXAMPLE}"\n'
        f'python = "{sys.executable}"\nlisten = ["127.0.0.1:{port}=https"]\n'
        f'[tls]\ncert = "{secrets.cert}"\nkey = "{secrets.key}"\n'
    )
    log = (tmp_path / "serve.log").open("wb")
    activate = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=https"]
    activate += ["-E", f"CREDENTIALS_DIRECTORY={credentials}"]  # it passes only what it is told
    proc = subprocess.Popen(
        [*activate, sys.executable, "-m", "cpsysd", "serve", "-c", str(description)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield port, proc
    finally:
        stop_process(proc, grace=30)
        log.close()


def https_get(port: int, path: str = "/") -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + 60
    while True:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        finally:
            conn.close()


def connect(port: int) -> socket.socket:
    deadline = time.monotonic() + 60
    while True:  # systemd-socket-activate listens a moment after it started
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=60)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def process_views(pid: int) -> bytes:
    """What other tools see of a process: environment, command line, title, of it and its
    threads."""
    views = []
    for name in ("environ", "cmdline", "comm"):
        views.append(Path(f"/proc/{pid}/{name}").read_bytes())
    for task in Path(f"/proc/{pid}/task").iterdir():
        views.append((task / "comm").read_bytes())
    return b"\0".join(views)


def test_serve_keeps_key_and_passphrase_to_itself(tmp_path: Path, secrets: Secrets) -> None:
    with serving(tmp_path, secrets, secrets.cert.parent) as (port, proc):
        assert https_get(port) == 200
        assert https_get(port, "/nonexistent-%0aline") == 404
        views = process_views(proc.pid)  # systemd-socket-activate exec()s cpsysd serve
        assert b"cpsysd" in views
        assert secrets.leaked(views) == []
        proc.send_signal(signal.SIGHUP)  # a reload reads the key and passphrase again
        assert https_get(port) == 200
        assert secrets.leaked(process_views(proc.pid)) == []
    assert proc.returncode == 0
    log = (tmp_path / "serve.log").read_bytes()
    assert b"/nonexistent" in log  # the access log went here ...
    assert secrets.leaked(log) == []  # ... and holds no secret


def test_wrong_passphrase_is_one_line_without_it(tmp_path: Path, secrets: Secrets) -> None:
    credentials = tmp_path / "creds"
    credentials.mkdir()
    for source in (secrets.cert, secrets.key):
        (credentials / source.name).write_bytes(source.read_bytes())
    (credentials / "tls-key-passphrase").write_bytes(b"a wrong passphrase, 9c1e\n")
    with serving(tmp_path, secrets, credentials) as (port, proc):
        # The first connection starts the server, which refuses to run.
        first = connect(port)
        with first, contextlib.suppress(OSError):
            first.recv(1)
        proc.wait(timeout=60)
    assert proc.returncode != 0
    log = (tmp_path / "serve.log").read_bytes()
    assert b"cpsysd: error: cannot decrypt the TLS key" in log, log
    assert b"wrong passphrase" in log, log
    assert b"Traceback" not in log
    assert b"a wrong passphrase" not in log
    assert secrets.leaked(log) == []


# --- what a real client gets ------------------------------------------------------------------

SECLEVEL0 = "DEFAULT:@SECLEVEL=0"  # lowers the client's own floor: refusals are the server's


def s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def handshake_ok(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0 and "Cipher is (NONE)" not in result.stdout


@pytest.fixture
def weak_server(tmp_path: Path, secrets: Secrets) -> Iterator[int]:
    """A control: openssl s_server speaking TLS 1.0 with a CBC suite, which the same client
    options must reach (else a refusal below would prove nothing)."""
    plain_key = tmp_path / "plain.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(secrets.key), "-out", str(plain_key), "-passin",
         f"file:{secrets.passphrase}"],
        check=True,
    )  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(secrets.cert),
         "-key", str(plain_key), "-cipher", SECLEVEL0, "-quiet", "-naccept", "50"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port
    finally:
        server.kill()
        server.wait()


CBC = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"  # no AEAD: out since TLS 1.2 in cpsysd
WEAK = [  # the first four are what the control server speaks
    ("-tls1", "-cipher", f"{CBC}:@SECLEVEL=0"),
    ("-tls1_1", "-cipher", f"{CBC}:@SECLEVEL=0"),
    ("-tls1_2", "-cipher", f"{CBC}:@SECLEVEL=0"),
    ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:@SECLEVEL=0"),
    ("-tls1_2", "-cipher", "aNULL:eNULL:RC4:3DES:DES:EXPORT:@SECLEVEL=0"),
]


def test_tls_scan(tmp_path: Path, secrets: Secrets, weak_server: int) -> None:
    with serving(tmp_path, secrets, secrets.cert.parent) as (port, _):
        assert https_get(port) == 200
        for args in WEAK[:4]:
            assert handshake_ok(s_client(weak_server, *args)), f"control failed for {args}"
            assert not handshake_ok(s_client(port, *args)), f"accepted {args}"
        for args in WEAK[4:]:
            assert not handshake_ok(s_client(port, *args)), f"accepted {args}"
        good13 = s_client(port, "-tls1_3")
        assert handshake_ok(good13), good13.stdout + good13.stderr
        good12 = s_client(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
        assert handshake_ok(good12), good12.stdout + good12.stderr
        assert "Secure Renegotiation IS NOT supported" not in good12.stdout
