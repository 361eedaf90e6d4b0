"""tls-alpn-01 faults, as tests/test_acme_faults.py has them for http-01: a handshake the CA
cannot make (nothing on the https port it validates), a name the CA refuses (a wildcard), and
the CA going away right after the runtime answered its validation. The old certificate stays,
no key is readable by others, and the job says cause and fix in one line. Real pebble, real
tls-alpn-01 validation (never PEBBLE_VA_ALWAYS_VALID), the real ``cpsysd serve`` answering."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from acmekit import Pebble, available, running_pebble, wait_directory
from runtimekit import CPSYSD, Proc, free_port, socket_activate, wait_listening, write_app
from test_acme import HOST, _fails_keeping_the_old, _renew, _short_lived, _verify_against_pebble
from test_acme_faults import _pair

pytestmark = [
    pytest.mark.skipif(not available(), reason="pebble is not installed (scripts/setup.sh)"),
    pytest.mark.slow,
]


def _describe(tmp_path: Path, pebble: Pebble, port: int, hosts: str = "") -> Path:
    tls = tmp_path / "tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    extra = (
        f'[tls]\ncert = "{tls}/cert.pem"\nkey = "{tls}/key.pem"\n'
        f'acme = "{pebble.directory}"\nacme_ca_bundle = "{pebble.ca_bundle}"\n'
        f'acme_challenge = "tls-alpn-01"\nhosts = [{hosts or chr(34) + HOST + chr(34)}]\n'
        f'acme_challenge_dir = "{tmp_path}/challenges"\nacme_status_dir = "{tmp_path}/status"\n'
    )
    return write_app(tmp_path / "app", [f"127.0.0.1:{port}=https"], extra=extra)


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    # Its VA handshakes with a port where nothing listens: no validation can succeed.
    with running_pebble(tmp_path_factory.mktemp("pebble"), tls_port=free_port()) as server:
        yield server


def test_a_handshake_the_ca_cannot_make(tmp_path: Path, pebble: Pebble) -> None:
    description = _describe(tmp_path, pebble, free_port())
    old = _short_lived(tmp_path / "tls", hours_left=1)
    error = _fails_keeping_the_old(description, tmp_path / "tls", old)
    assert f"the CA could not validate {HOST}" in error
    assert "NAME:443 over TLS on this app's https listener" in error
    assert not list((tmp_path / "challenges" / "tls-alpn-01").iterdir())
    _pair(tmp_path / "tls")  # every key 0600


def test_a_name_the_ca_refuses_over_tls_alpn_01(tmp_path: Path, pebble: Pebble) -> None:
    # A wildcard: validated only over dns-01 (RFC 8555 section 7.1.3; RFC 8737 section 3).
    description = _describe(tmp_path, pebble, free_port(), hosts=f'"*.{HOST}"')
    old = _short_lived(tmp_path / "tls", hours_left=1)
    error = _fails_keeping_the_old(description, tmp_path / "tls", old)
    assert f"the CA refuses to validate *.{HOST} over tls-alpn-01 (it offers dns-01)" in error
    assert "list each name in [tls] hosts" in error
    _pair(tmp_path / "tls")


@pytest.fixture
def killing_proxy(tmp_path: Path) -> Iterator[tuple[Pebble, int, threading.Event]]:
    """A pebble of its own whose VA handshakes through a TCP relay to the app's https port
    (the yielded port): when the first validation connection ends, the relay SIGKILLs pebble,
    so the CA is gone between the runtime's answer and the finalize."""
    relay = socket.create_server(("127.0.0.1", 0))
    app_port, killed, threads = free_port(), threading.Event(), []
    with running_pebble(tmp_path / "pebble", tls_port=relay.getsockname()[1]) as pebble:

        def pump(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            for sock in (src, dst):  # EOF (or a reset) either way: end both directions
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        def relay_one(client: socket.socket) -> None:
            with client, socket.create_connection(("127.0.0.1", app_port), timeout=20) as app:
                back = threading.Thread(target=pump, args=(app, client), daemon=True)
                back.start()
                pump(client, app)
                back.join(20)
            if not killed.is_set():  # once: the revived CA validates through the relay too
                killed.set()
                os.kill(pebble.pid, signal.SIGKILL)

        def accept() -> None:
            while True:
                try:
                    client, _ = relay.accept()
                except OSError:
                    return  # closed at the end of the test
                thread = threading.Thread(target=relay_one, args=(client,), daemon=True)
                threads.append(thread)
                thread.start()

        acceptor = threading.Thread(target=accept, daemon=True)
        acceptor.start()
        try:
            yield pebble, app_port, killed
        finally:
            relay.close()
            acceptor.join(5)


def test_the_ca_goes_away_after_the_runtime_answered(
    tmp_path: Path, killing_proxy: tuple[Pebble, int, threading.Event]
) -> None:
    pebble, port, killed = killing_proxy
    description = _describe(tmp_path, pebble, port)
    tls = tmp_path / "tls"
    old = _short_lived(tls, hours_left=1)
    old_key = (tls / "key.pem").read_bytes()
    argv = socket_activate(
        [f"127.0.0.1:{port}"], [*CPSYSD, "serve", "-c", str(description)], fdnames=["https"]
    )
    serve = Proc(argv, tmp_path / "serve.log")
    try:
        wait_listening(f"127.0.0.1:{port}")
        done = _renew(description)
        assert killed.is_set(), serve.output()  # the validation reached the app
        assert done.returncode != 0
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert f"lost the ACME server {pebble.directory} mid-order" in done.stderr
        assert "stays as it is, next try after" in done.stderr
        assert (tls / "cert.pem").read_bytes() == old
        assert (tls / "key.pem").read_bytes() == old_key
        _pair(tls)  # every key 0600
        assert not list((tmp_path / "challenges" / "tls-alpn-01").iterdir())
        record = (tmp_path / "status" / "failure").read_text()
        assert f"lost the ACME server {pebble.directory} mid-order" in record
        assert f"answered the tls-alpn-01 validation for {HOST} to 127.0.0.1:" in serve.output()
        # The CA comes back on the same ports: past the backoff (--force), the next run puts
        # the CA's matching pair in place.
        revived = Proc(pebble.argv, tmp_path / "pebble-again.log", env=pebble.env)
        try:
            wait_directory(pebble.directory, pebble.ca_bundle, revived)
            again = _renew(description, "--force")
            assert again.returncode == 0, again.stderr + serve.output()
            _verify_against_pebble(pebble, tls / "cert.pem")
            assert _pair(tls)[2] is True
            assert not (tmp_path / "status" / "failure").exists()
        finally:
            revived.stop()
    finally:
        serve.stop()
