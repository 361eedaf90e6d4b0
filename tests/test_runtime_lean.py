"""A ``kind = "wsgi"`` app is served on cheroot alone (cpsysd.runtime.lean, runtime/bus.py): the
real ``cpsysd serve`` under the real ``systemd-socket-activate`` never imports CherryPy, and keeps
what the CherryPy path gives: READY/RELOADING/STOPPING, the health gate, the access log, the
drain of in-flight requests, watchdog pings, idle stop and TLS. And a CherryPy app without TLS
never imports cryptography. The app reports ``sys.modules`` as its first request found them."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import threading
from pathlib import Path

import pytest
from runtimekit import (
    APP_SOURCE,
    CPSYSD,
    NotifyReceiver,
    Proc,
    free_port,
    get,
    get_when_up,
    socket_activate,
    wait_for,
    wait_listening,
    write_app,
)
from test_tls_serve import client_context, https_get, pki, tls_table

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate missing"
)
__all__ = ["pki"]  # the fixture, used by name

WSGI_SOURCE = """
import json, os, sys, threading, time

FIRST = []  # what was imported when the first request came

def application(environ, start_response):
    if not FIRST:
        FIRST.append(sorted(
            m for m in sys.modules if m.split(".")[0] in ("cherrypy", "cryptography")
        ))
    path, status = environ["PATH_INFO"], "200 OK"
    if path == "/modules":
        body = json.dumps(FIRST[0]).encode()
    elif path == "/slow":
        open("slow-started", "w").close()  # in the working directory: the test waits for it
        time.sleep(float(environ.get("QUERY_STRING") or "1"))
        body = b"slept\\n"
    elif path == "/health":
        status = "503 Service Unavailable" if os.path.exists("unhealthy") else "200 OK"
        body = b"health\\n"
    else:
        body = b"hello wsgi\\n"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

MODULES_HANDLER = """
import sys as _sys
_FIRST = []

def _modules(self):
    _FIRST.append(sorted(m for m in _sys.modules if m.split(".")[0] == "cryptography"))
    return json.dumps(_FIRST[0])

Root.modules = cherrypy.expose(_modules)
"""


def write_wsgi_app(directory: Path, listen: str, extra: str = "") -> Path:
    """The WSGI test app and its description (no CherryPy config file)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "leanapp.py").write_text(WSGI_SOURCE)
    description = directory / "cpsysd.toml"
    description.write_text(
        f'name = "lean"\nentry = "leanapp:application"\nkind = "wsgi"\nlisten = ["{listen}"]\n'
        f"timeout_stop_sec = 10\n{extra}\n"
    )
    return description


def activated(
    tmp_path: Path, port: int, description: Path, env: dict[str, str], fdname: str = "http"
) -> Proc:
    argv = socket_activate(
        [f"127.0.0.1:{port}"],
        [*CPSYSD, "serve", "-c", str(description)],
        fdnames=[fdname],
        env=env,
    )
    return Proc(argv, tmp_path / "serve.log")


@pytest.fixture
def receiver(tmp_path: Path):
    notify = NotifyReceiver(tmp_path / "notify.sock")
    yield notify
    notify.close()


def test_wsgi_kind_never_imports_cherrypy_and_keeps_the_lifecycle(
    tmp_path: Path, receiver: NotifyReceiver
) -> None:
    port = free_port()
    description = write_wsgi_app(tmp_path / "app", f"127.0.0.1:{port}", 'health_path = "/health"')
    proc = activated(tmp_path, port, description, {"NOTIFY_SOCKET": receiver.path})
    try:
        address = f"127.0.0.1:{port}"
        assert get_when_up(address, "/modules") == (200, b"[]")  # no cherrypy, no cryptography
        ready = receiver.wait_for("READY", "1")
        assert receiver.messages[ready]["STATUS"] == f"Serving lean on http://127.0.0.1:{port}"
        assert get(address, "/hello?x=1") == (200, b"hello wsgi\n")
        wait_for(lambda: '"GET /hello?x=1 HTTP/1.1" 200 11' in proc.output(), what="access log")
        assert "health gate passed: GET /health answered 2xx" in proc.output()

        proc.signal(signal.SIGHUP)
        reloading = receiver.wait_for("RELOADING", "1", start=ready + 1)
        receiver.wait_for("READY", "1", start=reloading + 1)
        assert get(address, "/") == (200, b"hello wsgi\n")
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output()
        assert receiver.states()[-1] == "STOPPING"
    finally:
        proc.stop()
    assert "Traceback" not in proc.output()


def test_wsgi_kind_drains_a_request_in_flight(tmp_path: Path) -> None:
    port = free_port()
    description = write_wsgi_app(tmp_path / "app", f"127.0.0.1:{port}")
    proc = activated(tmp_path, port, description, {})
    try:
        address = f"127.0.0.1:{port}"
        get_when_up(address, "/")
        answer: list[tuple[int, bytes]] = []
        client = threading.Thread(target=lambda: answer.append(get(address, "/slow?2")))
        client.start()
        wait_for(lambda: (tmp_path / "app" / "slow-started").exists(), what="slow request")
        proc.signal(signal.SIGTERM)
        client.join(20)
        assert answer == [(200, b"slept\n")]
        assert proc.wait() == 0, proc.output()
    finally:
        proc.stop()


def test_wsgi_kind_health_gate_refuses_to_serve(tmp_path: Path, receiver: NotifyReceiver) -> None:
    port = free_port()
    description = write_wsgi_app(tmp_path / "app", f"127.0.0.1:{port}", 'health_path = "/health"')
    (tmp_path / "app" / "unhealthy").touch()
    proc = activated(tmp_path, port, description, {"NOTIFY_SOCKET": receiver.path})
    try:
        wait_listening(f"127.0.0.1:{port}")  # systemd-socket-activate's socket
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            get(f"127.0.0.1:{port}", "/", timeout=20)  # starts it; it never answers
        assert proc.wait() != 0
    finally:
        proc.stop()
    lines = [line for line in proc.output().splitlines() if line.startswith("cpsysd: error:")]
    assert lines, proc.output()
    assert "health gate failed: GET /health answered 503" in lines[0]
    assert "READY" not in receiver.states()


def test_wsgi_kind_watchdog_and_idle_stop(tmp_path: Path, receiver: NotifyReceiver) -> None:
    port = free_port()
    description = write_wsgi_app(tmp_path / "app", f"127.0.0.1:{port}", "idle_stop_sec = 2")
    env = {"NOTIFY_SOCKET": receiver.path, "WATCHDOG_USEC": "600000"}
    proc = activated(tmp_path, port, description, env)
    try:
        assert get_when_up(f"127.0.0.1:{port}", "/")[0] == 200
        receiver.wait_for("WATCHDOG", "1")
        assert proc.wait(30) == 0, proc.output()  # idle: exits by itself, cleanly
        stopping = receiver.wait_for("STOPPING", "1")
        assert "idle_stop_sec" in receiver.messages[stopping].get("STATUS", "")
    finally:
        proc.stop()


def test_wsgi_kind_serves_tls_without_cherrypy(pki: Path) -> None:
    port = free_port()
    description = write_wsgi_app(pki / "app", f"127.0.0.1:{port}=https", tls_table(pki))
    proc = activated(pki, port, description, {}, fdname="https")
    try:
        status, body, info = https_get(port, client_context(pki), path="/modules")
        assert (status, json.loads(body)) == (200, [])
        assert info["version"] == "TLSv1.3"
    finally:
        assert proc.stop() == 0, proc.output()


def test_cherrypy_kind_without_tls_imports_no_cryptography(tmp_path: Path) -> None:
    port = free_port()
    description = write_app(
        tmp_path / "app", [f"127.0.0.1:{port}"], app_source=APP_SOURCE + MODULES_HANDLER
    )
    proc = activated(tmp_path, port, description, {})
    try:
        assert get_when_up(f"127.0.0.1:{port}", "/modules") == (200, b"[]")
    finally:
        assert proc.stop() == 0, proc.output()
