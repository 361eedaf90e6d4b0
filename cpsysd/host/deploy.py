"""``cpsysd deploy``, ``rollback`` and ``releases``: health-gated swaps on plain systemd.

A swap from the live release OLD (or, the first time, ``NAME.service`` of ``cpsysd install``) to
NEW (units: :mod:`cpsysd.render.releases`; files: :mod:`cpsysd.host.releases`):

1. ``systemctl start NAME-release@NEW.service`` beside OLD. ``Sockets=`` passes it the same
   listening sockets, which systemd holds open throughout. With ``health_path`` it sends READY=1
   only after the app answered that path in-process, before it accepts a connection, so the
   start job returns only for a release that works (Type=notify).
2. It must stay up, unrestarted, for a grace period.
3. The sockets' ``Service=`` drop-ins name NEW; ``daemon-reload``.
4. ``systemctl stop`` OLD: it stops accepting, finishes its in-flight requests (TimeoutStopSec=)
   and exits; NEW alone accepts from the socket, whose queue never closed.

If 1 or 2 fails, NEW is stopped and OLD never noticed; the error quotes the new release's
journal (its ``cpsysd: error:`` line). Single-instance apps only for now (``workers = 1``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cpsysd import fsutil
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
from cpsysd.host.run import run_command, systemctl, systemd_running
from cpsysd.render.common import SYSTEM_UNIT_DIR, socket_unit_name
from cpsysd.render.releases import (
    RELEASE_DESCRIPTION,
    RELEASES_DIR,
    release_template_name,
    release_unit,
    render_release_service,
    render_socket_dropin,
    socket_dropins,
)

GRACE_SEC = 3.0  # the new release must stay up this long before the old one is stopped
KEEP = 5  # releases kept on disk (the live and the previous one always)
START_TIMEOUT = 200.0  # above TimeoutStartSec= (90 s) plus a stop of a failed start


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


def _show(unit: str) -> dict[str, str]:
    out = systemctl("show", "-p", "ActiveState,SubState,MainPID,NRestarts", unit).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal_cause(unit: str, wait: float = 3.0) -> str:
    """The new release's own last error line (``cpsysd: error: ...``) in its journal, waiting
    briefly for journald to have it; else its last line."""
    deadline = time.monotonic() + wait
    while True:
        out = run_command(["journalctl", "--no-pager", "-o", "cat", "-n", "200", "-u", unit],
                          check=False).stdout  # fmt: skip
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("cpsysd: error:")]
        if errors:
            return errors[-1].removeprefix("cpsysd: error:").strip()
        if time.monotonic() > deadline:
            return lines[-1] if lines else "no journal entries"
        time.sleep(0.2)


def _check_swappable(spec: AppSpec) -> None:
    if spec.workers > 1:
        raise CpsysdError(
            f"{spec.name} has workers = {spec.workers}; deploy swaps single-instance apps only",
            "use cpsysd restart for workers (a rolling restart), or workers = 1",
        )
    if not systemd_running():
        raise CpsysdError(
            "systemd is not running here (no /run/systemd/system): nothing to deploy to",
            "deploy on the machine that runs the app",
        )
    socket = socket_unit_name(spec, spec.fd_names[0])
    if systemctl("show", "-P", "LoadState", socket).stdout.strip() != "loaded":
        raise CpsysdError(
            f"{socket} is not installed, so there are no sockets to deploy onto",
            f"install the app first: cpsysd install {spec.name} -c FILE",
        )


def _write_units(spec: AppSpec, places: Places) -> None:
    text = render_release_service(spec, PurePosixPath(places.releases_dir))
    fsutil.atomic_write(places.unit_dir / release_template_name(spec), text.encode())
    systemctl("daemon-reload")


def _point_sockets(spec: AppSpec, release_id: str, places: Places) -> None:
    for dropin in socket_dropins(spec):
        path = places.unit_dir / dropin
        fsutil.make_directories(path.parent)
        fsutil.atomic_write(path, render_socket_dropin(spec, release_id).encode())
    systemctl("daemon-reload")


def _start_gated(spec: AppSpec, release_id: str, old_unit: str, grace: float) -> None:
    """Steps 1 and 2 of the module docstring; on failure NEW is stopped and this raises."""
    unit = release_unit(spec.name, release_id)
    started = run_command(["systemctl", "start", unit], check=False, timeout=START_TIMEOUT)
    state = _show(unit)
    problem = None
    if started.returncode != 0 or state.get("ActiveState") != "active":
        problem = "did not start"
    else:
        pid, deadline = state.get("MainPID"), time.monotonic() + grace
        while problem is None and time.monotonic() < deadline:
            time.sleep(0.2)
            now = _show(unit)
            if (now.get("SubState"), now.get("MainPID"), now.get("NRestarts")) != (
                "running", pid, "0",
            ):  # fmt: skip
                problem = f"died within the {grace:g} s grace period"
    if problem is None:
        return
    systemctl("stop", unit, check=False)
    systemctl("reset-failed", unit, check=False)
    raise CpsysdError(
        f"release {release_id} of {spec.name} {problem}: {journal_cause(unit)}; "
        f"{old_unit} keeps serving",
        f"see journalctl -u {unit}",
    )


def swap(spec: AppSpec, release_id: str, state: LiveState, places: Places, grace: float) -> str:
    """Make ``release_id`` live in place of ``state.live`` (the module docstring's steps);
    returns the unit it replaced."""
    old_unit = release_unit(spec.name, state.live) if state.live else f"{spec.name}.service"
    _write_units(spec, places)
    _start_gated(spec, release_id, old_unit, grace)
    _point_sockets(spec, release_id, places)
    systemctl("stop", old_unit)  # returns once its in-flight requests finished
    return old_unit


def _app_dir(name: str, places: Places) -> Path:
    app_dir = places.releases_dir / name
    fsutil.make_directories(app_dir, 0o755)
    return app_dir


def deploy(spec: AppSpec, *, grace: float = GRACE_SEC, keep: int = KEEP,
           places: Places = Places()) -> Swapped:  # fmt: skip
    """``cpsysd deploy``: build a release of ``spec``'s code and swap it in."""
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
            raise
        write_state(app_dir, LiveState(release_id, state.live, number))
        pruned = prune(app_dir, keep, {release_id, *([state.live] if state.live else [])})
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
