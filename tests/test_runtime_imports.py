"""``cpsysd serve`` is every socket-activated service's cold start, and runs inside a hardened
unit: the runtime never imports the generator side (unit rendering, Jinja2, Typer, cryptography)."""

from __future__ import annotations

import subprocess
import sys

RUNTIME_MODULES = [
    "adopt",
    "app",
    "journal",
    "listeners",
    "main",
    "notify",
    "plugins",
    "server",
    "tls",
    "watchdog",
]
# cpsysd.tls.names (pure input checks, imported by spec.py) is fine; cpsysd.tls.pki needs
# cryptography.
FORBIDDEN = ("jinja2", "typer", "click", "cryptography", "cpsysd.render.units", "cpsysd.cli.app")
FORBIDDEN_EXACT = (
    "cpsysd.tls.pki",
    "cpsysd.tls.x509",
    "cpsysd.tls.certfiles",
    "cpsysd.render.renew",
)


def test_runtime_imports_nothing_of_the_generator_side() -> None:
    imports = "; ".join(f"import cpsysd.runtime.{name}" for name in RUNTIME_MODULES)
    check = f"import sys; {imports}; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "cherrypy" in loaded  # the check itself works
    assert [name for name in loaded if name.startswith(FORBIDDEN) or name in FORBIDDEN_EXACT] == []


def test_serve_entry_point_skips_typer() -> None:
    """`cpsysd serve` goes through cpsysd.cli.main's fast path, before Typer is imported."""
    code = (
        "import sys; from cpsysd import cli\n"
        "try:\n    cli.main(['serve', '-c', '/nonexistent/cpsysd.toml'])\n"
        "except SystemExit as done:\n    print(done.code, 'typer' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["2", "False"]
    assert "cpsysd: error: /nonexistent/cpsysd.toml: no such file" in result.stderr
