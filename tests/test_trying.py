"""cpsysd.harness.trying without a container: how a description is rewritten for inside it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cpsysd.description.load import AppSpec, TLSConfig, parse_spec
from cpsysd.harness.trying import _Files, container_spec


def _spec(workdir: Path, tls: TLSConfig) -> AppSpec:
    spec = parse_spec(
        {"name": "app", "entry": "app:Root", "working_directory": str(workdir)},
        str(workdir),
        source=str(workdir / "cpsysd.toml"),
    )
    return dataclasses.replace(spec, tls=tls)


def test_every_tls_path_is_copied_in(tmp_path: Path) -> None:
    """Each path-valued [tls] field points inside the container afterwards; a field added to
    TLSConfig without a mapping in container_spec makes this fail."""
    outside = "/etc/secret-place"
    tls = TLSConfig(
        cert=f"{outside}/c.pem",
        key=f"{outside}/k.pem",
        chain=f"{outside}/chain.pem",
        renew_days=30,
        ca_dir=f"{outside}/ca",
        hosts=("localhost",),
        passphrase_file=f"{outside}/k.pass",
        ca_passphrase_file=f"{outside}/ca.pass",
    )
    files = _Files(tmp_path, "/srv/app")
    inside = container_spec(_spec(tmp_path, tls), "/opt/cpsysd/venv/bin/python", files)
    assert inside.tls is not None
    for item in dataclasses.fields(TLSConfig):
        before, after = getattr(tls, item.name), getattr(inside.tls, item.name)
        if isinstance(before, str) and before.startswith("/"):
            assert after != before, f"[tls] {item.name} still names the host path"
            assert files.extra[before] == after, item.name
        else:
            assert after == before, item.name
    assert len(files.extra) == 6
