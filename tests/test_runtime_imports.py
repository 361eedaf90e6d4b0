"""``cpsysd serve`` is every socket-activated service's cold start, and runs inside a hardened
unit: the runtime never imports the generator side (unit rendering, Jinja2, Typer, cryptography)."""

from __future__ import annotations

import subprocess
import sys

from tests.importgraph import Import, all_imports, graph, in_package, package_modules

# What runs inside a service: `cpsysd serve` (cpsysd.runtime) and the WSGI entry point for other
# servers (cpsysd.wsgi). All it may reach, directly or through what it imports: the description
# it serves, errors and records, credential names, systemd escaping, and tls.names (pure host
# name checks that description/checks.py uses for [tls] hosts).
RUNTIME_SIDE = ("cpsysd.runtime", "cpsysd.wsgi")
RUNTIME_MAY_REACH = (
    *RUNTIME_SIDE,
    "cpsysd.description",
    "cpsysd.errors",
    "cpsysd.records",
    "cpsysd.credentials",
    "cpsysd.escape",
    "cpsysd.tls.names",
)
RUNTIME_MODULES = sorted(
    name for name in package_modules() if any(in_package(name, p) for p in RUNTIME_SIDE)
)
# cpsysd.tls.names (pure input checks, imported by spec.py) is fine; cpsysd.tls.pki needs
# cryptography.
FORBIDDEN = ("jinja2", "typer", "click", "cryptography", "cpsysd.render.units", "cpsysd.cli.app")
FORBIDDEN_EXACT = (
    "cpsysd.tls.pki",
    "cpsysd.tls.x509",
    "cpsysd.tls.certfiles",
    "cpsysd.render.renew",
)


def reached_from(start: list[str], edges: dict[str, set[str]]) -> set[str]:
    seen, pending = set(start), list(start)
    while pending:
        for target in edges.get(pending.pop(), set()) - seen:
            seen.add(target)
            pending.append(target)
    return seen


def runtime_offences(imports: list[Import]) -> list[str]:
    """Imports that take the runtime side outside what it may reach: every import of a module
    it reaches (lazy ones too; type-only ones count, they still tie the packages)."""
    edges = graph(imports)
    reached = reached_from(RUNTIME_MODULES, edges)
    return [
        f"{imp.where()}: {imp.importer} imports {imp.target}"
        for imp in imports
        if imp.importer in reached
        and in_package(imp.target, "cpsysd")
        and imp.target != "cpsysd"  # the package itself: __version__ only
        and not any(in_package(imp.target, p) for p in RUNTIME_MAY_REACH)
    ]


def test_runtime_reaches_only_its_side_by_package() -> None:
    imports = all_imports()
    assert len(RUNTIME_MODULES) > 10  # the walk found the package
    assert runtime_offences(imports) == []
    planted = Import("cpsysd.description.checks", "cpsysd.host.run", "cpsysd/x.py", 1, True)
    assert runtime_offences([*imports, planted]) != []  # the rule can fail


def test_runtime_imports_nothing_of_the_generator_side() -> None:
    imports = "; ".join(f"import {name}" for name in RUNTIME_MODULES)
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
