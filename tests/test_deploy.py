"""``cpsysd deploy`` and ``rollback`` (cpsysd.host.deploy) refuse a release whose ``workers``
differs from the count serving now (the live release's, else the one ``cpsysd install`` set up),
before anything is built or any traffic moves. Real files; the refusal comes before systemd is
asked anything, so no systemd is needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cpsysd.description.load import AppSpec, parse_spec
from cpsysd.description.toml import spec_to_toml
from cpsysd.errors import CpsysdError
from cpsysd.host.deploy import Places, deploy, rollback
from cpsysd.host.releases import LiveState, read_state, write_state


def _spec(workers: int) -> AppSpec:
    fields = {"name": "app", "entry": "app:Root", "python": sys.executable, "workers": workers}
    return parse_spec(fields, "/srv/app")


def _places(tmp_path: Path) -> Places:
    places = Places(tmp_path / "releases", tmp_path / "units", tmp_path / "state")
    for directory in (places.releases_dir / "app", places.unit_dir, places.state_dir):
        directory.mkdir(parents=True)
    return places


def _release(places: Places, release_id: str, workers: int) -> None:
    release = places.releases_dir / "app" / release_id
    release.mkdir()
    (release / "cpsysd.toml").write_text(spec_to_toml(_spec(workers)))
    record = {"id": release_id, "created": "2026-12-06T00:00:00+00:00", "source": "/srv/app",
              "requirements": False}  # fmt: skip
    (release / "release.json").write_text(json.dumps(record))


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_deploy_refuses_another_count_than_the_live_release(tmp_path: Path, workers: int) -> None:
    places = _places(tmp_path)
    _release(places, "r1", 3)
    write_state(places.releases_dir / "app", LiveState("r1", None, 1))
    with pytest.raises(CpsysdError) as refused:
        deploy(_spec(workers), places=places)
    assert refused.value.message == (
        f"app runs workers = 3 (release r1) and this description has workers = {workers}: "
        "deploy, rollback and install keep the count; nothing was changed"
    )
    assert refused.value.hint is not None
    assert "cpsysd uninstall app" in refused.value.hint
    assert sorted(p.name for p in (places.releases_dir / "app").iterdir()) == ["r1", "state.json"]
    assert read_state(places.releases_dir / "app") == LiveState("r1", None, 1)


def test_first_deploy_refuses_another_count_than_install_set_up(tmp_path: Path) -> None:
    places = _places(tmp_path)
    (places.state_dir / "app.toml").write_text(spec_to_toml(_spec(1)))
    with pytest.raises(CpsysdError, match=r"workers = 1 \(cpsysd install\) and this description"):
        deploy(_spec(3), places=places)


def test_rollback_refuses_a_previous_release_with_another_count(tmp_path: Path) -> None:
    places = _places(tmp_path)
    _release(places, "r1", 2)
    _release(places, "r2", 3)
    write_state(places.releases_dir / "app", LiveState("r2", "r1", 2))
    with pytest.raises(CpsysdError, match=r"workers = 3 \(release r2\) .* has workers = 2"):
        rollback("app", places=places)
    assert read_state(places.releases_dir / "app") == LiveState("r2", "r1", 2)
