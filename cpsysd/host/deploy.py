"""``cpsysd deploy``, ``rollback`` and ``releases``: health-gated swaps on plain systemd.

A release is built (:mod:`cpsysd.host.releases`), then swapped in beside the live one on the
same listening sockets, health-gated (:mod:`cpsysd.host.swap`): the single service, or with
``workers = N`` instance by instance. A release that fails is stopped and removed; the live one
keeps serving and the error quotes the new release's journal.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from cpsysd import fsutil
from cpsysd.description.instances import instance_names
from cpsysd.description.load import AppSpec, load_spec
from cpsysd.errors import CpsysdError
from cpsysd.host.releases import (
    LiveState,
    build_release,
    deploy_lock,
    list_releases,
    prune,
    read_state,
    remove_release,
    write_state,
)
from cpsysd.host.run import systemctl, systemd_running
from cpsysd.host.swap import remove_release_units
from cpsysd.host.swap import swap as swap_units
from cpsysd.render.common import SYSTEM_STATE_DIR, SYSTEM_UNIT_DIR, socket_unit_name
from cpsysd.render.releases import (
    DROPIN_NAME,
    RELEASE_DESCRIPTION,
    RELEASES_DIR,
    boot_dropins,
    release_template_name,
    release_worker_template_name,
    socket_dropins,
    worker_socket_dropins,
)
from cpsysd.render.workers import socket_template_name

GRACE_SEC = 3.0  # the new release must stay up this long before the old one is stopped
KEEP = 5  # releases kept on disk (the live and the previous one always)


@dataclass(frozen=True)
class Swapped:
    """What a deploy or rollback did: the release now live, the unit it replaced, pruned ids."""

    live: str
    replaced: str
    pruned: tuple[str, ...] = ()


@dataclass(frozen=True)
class Places:
    """Where releases and units live (tests of the bookkeeping point them elsewhere)."""

    releases_dir: Path = Path(RELEASES_DIR)
    unit_dir: Path = Path(SYSTEM_UNIT_DIR)
    state_dir: Path = Path(SYSTEM_STATE_DIR)  # where cpsysd install keeps NAME.toml


def _check_worker_sockets(spec: AppSpec) -> None:
    """Every instance of the new release needs its socket listening: a release with more
    workers than ``cpsysd install`` set up has nowhere to serve its extra instances."""
    for instance in instance_names(spec):
        socket = socket_template_name(spec, spec.fd_names[0], instance)
        if systemctl("show", "-P", "ActiveState", socket).stdout.strip() != "active":
            raise CpsysdError(
                f"{socket} is not listening, so instance {instance} of workers = "
                f"{spec.workers} has no socket to deploy onto",
                f"install the description first: cpsysd install {spec.name} -c FILE",
            )


def _check_swappable(spec: AppSpec) -> None:
    if not systemd_running():
        raise CpsysdError(
            "systemd is not running here (no /run/systemd/system): nothing to deploy to",
            "deploy on the machine that runs the app",
        )
    if spec.workers > 1:
        _check_worker_sockets(spec)
        return
    socket = socket_unit_name(spec, spec.fd_names[0])
    if systemctl("show", "-P", "LoadState", socket).stdout.strip() != "loaded":
        raise CpsysdError(
            f"{socket} is not installed, so there are no sockets to deploy onto",
            f"install the app first: cpsysd install {spec.name} -c FILE",
        )


def _check_same_workers(spec: AppSpec, state: LiveState, places: Places) -> None:
    """A release runs as many instances as the one it replaces: the swap pairs instance I of
    both on I's socket, and the sockets and NAME.target are what ``cpsysd install`` set up for
    the live count. More instances would have no socket, fewer would leave old ones serving."""
    if state.live is not None:
        serving = places.releases_dir / spec.name / state.live / RELEASE_DESCRIPTION
        what = f"release {state.live}"
    else:
        serving, what = places.state_dir / f"{spec.name}.toml", "cpsysd install"
    if not serving.is_file():
        return  # not installed: _check_swappable names that
    count = load_spec(serving).workers
    if count != spec.workers:
        raise CpsysdError(
            f"{spec.name} runs workers = {count} ({what}) and this description has workers = "
            f"{spec.workers}: deploy, rollback and install keep the count; nothing was changed",
            f"deploy with workers = {count}; to change it, cpsysd uninstall {spec.name}, then "
            "cpsysd install -c FILE with the new count (the app stops in between)",
        )


def check_install_keeps_workers(spec: AppSpec, places: Places = Places()) -> None:
    """For ``cpsysd install``: while a release is live its count stays. Installed with another
    one, NAME.target would listen on sockets no live instance serves (or drop served ones)."""
    state = read_state(places.releases_dir / spec.name)
    if state.live is not None:
        _check_same_workers(spec, state, places)


def swap(spec: AppSpec, release_id: str, state: LiveState, places: Places, grace: float) -> str:
    """Make ``release_id`` live in place of ``state.live``; returns what it replaced."""
    return swap_units(spec, state.live, release_id, grace=grace,
                      releases_dir=places.releases_dir, unit_dir=places.unit_dir)  # fmt: skip


def _app_dir(name: str, places: Places) -> Path:
    app_dir = places.releases_dir / name
    fsutil.make_directories(app_dir, 0o755)
    return app_dir


def deploy(spec: AppSpec, *, grace: float = GRACE_SEC, keep: int = KEEP,
           places: Places = Places()) -> Swapped:  # fmt: skip
    """``cpsysd deploy``: build a release of ``spec``'s code and swap it in."""
    # First: a new count would also fail the socket check, with a hint that no longer helps.
    _check_same_workers(spec, read_state(places.releases_dir / spec.name), places)
    _check_swappable(spec)
    app_dir = _app_dir(spec.name, places)
    with deploy_lock(app_dir, spec.name):
        state = read_state(app_dir)
        number = max([state.last_number, *(r.number for r in list_releases(app_dir))]) + 1
        release_id = f"r{number}"
        write_state(app_dir, LiveState(state.live, state.previous, number))
        build_release(spec, app_dir, release_id)
        try:
            replaced = swap(spec, release_id, state, places, grace)
        except CpsysdError:
            remove_release(app_dir, release_id)
            remove_release_units(spec.name, release_id, places.unit_dir)
            raise
        write_state(app_dir, LiveState(release_id, state.live, number))
        pruned = prune(app_dir, keep, {release_id, *([state.live] if state.live else [])})
        for gone in pruned:
            remove_release_units(spec.name, gone, places.unit_dir)
    return Swapped(release_id, replaced, tuple(pruned))


def rollback(name: str, *, grace: float = GRACE_SEC, places: Places = Places()) -> Swapped:
    """``cpsysd rollback``: swap back to the release before the live one, the same way."""
    app_dir = _app_dir(name, places)
    with deploy_lock(app_dir, name):
        state = read_state(app_dir)
        known = {release.id for release in list_releases(app_dir)}
        if state.previous is None or state.previous not in known:
            raise CpsysdError(
                f"{name} has no previous release to roll back to",
                f"list them with cpsysd releases {name}",
            )
        spec = load_spec(app_dir / state.previous / RELEASE_DESCRIPTION)
        _check_same_workers(spec, state, places)
        _check_swappable(spec)
        replaced = swap(spec, state.previous, state, places, grace)
        write_state(app_dir, LiveState(state.previous, state.live, state.last_number))
    return Swapped(state.previous, replaced)


def release_table(name: str, places: Places = Places()) -> list[tuple[str, str, str, str]]:
    """``cpsysd releases``: (id, created, source, live/previous/"") per release, oldest first."""
    app_dir = places.releases_dir / name
    state = read_state(app_dir)
    marks = {state.live: "live", state.previous: "previous"}
    return [(r.id, r.created, r.source, marks.get(r.id, "")) for r in list_releases(app_dir)]


def _written_for(spec: AppSpec) -> list[str]:
    """The unit files and drop-ins deploys of ``spec`` write (relative to the unit directory)."""
    if spec.workers > 1:
        dropins = [d for i in instance_names(spec) for d in worker_socket_dropins(spec, i)]
    else:
        dropins = socket_dropins(spec)
    return [release_template_name(spec), *dropins, *boot_dropins(spec)]


def retire(name: str, *, purge: bool = False, places: Places = Places()) -> list[Path]:
    """For ``cpsysd uninstall``: stop the release units and remove the files deploys wrote
    (release templates, ``cpsysd-release.conf`` drop-ins; the user's drop-ins stay). The
    releases stay on disk, none live (after ``cpsysd install``, ``cpsysd rollback`` brings the
    last live one back), unless ``purge``. Returns the files removed."""
    app_dir = places.releases_dir / name
    if not app_dir.is_dir():
        return []
    with deploy_lock(app_dir, name):
        state = read_state(app_dir)
        ids = sorted({r.id for r in list_releases(app_dir)}
                     | {rid for rid in (state.live, state.previous) if rid})  # fmt: skip
        units = [f"{name}-release@*.service", *(f"{name}-release-{rid}@*.service" for rid in ids)]
        systemctl("stop", *units, check=False)
        paths = {release_worker_template_name(name, rid) for rid in ids}
        sources = [places.state_dir / f"{name}.toml"]
        if state.live:
            sources.append(app_dir / state.live / RELEASE_DESCRIPTION)
        for source in sources:
            if source.is_file():
                paths.update(_written_for(load_spec(source)))
        removed = [places.unit_dir / p for p in sorted(paths) if (places.unit_dir / p).exists()]
        for path in removed:
            path.unlink()
            if path.name == DROPIN_NAME and not any(path.parent.iterdir()):
                path.parent.rmdir()  # only cpsysd's drop-in was there
        systemctl("daemon-reload", check=False)
        if purge:
            shutil.rmtree(app_dir)
            with contextlib.suppress(OSError):
                places.releases_dir.rmdir()  # the last app's: deploy made it
        else:
            write_state(app_dir, LiveState(None, state.live or state.previous, state.last_number))
    return removed
