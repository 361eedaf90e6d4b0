"""cpsysd.runtime.main: the argv fast path agrees with argparse, and the serve path's imports stay
cheap (cold start is every socket-activated service's first-request latency)."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from cpsysd.runtime.main import build_parser, parse_serve_args

TOKENS = ["-c", "--config", "a.toml", "--daemon", "--debug", "--pidfile", "--user", "--group"]
TOKENS += ["--instance", "2"]
ODD = ["", "-", "--", "-x", "-1", "--conf", "--config=b.toml", "-cc.toml", "-h", "pos"]
ODD += ["--daemon=1", "--help", "--instance=3", "--inst", "0", "x1"]


def _outcome(parse: object, argv: list[str]) -> object:
    try:
        return vars(parse(argv))  # type: ignore[operator]
    except SystemExit as done:
        return ("exit", done.code)


def _argvs() -> list[list[str]]:
    argvs: list[list[str]] = []
    for length in range(4):
        argvs += [list(argv) for argv in itertools.product(TOKENS, repeat=length)]
    for odd in ODD:
        argvs += [[odd], ["-c", odd], [odd, "-c", "x"], ["--user", "u", odd], ["--instance", odd]]
    return argvs


def test_fast_path_agrees_with_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for argv in _argvs():
        assert _outcome(parse_serve_args, argv) == _outcome(parser.parse_args, argv), argv
    capsys.readouterr()  # argparse's usage lines for the refused ones


def test_usual_forms() -> None:
    assert vars(parse_serve_args(["-c", "/var/lib/cpsysd/hello.toml"])) == {
        "config": "/var/lib/cpsysd/hello.toml",
        "daemon": False,
        "debug": False,
        "pidfile": None,
        "instance": None,
        "user": None,
        "group": None,
    }
    assert parse_serve_args([]).config == "cpsysd.toml"
    # What the supervisord section runs once supervisord expanded %(process_num)d.
    assert parse_serve_args(["-c", "a.toml", "--instance", "2"]).instance == "2"


SERVE_PATH = (
    "import cpsysd.cli, cpsysd.runtime.main, cpsysd.runtime.app, cpsysd.runtime.journal, "
    "cpsysd.runtime.plugins, cpsysd.runtime.server, cpsysd.runtime.watchdog"
)


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout


def test_serve_path_has_no_generated_dataclass_code() -> None:
    """@dataclass compiles its methods at import (3-4 ms for the description alone); the
    serve path's classes are cpsysd.records.record classes, whose methods are not generated."""
    code = (
        f"import dataclasses, sys; {SERVE_PATH}\n"
        "for name, module in sorted(sys.modules.items()):\n"
        "    if name.startswith('cpsysd'):\n"
        "        for value in list(vars(module).values()):\n"
        "            if isinstance(value, type) and dataclasses.is_dataclass(value):\n"
        "                print(name, value.__name__, value.__init__.__code__.co_filename)\n"
    )
    found = [line.split() for line in _run(code).splitlines()]
    assert {cls for _, cls, _ in found} >= {"AppSpec", "Listener", "Binding", "PassedSocket"}
    assert [line for line in found if not line[2].endswith("records.py")] == []


def test_serve_path_defers_what_only_some_apps_need() -> None:
    """TLS (cheroot's ssl adapter) only for TLS listeners, tlsnames only for [tls] hosts."""
    code = f"import sys; {SERVE_PATH}; print(' '.join(sys.modules))"
    loaded = set(_run(code).split())
    assert "cherrypy" in loaded  # the check works
    assert loaded & {"cpsysd.runtime.tls", "cpsysd.tls.names", "cheroot.ssl.builtin"} == set()
