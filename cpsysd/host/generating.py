"""``cpsysd generate``: the files for a target (systemd units, or a supervisord section), and
writing them into a directory atomically."""

from __future__ import annotations

from pathlib import Path

from cpsysd import fsutil
from cpsysd.description.load import AppSpec
from cpsysd.errors import CpsysdError
from cpsysd.render.units import RenderOptions, render_units

TARGETS = ("systemd", "supervisord")


def generate_files(
    spec: AppSpec,
    *,
    target: str = "systemd",
    user_mode: bool = False,
    description_path: str | None = None,
) -> dict[str, str]:
    """File name -> text for ``target``. The service reads ``description_path`` at run time
    (default: the file ``spec`` was loaded from)."""
    path = description_path or spec.source or f"/etc/cpsysd/{spec.name}.toml"
    if target == "systemd":
        return render_units(spec, RenderOptions(path, user_mode=user_mode))
    if target == "supervisord":
        from cpsysd.targets.supervisord import render_supervisord

        return {f"{spec.name}.conf": render_supervisord(spec, path)}
    raise CpsysdError(f"unknown target {target!r}", f"use one of: {', '.join(TARGETS)}")


def write_files(files: dict[str, str], directory: Path) -> list[Path]:
    """Write every file into ``directory`` (created if missing), each replaced atomically."""
    paths = []
    for name, text in files.items():
        path = directory / name
        fsutil.atomic_write(path, text.encode(), 0o644)
        paths.append(path)
    return paths
