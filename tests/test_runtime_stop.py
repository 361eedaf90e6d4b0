"""SIGTERM: ``cpsysd serve`` stops accepting, lets in-flight requests finish (bounded by
``timeout_stop_sec``) and exits 0."""

from __future__ import annotations

import http.client
import signal
import socket
import threading
import time
from pathlib import Path

from runtimekit import (
    CPSYSD,
    NotifyReceiver,
    Proc,
    free_port,
    get_json,
    socket_activate,
    wait_for,
    write_app,
)


def _slow_request(port: int, seconds: float, result: dict[str, object]) -> threading.Thread:
    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("GET", f"/slow?seconds={seconds}")
            response = conn.getresponse()
            result["status"] = response.status
            result["body"] = response.read()
            result["length"] = response.getheader("Content-Length")
        except Exception as err:
            result["error"] = err
        finally:
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _activated_serve(tmp_path: Path, port: int, receiver: NotifyReceiver) -> Proc:
    """The test app's ``cpsysd serve`` under the real systemd-socket-activate on ``port``."""
    description = write_app(tmp_path / "app", [str(port)])
    argv = socket_activate(
        [str(port)],
        [*CPSYSD, "serve", "-c", str(description)],
        env={"NOTIFY_SOCKET": receiver.path},
    )
    return Proc(argv, tmp_path / "serve.log")


def test_in_flight_request_completes_during_sigterm(tmp_path: Path) -> None:
    port = free_port()
    receiver = NotifyReceiver(tmp_path / "notify.sock")
    proc = _activated_serve(tmp_path, port, receiver)
    try:
        time.sleep(0.2)
        get_json(f"127.0.0.1:{port}")  # started and serving
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        idle.request("GET", "/")  # an idle keep-alive connection, closed at the stop
        idle.getresponse().read()
        result: dict[str, object] = {}
        # Long enough to still run when SIGTERM lands on a loaded machine; well within the
        # stop deadline (timeout_stop_sec = 10 minus a margin).
        thread = _slow_request(port, 6, result)
        wait_for(lambda: (tmp_path / "app" / "slow-started").exists(), what="the slow request")
        proc.signal(signal.SIGTERM)
        receiver.wait_for("STOPPING", "1")
        assert "status" not in result  # still in flight when the stop began
        thread.join(30)
        assert proc.wait(30) == 0, proc.output()
    finally:
        proc.stop()
        receiver.close()
    assert result.get("status") == 200, result
    body = result["body"]
    assert isinstance(body, bytes)
    assert body.startswith(b"slept 6 s\n")
    assert body.endswith(b"\nend\n")
    assert len(body) == int(str(result["length"]))
    assert "Traceback" not in proc.output()


def test_stop_is_bounded_by_timeout_stop_sec(tmp_path: Path) -> None:
    """A request that would take 30 s does not hold the exit past timeout_stop_sec (2 s here,
    minus a margin); it is abandoned with a warning and the process still exits 0."""
    port = free_port()
    description = write_app(tmp_path / "app", [str(port)])
    text = description.read_text().replace("timeout_stop_sec = 10", "timeout_stop_sec = 2")
    description.write_text(text)
    proc = Proc([*CPSYSD, "serve", "-c", str(description)], tmp_path / "serve.log")
    try:
        get_json(f"127.0.0.1:{port}")
        result: dict[str, object] = {}
        _slow_request(port, 30, result)
        wait_for(lambda: (tmp_path / "app" / "slow-started").exists(), what="the slow request")
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0  # far sooner than the 30 s request
    finally:
        proc.stop()
    assert "1 request(s) still running at the stop deadline were abandoned" in proc.output()


def test_connections_accepted_before_the_stop_are_answered(tmp_path: Path) -> None:
    """A client whose connection was accepted before SIGTERM (or an idle stop), but whose
    request was not complete yet, gets its answer: the stop hands it to a worker instead of
    closing it unanswered (seen as RemoteDisconnected by clients racing an idle stop)."""
    port = free_port()
    receiver = NotifyReceiver(tmp_path / "notify.sock")
    proc = _activated_serve(tmp_path, port, receiver)
    clients: list[socket.socket] = []
    try:
        get_json(f"127.0.0.1:{port}")  # started and serving
        silent = socket.create_connection(("127.0.0.1", port), timeout=20)  # nothing sent yet
        partial = socket.create_connection(("127.0.0.1", port), timeout=20)
        partial.sendall(b"GET /whoami HTTP/1.1\r\n")  # half a header block
        clients += [silent, partial]
        time.sleep(0.5)  # both accepted: the gate waits on them in its selector
        proc.signal(signal.SIGTERM)
        receiver.wait_for("STOPPING", "1")
        time.sleep(1)  # the servers' stop has run: the selector loop is gone
        partial.sendall(b"Host: x\r\nConnection: close\r\n\r\n")
        silent.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = [_read_all(client) for client in clients]
        assert proc.wait(30) == 0, proc.output()
    finally:
        for client in clients:
            client.close()
        proc.stop()
        receiver.close()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 200 "), answer


def _read_all(client: socket.socket) -> bytes:
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    return data
