"""A failing ACME renewal in ``cpsysd serve``'s STATUS=: the real serve process, a real
NOTIFY_SOCKET, and the failure record the renewal job writes (cpsysd.host.acmerenew), read at
start, at reload (SIGHUP) and by the poll; gone again once the record is removed."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtimekit import CPSYSD, NotifyReceiver, Proc, free_port, write_app

from cpsysd.runtime import renewal

LINE = "certificate renewal failing since 2026-12-06 04:00 UTC: cannot reach the ACME directory"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[NotifyReceiver]:
    notify = NotifyReceiver(tmp_path / "notify.sock")
    yield notify
    notify.close()


def _describe(tmp_path: Path, port: int) -> Path:
    extra = (
        "[tls]\n"
        f'cert = "{tmp_path}/cert.pem"\nkey = "{tmp_path}/key.pem"\n'
        'acme = "https://127.0.0.1:1/dir"\nhosts = ["app.test"]\n'
        f'acme_challenge_dir = "{tmp_path}/challenges"\n'
        f'acme_status_dir = "{tmp_path}/status"\n'
    )
    return write_app(tmp_path / "app", [f"127.0.0.1:{port}"], extra=extra)


def test_status_names_a_failing_renewal_until_it_succeeds(
    tmp_path: Path, receiver: NotifyReceiver
) -> None:
    port = free_port()
    description = _describe(tmp_path, port)
    record = tmp_path / "status" / "failure"
    record.parent.mkdir()
    record.write_text(LINE + "\n")
    proc = Proc(
        [*CPSYSD, "serve", "-c", str(description)],
        tmp_path / "serve.log",
        env={"NOTIFY_SOCKET": receiver.path},
    )
    try:
        ready = receiver.wait_for("READY", "1")
        serving = f"Serving rt on http://127.0.0.1:{port}"
        assert receiver.messages[ready]["STATUS"] == f"{serving}; {LINE}"
        # The job succeeded (it removes the record); a reload shows the plain status.
        record.unlink()
        proc.popen.send_signal(signal.SIGHUP)
        again = receiver.wait_for("READY", "1", start=ready + 1)
        assert receiver.messages[again]["STATUS"] == serving
        # A new failure, with no reload: the poll sends it.
        record.write_text(LINE.replace("04:00", "05:00") + "\n")
        timeout = renewal.POLL_SECONDS * 2 + 5
        polled = receiver.wait_for("STATUS", timeout=timeout, start=again + 1)
        assert receiver.messages[polled]["STATUS"] == f"{serving}; {LINE.replace('04:00', '05:00')}"
    finally:
        proc.stop()


def test_read_failure_is_one_line_or_none(tmp_path: Path) -> None:
    record = tmp_path / "failure"
    assert renewal.read_failure(str(record)) is None
    record.write_text("  \n")
    assert renewal.read_failure(str(record)) is None
    record.write_text("first\nsecond\n" + "x" * 5000)
    line = renewal.read_failure(str(record))
    assert line is not None
    assert line.startswith("first second x")
    assert len(line) <= renewal.MAX_RECORD
    (tmp_path / "link").symlink_to(record)
    assert renewal.read_failure(str(tmp_path / "link")) is None  # O_NOFOLLOW
