"""``cpsysd restart`` after ``cpsysd deploy`` (cpsysd.host.restart): the units restarted are the
live release's, read from the real state file deploy writes, never the install's units that
would run the code in working_directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cpsysd.description.load import load_spec
from cpsysd.host.releases import LiveState, write_state
from cpsysd.host.renew import units_to_restart
from cpsysd.host.restart import app_unit_patterns

EXAMPLE = Path(__file__).resolve().parent.parent / "examples/hello/cpsysd.toml"


def test_without_a_release_the_installed_units_restart(tmp_path: Path) -> None:
    assert app_unit_patterns("app", releases_dir=tmp_path) == ("app@*.service", "app.service")


def test_after_a_deploy_the_live_release_restarts(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    write_state(tmp_path / "app", LiveState("r3", "r2", 3))
    assert app_unit_patterns("app", releases_dir=tmp_path) == (
        "app-release@r3.service",
        "app-release-r3@*.service",
    )
    # --user apps are never deployed (deploy is root's): their own units, whatever is on disk.
    assert app_unit_patterns("app", user=True, releases_dir=tmp_path)[0] == "app@*.service"


def test_a_renewed_certificate_restarts_the_live_release(tmp_path: Path) -> None:
    """``cpsysd cert renew`` after a deploy: the live release holds the old key (LoadCredential=
    copies at start), and the install's own units are stopped, so they are not what restarts."""
    spec = load_spec(EXAMPLE)
    assert units_to_restart(spec, releases_dir=tmp_path) == ("hello.service",)
    (tmp_path / "hello").mkdir()
    write_state(tmp_path / "hello", LiveState("r2", "r1", 2))
    assert units_to_restart(spec, releases_dir=tmp_path) == (
        "hello-release@r2.service",
        "hello-release-r2@*.service",
    )
    workers = dataclasses.replace(spec, workers=3)
    write_state(tmp_path / "hello", LiveState())
    assert units_to_restart(workers, releases_dir=tmp_path) == ("hello@*.service",)
