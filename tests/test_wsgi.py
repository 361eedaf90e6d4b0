"""cpsysd.wsgi under real WSGI servers: gunicorn (bound, factory, socket-activated), Tornado's
WSGIContainer and Twisted's WSGIResource, each running the recipe from docs/recipes.md and
serving the same app with its CherryPy config."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from scalekit import http_get, running, wait_for_port, whoami

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "docs" / "recipes.md"
BIN = Path(sys.executable).parent


def recipe(name: str) -> str:
    """The fenced block right after ``<!-- recipe: NAME -->`` in docs/recipes.md."""
    pattern = rf"<!-- recipe: {re.escape(name)} -->\n```[a-z]*\n(.*?)```"
    match = re.search(pattern, RECIPES.read_text(), re.DOTALL)
    assert match, f"recipe {name} not found in {RECIPES}"
    return match.group(1)


@pytest.fixture
def description(tmp_path: Path) -> Path:
    """The example app with its own CherryPy config (greeting "Howdy"), so a served "Howdy"
    proves the config file was applied through cpsysd.wsgi."""
    conf = tmp_path / "app.conf"
    conf.write_text('[/]\ntools.encode.on = True\n\n[hello]\ngreeting = "Howdy"\n')
    path = tmp_path / "hello.toml"
    path.write_text(
        f'name = "hello"\nentry = "hello:Root"\nconfig = "{conf}"\n'
        f'working_directory = "{REPO}/examples/hello"\n'
    )
    return path


def server_env(description: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CPSYSD_CONFIG=str(description), PORT=str(port), PYTHONDONTWRITEBYTECODE="1")
    return env


def assert_serves_the_app(port: int) -> set[int]:
    """The example app answers with the test's config; returns the pids that answered."""
    pids = set()
    for _ in range(4):
        status, _, body = http_get("127.0.0.1", port, "/")
        assert status == 200
        assert body.startswith(b"Howdy from cpsysd!")
        me = whoami("127.0.0.1", port)
        assert me["ip"] == "127.0.0.1"
        pids.add(int(me["pid"]))
    assert http_get("127.0.0.1", port, "/no/such/page")[0] == 404
    return pids


def gunicorn_argv(*args: str) -> list[str]:
    # No control socket: gunicorn would otherwise create ~/.gunicorn/gunicorn.ctl.
    return [str(BIN / "gunicorn"), "--no-control-socket", "--workers", "2", *args]


def test_gunicorn_with_cpsysd_config(description: Path, port: int, tmp_path: Path) -> None:
    assert "CPSYSD_CONFIG=" in recipe("gunicorn")
    argv = gunicorn_argv("--bind", f"127.0.0.1:{port}", "cpsysd.wsgi:application")
    with running(argv, tmp_path / "gunicorn.log", env=server_env(description, port), cwd=tmp_path):
        wait_for_port("127.0.0.1", port)
        assert_serves_the_app(port)
    log = (tmp_path / "gunicorn.log").read_text()
    assert "ENGINE Bus STARTED" in log  # the engine runs: the embedded setup
    assert "Serving on" not in log  # and CherryPy's own HTTP server does not


def test_gunicorn_with_the_factory(description: Path, port: int, tmp_path: Path) -> None:
    assert "'cpsysd.wsgi:load(" in recipe("gunicorn")
    argv = gunicorn_argv("--bind", f"127.0.0.1:{port}", f'cpsysd.wsgi:load("{description}")')
    env = server_env(description, port)
    del env["CPSYSD_CONFIG"]
    with running(argv, tmp_path / "gunicorn.log", env=env, cwd=tmp_path):
        wait_for_port("127.0.0.1", port)
        assert_serves_the_app(port)


def test_gunicorn_under_socket_activation(description: Path, port: int, tmp_path: Path) -> None:
    """systemd-socket-activate binds and passes fd 3 (LISTEN_FDS); gunicorn, given no --bind,
    serves that socket: the app answers on a port gunicorn was never told."""
    argv = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "-E",
            f"CPSYSD_CONFIG={description}", *gunicorn_argv("cpsysd.wsgi:application")]  # fmt: skip
    with running(argv, tmp_path / "activate.log", env=server_env(description, port), cwd=tmp_path):
        wait_for_port("127.0.0.1", port)
        assert_serves_the_app(port)
    log = (tmp_path / "activate.log").read_text()
    assert f"Listening at: http://127.0.0.1:{port}" in log


def test_gunicorn_units_of_the_recipe_verify(tmp_path: Path) -> None:
    for name in ("gunicorn.socket", "gunicorn.service"):
        (tmp_path / f"hello-{name}").write_text(recipe(name))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "hello-gunicorn.socket"),
         str(tmp_path / "hello-gunicorn.service")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("server", ["tornado", "twisted"])
def test_recipe_script_serves_the_app(
    server: str, description: Path, port: int, tmp_path: Path
) -> None:
    script = tmp_path / f"{server}_server.py"
    script.write_text(recipe(server))
    argv = [sys.executable, str(script)]
    with running(argv, tmp_path / f"{server}.log", env=server_env(description, port)) as proc:
        wait_for_port("127.0.0.1", port, timeout=30, proc=proc)
        assert_serves_the_app(port)


def test_twist_command_line(description: Path, port: int, tmp_path: Path) -> None:
    assert "--wsgi\ncpsysd.wsgi.application" in RECIPES.read_text()
    argv = [str(BIN / "twist"), "web", "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--wsgi", "cpsysd.wsgi.application"]  # fmt: skip
    with running(argv, tmp_path / "twist.log", env=server_env(description, port), cwd=tmp_path):
        wait_for_port("127.0.0.1", port, timeout=30)
        assert_serves_the_app(port)


def test_application_without_cpsysd_config_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CPSYSD_CONFIG"}
    result = subprocess.run(
        [sys.executable, "-c", "import cpsysd.wsgi as w; w.application"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "CPSYSD_CONFIG is not set" in result.stderr


def test_load_returns_one_callable_per_description(description: Path, tmp_path: Path) -> None:
    code = f"import cpsysd.wsgi as w; p = {str(description)!r}; assert w.load(p) is w.load(p)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_vhosts_reach_the_app_through_wsgi(tmp_path: Path, port: int) -> None:
    """The description's vhosts route by host under gunicorn too."""
    path = tmp_path / "hello.toml"
    path.write_text(
        f'name = "hello"\nentry = "hello:Root"\nworking_directory = "{REPO}/examples/hello"\n'
        '[vhosts]\n"api.example" = "/whoami"\n'
    )
    argv = gunicorn_argv("--bind", f"127.0.0.1:{port}", "cpsysd.wsgi:application")
    with running(argv, tmp_path / "gunicorn.log", env=server_env(path, port), cwd=tmp_path):
        wait_for_port("127.0.0.1", port)
        status, _, body = http_get("127.0.0.1", port, "/", headers={"Host": "api.example"})
        assert (status, body[:7]) == (200, b'{"ip": ')  # / of api.example is the app's /whoami
        status, _, body = http_get("127.0.0.1", port, "/", headers={"Host": "other.example"})
        assert (status, body[:5]) == (200, b"Hello")
