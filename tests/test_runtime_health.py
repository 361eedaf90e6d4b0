"""The health gate (``health_path``, cpsysd.runtime.health): a real ``cpsysd serve`` sends READY=1
only after its app answered the path 2xx in-process; one that answers 500 or raises never
accepts a request and exits non-zero with one line naming the answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from runtimekit import APP_SOURCE, CPSYSD, NotifyReceiver, Proc, free_port, get, write_app

from cpsysd.runtime.health import ask_health

HEALTH_SOURCE = (
    APP_SOURCE
    + """
    @cherrypy.expose
    def health(self):
        return "ok\\n"

    @cherrypy.expose
    def sick(self):
        cherrypy.response.status = 500
        return "database down\\n"

    @cherrypy.expose
    def crash(self):
        raise RuntimeError("no database")
"""
)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[NotifyReceiver]:
    notify = NotifyReceiver(tmp_path / "notify.sock")
    yield notify
    notify.close()


def _serve(tmp_path: Path, receiver: NotifyReceiver, health_path: str) -> tuple[Proc, int]:
    port = free_port()
    description = write_app(
        tmp_path / "app",
        [f"127.0.0.1:{port}"],
        extra=f'health_path = "{health_path}"',
        app_source=HEALTH_SOURCE,
    )
    proc = Proc([*CPSYSD, "serve", "-c", str(description)], tmp_path / "serve.log",
                env={"NOTIFY_SOCKET": receiver.path})  # fmt: skip
    return proc, port


def test_ready_only_after_the_health_path_answered(
    tmp_path: Path, receiver: NotifyReceiver
) -> None:
    proc, port = _serve(tmp_path, receiver, "/health")
    try:
        receiver.wait_for("READY", "1")
        assert get(f"127.0.0.1:{port}", "/")[0] == 200
        assert "health gate passed: GET /health answered 2xx" in proc.output()
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("/sick", "GET /sick answered 500 Internal Server Error"),
        ("/crash", "GET /crash answered 500 Internal Server Error"),
    ],
)
def test_a_failing_health_path_never_serves(
    tmp_path: Path, receiver: NotifyReceiver, path: str, said: str
) -> None:
    proc, _port = _serve(tmp_path, receiver, path)
    try:
        status = proc.wait(60)
    finally:
        proc.stop()
    output = proc.output()
    errors = [line for line in output.splitlines() if line.startswith("cpsysd: error:")]
    assert status != 0, output
    assert len(errors) == 1, output
    assert f"health gate failed: {said}" in errors[0]
    assert "Traceback" not in output.split("health gate failed")[-1]  # no CherryPy os._exit(70)
    receiver.poll()
    assert not any("READY" in message for message in receiver.messages), receiver.messages
    assert any(m.get("STATUS", "").startswith("Failed: health gate") for m in receiver.messages)


def test_ask_health_reports_what_a_wsgi_app_answered() -> None:
    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        status = "200 OK" if environ["PATH_INFO"] == "/ok" else "503 Service Unavailable"
        start_response(status, [])  # type: ignore[operator]
        return [b"x"]

    def broken(environ: dict[str, object], start_response: object) -> list[bytes]:
        raise KeyError("config")

    assert ask_health(app, "/ok") is None
    assert ask_health(app, "/down?x=1") == "GET /down?x=1 answered 503 Service Unavailable"
    assert ask_health(broken, "/ok") == "GET /ok raised KeyError: 'config'"
