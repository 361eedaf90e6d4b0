"""``cpsysd serve`` without systemd gives a ``state_directory = true`` app its
``$STATE_DIRECTORY`` (cpsysd.runtime.state), as StateDirectory= does under systemd: the sessions
example, whose CherryPy config reads it, runs unchanged in development."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtimekit import free_port, running

COUNTER = Path(__file__).resolve().parent.parent / "examples" / "sessions"
NOBODY = 65534


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory nobody (under root) can enter: pytest's tmp_path is under a 0700 one."""
    path = Path(tempfile.mkdtemp(prefix="cpsysd-state-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def prepare(tmp_path: Path, port: int) -> Path:
    app = tmp_path / "app"
    shutil.copytree(COUNTER, app)
    text = (app / "cpsysd.toml").read_text().replace('"8081"', f'"127.0.0.1:{port}"')
    (app / "cpsysd.toml").write_text(text)
    for path in (tmp_path, app, *app.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)  # nobody (under root) reads it
    return app


def counts(port: int, requests: int) -> list[int]:
    """The counter over ``requests`` requests of one session (its cookie sent back)."""
    deadline, seen, cookie = time.monotonic() + 20, [], ""
    while len(seen) < requests:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/", headers={"Cookie": cookie} if cookie else {})
            response = conn.getresponse()
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "cpsysd serve did not listen"
            time.sleep(0.05)
            continue
        body = response.read()
        assert response.status == 200, body
        cookie = (response.getheader("Set-Cookie") or cookie).split(";")[0]
        seen.append(json.loads(body)["count"])
        conn.close()
    return seen


def serve_argv(app: Path) -> list[str]:
    argv = [sys.executable, "-m", "cpsysd", "serve", "-c", str(app / "cpsysd.toml")]
    if os.geteuid() == 0:  # as root it would use /var/lib/NAME; the test must not touch it
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
    return argv


def test_serve_makes_a_private_state_directory_outside_systemd(base: Path) -> None:
    tmp_path = base
    port = free_port()
    app = prepare(tmp_path, port)
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o777)
    xdg.chmod(0o777)
    env = {"XDG_STATE_HOME": str(xdg), "HOME": str(tmp_path)}
    with running(serve_argv(app), tmp_path / "serve.log", env) as proc:
        try:
            assert counts(port, 3) == [1, 2, 3]
        finally:
            print(proc.output())
    state = xdg / "counter"
    assert state.stat().st_mode & 0o777 == 0o700
    if os.geteuid() == 0:
        assert state.stat().st_uid == NOBODY
    assert {p.name.startswith("session-") for p in state.iterdir()} == {True}  # and its .lock

    mine = tmp_path / "mine"  # the caller's $STATE_DIRECTORY wins, as systemd's would
    mine.mkdir()
    mine.chmod(0o777)
    env["STATE_DIRECTORY"] = str(mine)
    with running(serve_argv(app), tmp_path / "serve.log", env) as proc:
        try:
            assert counts(port, 2) == [1, 2]
        finally:
            print(proc.output())
    assert {p.name.startswith("session-") for p in mine.iterdir()} == {True}
