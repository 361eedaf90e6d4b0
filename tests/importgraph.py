"""The import graph of the ``cpsysd`` package, read from its source with :mod:`ast`.

Every ``import`` and ``from ... import`` counts, at module level and inside functions (cpsysd
imports lazily in many places to keep start-up light, and a lazy import still closes a cycle the
moment it runs). ``from cpsysd.pkg import mod`` is resolved to the submodule ``cpsysd.pkg.mod``,
``from cpsysd.pkg.mod import name`` to ``cpsysd.pkg.mod``. Imports under ``if TYPE_CHECKING:``
are kept but marked ``type_only``: they never execute, so they cannot close an import cycle, yet
they still tie one package to another, so the direction rules count them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cpsysd"


@dataclass(frozen=True)
class Import:
    """One import statement's target, as seen from ``importer``: a ``cpsysd`` module, or the
    dotted name of an outside module (``subprocess``, ``importlib.metadata``)."""

    importer: str
    target: str
    file: str  # relative to the package's parent, e.g. cpsysd/host/run.py
    line: int
    type_only: bool

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package under ``root``, by dotted name."""
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


class _Collector(ast.NodeVisitor):
    def __init__(self, importer: str, is_package: bool, modules: set[str]) -> None:
        self.importer = importer
        self.package = importer if is_package else importer.rpartition(".")[0]
        self.modules = modules
        self.type_only = False
        self.found: list[tuple[str, int, bool]] = []

    def _add(self, target: str, node: ast.stmt) -> None:
        self.found.append((target, node.lineno, self.type_only))

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        outer, self.type_only = self.type_only, True
        for child in node.body:
            self.visit(child)
        self.type_only = outer
        for child in node.orelse:  # the else branch is what runs
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.modules else base, node)


def imports_of(path: Path, root: Path = PACKAGE, modules: Iterable[str] = ()) -> list[Import]:
    """The imports of the module in ``path``, a file of the package under ``root`` whose
    modules are ``modules`` (all of them when empty)."""
    known = set(modules or package_modules(root))
    importer = module_name(path, root)
    collector = _Collector(importer, path.name == "__init__.py", known)
    collector.visit(ast.parse(path.read_text(), str(path)))
    file = str(path.relative_to(root.parent))
    return [Import(importer, target, file, line, typed) for target, line, typed in collector.found]


def all_imports(root: Path = PACKAGE) -> list[Import]:
    """The imports of every module of the package under ``root``."""
    modules = package_modules(root)
    return [imp for path in modules.values() for imp in imports_of(path, root, modules)]


def graph(imports: Iterable[Import]) -> dict[str, set[str]]:
    """Module -> the ``cpsysd`` modules it imports when it runs (type-only imports left out)."""
    edges: dict[str, set[str]] = {}
    for imp in imports:
        edges.setdefault(imp.importer, set())
        if not imp.type_only and in_package(imp.target, "cpsysd") and imp.target != imp.importer:
            edges[imp.importer].add(imp.target)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle as ``[a, b, ..., a]``, or ``[]`` when the graph has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(edges):
        if start in state:
            continue
        path = [start]
        stack: list[Iterator[str]] = [iter(sorted(edges.get(start, ())))]
        state[start] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(step) == 1:
                return [*path[path.index(step) :], step]
            elif step not in state:
                state[step] = 1
                path.append(step)
                stack.append(iter(sorted(edges.get(step, ()))))
    return []


def in_package(name: str, package: str) -> bool:
    """True when module ``name`` is ``package`` or inside it."""
    return name == package or name.startswith(f"{package}.")
