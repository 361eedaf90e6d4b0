"""Faults in an ACME renewal: the CA going away mid-order, and the job killed (SIGKILL, through
strace's fault injection) at every file-system step. The old certificate keeps serving, no
private key on disk is ever readable by others, the error names cause and fix in one line, and
the next run puts a matching pair from the CA in place. Real pebble, real http-01 validation."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from acmekit import Pebble, available, running_pebble, wait_directory
from runtimekit import CPSYSD, Proc
from test_acme import _describe, _mode, _renew, _serve, _short_lived, _verify_against_pebble
from test_hostile_faults import run_killed

from cpsysd.tls.pki import Certificate, PrivateKey

pytestmark = [
    pytest.mark.skipif(not available(), reason="pebble is not installed (scripts/setup.sh)"),
    pytest.mark.slow,
]
# Only the steps that change files: a kill at a socket write is a lost connection, which the
# CA-away test covers, and the number of network writes differs from run to run.
FILE_STEPS = ("fsync", "rename", "unlink", "link", "mkdir")


@pytest.fixture
def answering_then_killing_the_ca(tmp_path: Path) -> Iterator[tuple[Pebble, Path]]:
    """A pebble of its own, and an http-01 responder on its validation port that answers from
    the challenge directory and then SIGKILLs pebble: the CA is gone between the validation
    and the finalize."""
    challenges, killed = tmp_path / "challenges", threading.Event()
    with running_pebble(tmp_path / "pebble") as pebble:

        class Answer(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                token = self.path.rsplit("/", 1)[-1]
                body = (challenges / token).read_bytes() if token.isascii() else b""
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                if not killed.is_set():  # once: the revived CA validates through it too
                    killed.set()
                    os.kill(pebble.pid, signal.SIGKILL)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", pebble.http_port), Answer)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield pebble, challenges
        finally:
            server.shutdown()
            server.server_close()


def _pair(tls: Path) -> tuple[bytes, bytes, bool]:
    """(cert, key, key matches cert), and every private key in the directory 0600."""
    for path in tls.iterdir():
        if path.is_file() and b"PRIVATE KEY" in path.read_bytes():
            assert _mode(path) & 0o077 == 0, f"{path.name} is readable by others"
    cert, key = (tls / "cert.pem").read_bytes(), (tls / "key.pem").read_bytes()
    leaf = Certificate.list_from_pem(cert, "cert.pem")[0]  # whole, or this raises
    return cert, key, PrivateKey.from_pem(key, None, source="key.pem").matches(leaf)


def test_the_ca_goes_away_after_validating(
    tmp_path: Path, answering_then_killing_the_ca: tuple[Pebble, Path]
) -> None:
    pebble, challenges = answering_then_killing_the_ca
    description = _describe(tmp_path, pebble, pebble.http_port)
    tls = tmp_path / "tls"
    old = _short_lived(tls, hours_left=1)
    old_key = (tls / "key.pem").read_bytes()
    done = _renew(description)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"lost the ACME server {pebble.directory} mid-order" in done.stderr
    assert "stays as it is, next try after" in done.stderr
    assert (tls / "cert.pem").read_bytes() == old
    assert (tls / "key.pem").read_bytes() == old_key
    assert _mode(tls / "key.pem") == 0o600
    assert not list(challenges.iterdir())  # the answers are removed on the failure too
    record = (tmp_path / "status" / "failure").read_text()
    assert f"lost the ACME server {pebble.directory} mid-order" in record
    # The CA comes back (same ports, a fresh state): the next run waits out the backoff, and
    # one past it (--force stands in for the passing hour) puts the CA's pair in place.
    revived = Proc(pebble.argv, tmp_path / "pebble-again.log", env=pebble.env)
    try:
        wait_directory(pebble.directory, pebble.ca_bundle, revived)
        waiting = _renew(description)
        assert waiting.returncode == 0, waiting.stderr
        assert "next try after" in waiting.stdout
        again = _renew(description, "--force")
        assert again.returncode == 0, again.stderr
        assert "renewed" in again.stdout
        assert not Path(str(tls / "cert.pem") + ".acme-retry").exists()
        assert not (tmp_path / "status" / "failure").exists()  # STATUS= says nothing more
        _verify_against_pebble(pebble, tls / "cert.pem")
        assert _pair(tls)[2] is True
    finally:
        revived.stop()


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with running_pebble(tmp_path_factory.mktemp("pebble")) as server:
        yield server


def _fresh(tmp_path: Path, name: str, pebble: Pebble, challenges: Path) -> Path:
    """A due CA-issued certificate and a description whose answers go to ``challenges``,
    the directory the one ``cpsysd serve`` of the test answers from."""
    directory = tmp_path / name
    directory.mkdir()
    description = _describe(directory, pebble, pebble.http_port)
    text = description.read_text().replace(str(directory / "challenges"), str(challenges))
    description.write_text(text)
    _short_lived(directory / "tls", hours_left=1)
    return description


def _file_steps(argv: list[str], trace: Path) -> list[tuple[str, int]]:
    subprocess.run(
        ["strace", "-f", "-qq", "-o", str(trace), "-e", f"trace={','.join(FILE_STEPS)}", *argv],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=120,
    )
    counts: dict[str, int] = {}
    for line in trace.read_text().splitlines():
        name = line.split(None, 1)[-1].split("(", 1)[0]
        if name in FILE_STEPS:
            counts[name] = counts.get(name, 0) + 1
    return [(name, n) for name, total in sorted(counts.items()) for n in range(1, total + 1)]


def test_renewal_killed_at_every_step(tmp_path: Path, pebble: Pebble) -> None:
    """SIGKILL at each fsync/rename/unlink/link/mkdir of a real renewal from pebble: the files
    are the old pair or a whole new key beside the old certificate (two renames), every key
    0600, and the next timer run puts the CA's matching pair in place."""
    challenges = tmp_path / "challenges"
    challenges.mkdir()  # made by the first run: the same steps in the reference and the rest
    serving = _fresh(tmp_path, "serving", pebble, challenges)
    proc = _serve(tmp_path, serving, pebble.http_port)
    try:
        reference = _fresh(tmp_path, "reference", pebble, challenges)
        argv = [*CPSYSD, "cert", "renew", "-c", str(reference), "--no-restart"]
        points = _file_steps(argv, tmp_path / "reference.strace")
        assert _pair(tmp_path / "reference" / "tls")[2] is True
        assert len(points) >= 8, points  # account key, answer, key and certificate, cleanup
        torn = 0
        for syscall, n in points:
            description = _fresh(tmp_path, f"kill-{syscall}-{n}", pebble, challenges)
            tls = tmp_path / f"kill-{syscall}-{n}" / "tls"
            old_cert = (tls / "cert.pem").read_bytes()
            argv = [*CPSYSD, "cert", "renew", "-c", str(description), "--no-restart"]
            code = run_killed(argv, syscall, n, tls.parent)
            assert code == -9, f"{syscall} #{n}: not killed (exit {code})"
            cert, _, matches = _pair(tls)
            if not matches:
                torn += 1
                assert cert == old_cert, f"{syscall} #{n}: a new certificate with the old key"
            repair = _renew(description)
            assert repair.returncode == 0, f"{syscall} #{n}: {repair.stderr}"
            cert, _, matches = _pair(tls)
            assert matches, f"{syscall} #{n}: the next run left a mismatched pair"
            assert b"old CA" not in cert or cert == old_cert
            _verify_against_pebble(pebble, tls / "cert.pem")
            left = [p.name for p in tls.glob(".*")]
            assert not left, f"{syscall} #{n}: staging files stayed: {left}"
            answers = [p.name for p in challenges.iterdir()]
            assert not answers, f"{syscall} #{n}: the killed job's answers stayed: {answers}"
        assert torn >= 1  # the kill between the key's and the certificate's rename
    finally:
        proc.stop()
