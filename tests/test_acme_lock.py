"""One ACME job per certificate at a time (cpsysd/host/acmelock.py), with two real
``cpsysd cert renew`` processes: the first holds the lock while it waits on the CA, the second
says so in one line, exits 75 and leaves the first job's challenge answers alone; a SIGKILLed
holder leaves no lock behind. The "CA" here is a socket that accepts and never answers: the
first job is then provably inside its order (past the lock) and stays there."""

from __future__ import annotations

import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtimekit import CPSYSD, Proc, write_app

HOST = "lock.test"


@pytest.fixture
def silent_ca() -> Iterator[socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(60)
    try:
        yield listener
    finally:
        listener.close()


def _describe(tmp_path: Path, port: int) -> Path:
    tls = tmp_path / "tls"
    tls.mkdir(mode=0o700)
    extra = (
        f'[tls]\ncert = "{tls}/cert.pem"\nkey = "{tls}/key.pem"\n'
        f'acme = "https://127.0.0.1:{port}/dir"\nhosts = ["{HOST}"]\n'
        f'acme_challenge_dir = "{tmp_path}/challenges"\nacme_status_dir = "{tmp_path}/status"\n'
    )
    return write_app(tmp_path / "app", ["127.0.0.1:8080"], extra=extra)


def _renew(description: Path) -> subprocess.CompletedProcess[str]:
    argv = [*CPSYSD, "cert", "renew", "-c", str(description), "--no-restart", "--force"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_a_second_job_refuses_while_the_first_orders(
    tmp_path: Path, silent_ca: socket.socket
) -> None:
    description = _describe(tmp_path, silent_ca.getsockname()[1])
    argv = [*CPSYSD, "cert", "renew", "-c", str(description), "--no-restart", "--force"]
    first = Proc(argv, tmp_path / "first.log")
    try:
        connection, _ = silent_ca.accept()  # the first job is in its order, past the lock
        try:
            # What the first job's order has written by now: a live answer.
            answer = tmp_path / "challenges" / "bGl2ZS10b2tlbg"
            answer.parent.mkdir(exist_ok=True)
            answer.write_text("bGl2ZS10b2tlbg.thumbprint")
            second = _renew(description)
            assert second.returncode == 75, second.stderr
            assert second.stderr.count("\n") == 1, second.stderr
            assert "Traceback" not in second.stderr
            assert f"a renewal of {tmp_path}/tls/cert.pem is already running" in second.stderr
            assert "journalctl -u rt-cert-renew.service" in second.stderr
            assert answer.exists()  # the second job swept nothing
            lock = tmp_path / "tls" / "cert.pem.acme-lock"
            assert stat.S_IMODE(lock.stat().st_mode) == 0o600
            # Killed mid-order, the first job leaves no lock: the kernel drops it with the
            # process. Nothing listens any more, so the next job fails at the CA, not the lock.
            first.signal(signal.SIGKILL)
            assert first.wait() == -signal.SIGKILL
        finally:
            connection.close()
        silent_ca.close()
        third = _renew(description)
        assert third.returncode == 1, third.stderr
        assert "cannot reach the ACME directory" in third.stderr
    finally:
        first.stop()


def test_a_missing_certificate_directory_is_named(tmp_path: Path) -> None:
    description = _describe(tmp_path, 9)  # discard: never reached
    (tmp_path / "tls").rmdir()
    done = _renew(description)
    assert done.returncode == 1
    assert done.stderr == (
        f"cpsysd: error: directory {tmp_path}/tls does not exist (create it first)\n"
    )
