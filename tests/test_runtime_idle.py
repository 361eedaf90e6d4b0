"""``idle_stop_sec``: under the real ``systemd-socket-activate``, ``cpsysd serve`` exits 0 on its
own once no connection has been open for that long; an open keep-alive connection or a request in
flight keeps it running. Without socket activation it is off. Bounds are generous: nothing here
asserts a timing beyond "it stops within many times the idle time"."""

from __future__ import annotations

import http.client
import subprocess
import time
from pathlib import Path

import pytest
from runtimekit import (
    CPSYSD,
    NotifyReceiver,
    Proc,
    free_port,
    get,
    get_json,
    get_when_up,
    socket_activate,
    wait_for,
    write_app,
)

IDLE = "idle_stop_sec = 2"


@pytest.fixture
def receiver(tmp_path: Path):
    notify = NotifyReceiver(tmp_path / "notify.sock")
    yield notify
    notify.close()


def _activated(tmp_path: Path, port: int, receiver: NotifyReceiver, extra: str = IDLE) -> Proc:
    description = write_app(tmp_path / "app", [str(port)], extra=extra)
    argv = socket_activate(
        [str(port)],
        [*CPSYSD, "serve", "-c", str(description)],
        env={"NOTIFY_SOCKET": receiver.path},
    )
    return Proc(argv, tmp_path / "serve.log")


def _first_connection(port: int) -> http.client.HTTPConnection:
    """The connection that starts the app (retried while systemd-socket-activate sets up): the
    one a test holds, so the app cannot idle out between a start-up request and it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    wait_for(lambda: conn.sock is not None or _connected(conn), what="the socket")
    return conn


def _connected(conn: http.client.HTTPConnection) -> bool:
    try:
        conn.connect()
    except ConnectionRefusedError:
        return False
    return True


def _still_running(proc: Proc, seconds: float) -> None:
    """``proc`` has not exited after ``seconds`` (well past the idle time)."""
    try:
        proc.popen.wait(seconds)
    except subprocess.TimeoutExpired:
        return
    raise AssertionError(f"exited ({proc.popen.returncode}) while busy: {proc.output()}")


def test_exits_0_on_its_own_after_idle(tmp_path: Path, receiver: NotifyReceiver) -> None:
    port = free_port()
    proc = _activated(tmp_path, port, receiver)
    try:
        assert get_when_up(f"127.0.0.1:{port}", "/") == (200, b"hello\n")
        ready = receiver.wait_for("READY", "1")
        assert proc.wait(30) == 0, proc.output()  # idle 2 s; the bound only stops a hang
    finally:
        proc.stop()
    stopping = receiver.wait_for("STOPPING", "1", start=ready + 1)
    status = receiver.messages[stopping]["STATUS"]
    assert "idle for 2 s" in status, status
    assert "next connection starts it again" in status, status
    assert "Traceback" not in proc.output()


def test_an_open_connection_past_the_idle_time_is_not_cut(
    tmp_path: Path, receiver: NotifyReceiver
) -> None:
    """A slow keep-alive client: idle means no open connection, not no recent request."""
    port = free_port()
    proc = _activated(tmp_path, port, receiver)
    try:
        conn = _first_connection(port)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"hello\n"
        _still_running(proc, 6)  # three idle times with the connection open and silent
        conn.request("GET", "/")  # the same connection is still served
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"hello\n")
        conn.close()
        assert proc.wait(30) == 0, proc.output()  # and once it closes, the app idles out
    finally:
        proc.stop()
    assert "STOPPING" in receiver.states()


def test_a_request_in_flight_keeps_it_running(tmp_path: Path, receiver: NotifyReceiver) -> None:
    port = free_port()
    proc = _activated(tmp_path, port, receiver)
    try:
        started = time.monotonic()
        status, body = get_when_up(f"127.0.0.1:{port}", "/slow?seconds=5", timeout=30)
        assert time.monotonic() - started >= 5  # the request ran past two idle times
        assert status == 200
        assert body.startswith(b"slept 5 s\n")
        assert body.endswith(b"\nend\n")
        assert proc.wait(30) == 0, proc.output()
    finally:
        proc.stop()
    assert "Traceback" not in proc.output()


def test_reload_keeps_working_with_idle_stop(tmp_path: Path, receiver: NotifyReceiver) -> None:
    """SIGHUP while a connection is open: reloaded in place, and the idle stop still follows."""
    port = free_port()
    proc = _activated(tmp_path, port, receiver)
    try:
        conn = _first_connection(port)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"hello\n"
        (tmp_path / "app" / "app.conf").write_text('[app]\ngreeting = "after"\n')
        ready = receiver.wait_for("READY", "1")
        proc.signal(1)  # SIGHUP
        receiver.wait_for("READY", "1", start=receiver.wait_for("RELOADING", "1", start=ready))
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"after\n"
        conn.close()
        assert proc.wait(30) == 0, proc.output()
    finally:
        proc.stop()


def test_off_without_socket_activation(tmp_path: Path) -> None:
    """Bound by cpsysd serve itself, nothing would start the app again: it keeps running."""
    port = free_port()
    description = write_app(tmp_path / "app", [str(port)], extra=IDLE)
    proc = Proc([*CPSYSD, "serve", "-c", str(description)], tmp_path / "serve.log")
    try:
        get_json(f"127.0.0.1:{port}")
        _still_running(proc, 3)
        assert get(f"127.0.0.1:{port}", "/") == (200, b"hello\n")
    finally:
        assert proc.stop() == 0
    assert "idle_stop_sec is ignored without socket activation" in proc.output()
