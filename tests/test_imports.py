"""The architecture's direction, as rules on the import graph (tests/importgraph.py).

Arrows point one way: ``cli`` depends on everything and nothing depends on it; ``description``
and ``render`` turn text into records and records into text, and never reach the machine
(``host``, ``harness``, ``targets``, subprocesses); processes are started in one place,
:mod:`cpsysd.host.run`; and packages import each other one way only. The runtime's rule is in
tests/test_runtime_imports.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.importgraph import (
    PACKAGE,
    Import,
    all_imports,
    find_cycle,
    graph,
    imports_of,
    in_package,
    package_modules,
)

IMPORTS = all_imports()

# Pure packages: they may read a description and render text, never act on the machine.
PURE = ("cpsysd.description", "cpsysd.render")
PURE_MUST_NOT_IMPORT = (
    "cpsysd.host",
    "cpsysd.harness",
    "cpsysd.targets",
    "cpsysd.cli",
    "subprocess",
)
# The one process runner; harness/init.py runs as `python -I .../harness/init.py` inside the new
# namespaces, before any cpsysd is importable there, so it keeps its own standard-library calls.
PROCESS_STARTERS = {"cpsysd.host.run", "cpsysd.harness.init"}
STANDALONE = "cpsysd.harness.init"


def _offences(
    imports: list[Import], importers: tuple[str, ...], targets: tuple[str, ...]
) -> list[str]:
    return [
        f"{imp.where()}: {imp.importer} imports {imp.target}"
        for imp in imports
        if any(in_package(imp.importer, p) for p in importers)
        and any(in_package(imp.target, t) for t in targets)
    ]


def test_the_walk_sees_lazy_imports_and_resolves_submodules() -> None:
    """The walker itself: a function-level import counts, and `from cpsysd.pkg import mod`
    names the submodule (else every edge would end at a package's empty __init__)."""
    edges = graph(IMPORTS)
    assert "cpsysd.runtime.main" in edges["cpsysd.cli"]  # imported inside cli.main()
    assert "cpsysd.runtime.notify" in edges["cpsysd.runtime.main"]  # from cpsysd.runtime import
    assert set(edges) <= set(package_modules())


def test_no_import_cycles() -> None:
    cycle = find_cycle(graph(IMPORTS))
    assert cycle == [], "import cycle: " + " -> ".join(cycle)


def package_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph seen from above: each module stands for its top-level package
    (``cpsysd.host.install`` -> ``cpsysd.host``); a leaf module (``cpsysd.fsutil``) for itself."""

    def top(name: str) -> str:
        return ".".join(name.split(".")[:2])

    packages: dict[str, set[str]] = {}
    for importer, targets in edges.items():
        packages.setdefault(top(importer), set()).update(
            top(target) for target in targets if top(target) != top(importer)
        )
    return packages


def test_no_cycles_between_packages() -> None:
    """Packages depend on each other one way, so each can be read (and tested) on top of the ones
    below it: docs/architecture.md draws the order."""
    cycle = find_cycle(package_graph(graph(IMPORTS)))
    assert cycle == [], "packages import each other: " + " -> ".join(cycle)


def test_a_package_cycle_is_found() -> None:
    edges = {"cpsysd.host.install": {"cpsysd.tls.pki"}, "cpsysd.tls.files": {"cpsysd.host.run"}}
    assert find_cycle(package_graph(edges)) == ["cpsysd.host", "cpsysd.tls", "cpsysd.host"]


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    """The cycle check fails on a cycle closed by a function-level import, and prints it."""
    root = tmp_path / "cpsysd"
    (root / "a").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "a" / "__init__.py").write_text("")
    (root / "a" / "one.py").write_text("from cpsysd.b import two\n")
    (root / "b").mkdir()
    (root / "b" / "__init__.py").write_text("")
    (root / "b" / "two.py").write_text("def f():\n    from cpsysd.a import one\n")
    (root / "b" / "three.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cpsysd.a import one\n"
    )
    edges = graph(all_imports(root))
    assert find_cycle(edges) == ["cpsysd.a.one", "cpsysd.b.two", "cpsysd.a.one"]
    assert edges["cpsysd.b.three"] == set()  # never runs, so it closes no cycle
    (root / "b" / "two.py").write_text("")
    assert find_cycle(graph(all_imports(root))) == []


def test_description_and_render_never_act_on_the_machine() -> None:
    assert _offences(IMPORTS, PURE, PURE_MUST_NOT_IMPORT) == []


def test_nothing_but_the_command_line_imports_cli() -> None:
    outside = [
        f"{imp.where()}: {imp.importer} imports {imp.target}"
        for imp in IMPORTS
        if in_package(imp.target, "cpsysd.cli")
        and not in_package(imp.importer, "cpsysd.cli")
        and imp.importer != "cpsysd.__main__"
    ]
    assert outside == []


def test_only_the_runner_starts_processes() -> None:
    starters = sorted(
        f"{imp.where()}: {imp.importer}"
        for imp in IMPORTS
        if in_package(imp.target, "subprocess") and imp.importer not in PROCESS_STARTERS
    )
    assert starters == [], "start processes through cpsysd.host.run"


def test_the_container_init_stays_standalone() -> None:
    """harness/init.py is run by path with `python -I` in namespaces where cpsysd is not
    importable: it must use the standard library only."""
    path = PACKAGE / "harness" / "init.py"
    assert [imp.target for imp in imports_of(path) if in_package(imp.target, "cpsysd")] == []


@pytest.mark.parametrize(
    ("importer", "target"),
    [("cpsysd.render.units", "subprocess"), ("cpsysd.description.load", "cpsysd.host.run")],
)
def test_the_rules_catch_a_planted_offence(importer: str, target: str) -> None:
    planted = Import(importer, target, "cpsysd/planted.py", 1, type_only=True)
    assert _offences([*IMPORTS, planted], PURE, PURE_MUST_NOT_IMPORT) != []
