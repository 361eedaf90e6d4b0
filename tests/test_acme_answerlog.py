"""The journal line for each ACME validation the runtime answers (cpsysd/runtime/acmelog.py):
http-01 through the runtime's wrapper on a real cheroot server, and the rate limit that keeps a
client who knows a pending token from flooding the journal (a stepped clock: no timing)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

from cheroot import wsgi

from cpsysd.runtime.acme import with_challenges
from cpsysd.runtime.acmelog import BURST, EVERY, AnswerLog


def test_an_http01_answer_is_one_line_with_name_and_address(tmp_path: Path) -> None:
    (tmp_path / "tok-EN_1").write_text("tok-EN_1.thumb\n")
    lines: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the app\n"]

    server = wsgi.Server(
        ("127.0.0.1", 0), with_challenges(app, str(tmp_path), AnswerLog(lines.append))
    )
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        port = server.bind_addr[1]
        for path, host in [
            ("tok-EN_1", "app.test:80"),
            ("missing", "app.test"),  # a 404 is no answer: no line
            ("tok-EN_1", "bad host\x1b[31m"),  # the client's Host header: made printable
        ]:
            subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-H", f"Host: {host}",
                 f"http://127.0.0.1:{port}/.well-known/acme-challenge/{path}"],
                check=True, timeout=10,
            )  # fmt: skip
    finally:
        server.stop()
    assert len(lines) == 2, lines
    assert lines[0].startswith("answered the http-01 validation for app.test to 127.0.0.1:")
    assert lines[1].startswith("answered the http-01 validation for bad?host?[31m to ")


def test_answers_beyond_the_burst_are_counted_not_logged() -> None:
    now = [1000.0]
    lines: list[str] = []
    log = AnswerLog(lines.append, clock=lambda: now[0])
    for _ in range(BURST + 25):  # a flood, all at one instant
        log.answered("tls-alpn-01", "app.test", "192.0.2.7:4711")
    assert len(lines) == BURST
    now[0] += EVERY / 2  # half a token: still held
    log.answered("tls-alpn-01", "app.test", "192.0.2.7:4711")
    assert len(lines) == BURST
    now[0] += EVERY / 2
    log.answered("http-01", "app.test", "192.0.2.8:80")
    assert lines[-1] == (
        "answered the http-01 validation for app.test to 192.0.2.8:80 "
        f"(26 more answers not logged: at most one line per {EVERY:g} s)"
    )
    now[0] += EVERY * BURST * 2  # a quiet spell refills the burst, no more than it
    for _ in range(BURST + 1):
        log.answered("http-01", "app.test", "192.0.2.8:80")
    assert len(lines) == 2 * BURST + 1
    assert "not logged" not in lines[-1]
