"""The swap under ``cpsysd deploy`` and ``rollback`` (:mod:`cpsysd.host.deploy`): one release's
processes take over the app's listening sockets from another's, health-gated.

For one unit pair OLD -> NEW (units: :mod:`cpsysd.render.releases`):

1. ``systemctl start NEW`` beside OLD. ``Sockets=`` passes it the same listening sockets, which
   systemd holds open throughout. With ``health_path`` it sends READY=1 only after the app
   answered that path in-process, before it accepts a connection, so the start job returns only
   for a release that works (Type=notify).
2. It must stay up, unrestarted, for a grace period.
3. The sockets' ``Service=`` drop-ins name NEW; ``daemon-reload``.
4. ``systemctl stop OLD``: it stops accepting, finishes its in-flight requests (TimeoutStopSec=)
   and exits; NEW alone accepts from the socket, whose queue never closed.

If 1 or 2 fails, NEW is stopped and OLD never noticed; the error quotes the new release's
journal (its ``cpsysd: error:`` line).

With ``workers = N`` every instance has its own socket (ReusePort=), so the swap runs these steps
instance by instance: while instance I swaps, OLD and NEW of I both accept on I's socket and the
other instances serve as before, so capacity never drops below N (the issue asks N-1). When
instance I fails, the instances already swapped are swapped back, last first, the same way, so
the app is never left with two releases live.

Once every slot swapped, the boot drop-ins (:func:`cpsysd.render.releases.render_boot_dropins`)
name the new release, so that boot and ``systemctl start|restart NAME.target`` start it and never
the units of ``cpsysd install``. They change last: until then the old release is the live one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cpsysd import fsutil
from cpsysd.description.instances import instance_names
from cpsysd.description.load import AppSpec
from cpsysd.errors import CpsysdError
from cpsysd.host.run import run_command, systemctl
from cpsysd.render.releases import (
    release_template_name,
    release_unit,
    release_worker_template_name,
    release_worker_unit,
    render_boot_dropins,
    render_release_service,
    render_release_worker_service,
    render_socket_dropin,
    socket_dropins,
    worker_socket_dropins,
)

START_TIMEOUT = 200.0  # above TimeoutStartSec= (90 s) plus a stop of a failed start
# How often the grace period looks at the new release. A death is caught by the end either way
# (a changed MainPID or NRestarts); each look is a systemctl and a D-Bus call of PID 1 beside
# the two serving releases, so few (bench/deploywait.py: the grace period holds most of a
# deploy's slow requests).
GRACE_POLL = 1.0


@dataclass(frozen=True)
class Slot:
    """One place a release serves: the single service (``instance`` None) or one worker
    instance, with the unit serving it before the swap and the one that takes over."""

    instance: str | None
    old_unit: str
    new_unit: str


def live_unit(name: str, release_id: str | None, instance: str | None) -> str:
    """The unit serving ``instance`` (None: the single service) when ``release_id`` is live;
    with no release yet, the unit ``cpsysd install`` made."""
    if instance is None:
        return release_unit(name, release_id) if release_id else f"{name}.service"
    if release_id is None:
        return f"{name}@{instance}.service"
    return release_worker_unit(name, release_id, instance)


def slots(spec: AppSpec, old_id: str | None, new_id: str) -> list[Slot]:
    """The places to swap, in order: the one service, or every worker instance."""
    instances: list[str | None] = list(instance_names(spec)) if spec.workers > 1 else [None]
    return [
        Slot(i, live_unit(spec.name, old_id, i), live_unit(spec.name, new_id, i)) for i in instances
    ]


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


def write_release_units(spec: AppSpec, release_id: str, releases_dir: Path, unit_dir: Path) -> None:
    """The release's unit template (shared by single releases, its own for workers)."""
    root = PurePosixPath(releases_dir)
    if spec.workers > 1:
        name = release_worker_template_name(spec.name, release_id)
        text = render_release_worker_service(spec, release_id, root)
    else:
        name, text = release_template_name(spec), render_release_service(spec, root)
    fsutil.atomic_write(unit_dir / name, text.encode())
    systemctl("daemon-reload")


def remove_release_units(name: str, release_id: str, unit_dir: Path) -> None:
    """A worker release's own template, once the release is gone (single releases share one)."""
    path = unit_dir / release_worker_template_name(name, release_id)
    if path.exists():
        path.unlink()
        systemctl("daemon-reload", check=False)


def _point_sockets(spec: AppSpec, release_id: str, instance: str | None, unit_dir: Path) -> None:
    dropins = socket_dropins(spec) if instance is None else worker_socket_dropins(spec, instance)
    for dropin in dropins:
        path = unit_dir / dropin
        fsutil.make_directories(path.parent)
        fsutil.atomic_write(path, render_socket_dropin(spec, release_id, instance).encode())
    systemctl("daemon-reload")


def point_boot(spec: AppSpec, release_id: str, unit_dir: Path) -> None:
    """Write the boot drop-ins for live release ``release_id`` (the module docstring)."""
    for dropin, text in render_boot_dropins(spec, release_id).items():
        path = unit_dir / dropin
        fsutil.make_directories(path.parent)
        fsutil.atomic_write(path, text.encode())
    systemctl("daemon-reload")


def start_gated(spec: AppSpec, release_id: str, slot: Slot, grace: float) -> None:
    """Steps 1 and 2 of the module docstring; on failure the new unit is stopped and this
    raises."""
    unit = slot.new_unit
    started = run_command(["systemctl", "start", unit], check=False, timeout=START_TIMEOUT)
    state = _show(unit)
    problem = None
    if started.returncode != 0 or state.get("ActiveState") != "active":
        problem = "did not start"
    else:
        pid, deadline = state.get("MainPID"), time.monotonic() + grace
        while problem is None and time.monotonic() < deadline:
            time.sleep(min(GRACE_POLL, max(0.0, deadline - time.monotonic())))
            now = _show(unit)
            if (now.get("SubState"), now.get("MainPID"), now.get("NRestarts")) != (
                "running", pid, "0",
            ):  # fmt: skip
                problem = f"died within the {grace:g} s grace period"
    if problem is None:
        return
    systemctl("stop", unit, check=False)
    systemctl("reset-failed", unit, check=False)
    what = f"release {release_id} of {spec.name}"
    if slot.instance is not None:
        what += f" (instance {slot.instance})"
    raise CpsysdError(
        f"{what} {problem}: {journal_cause(unit)}; {slot.old_unit} keeps serving",
        f"see journalctl -u {unit}",
    )


def _swap_slot(spec: AppSpec, release_id: str, slot: Slot, grace: float, unit_dir: Path) -> None:
    start_gated(spec, release_id, slot, grace)
    _point_sockets(spec, release_id, slot.instance, unit_dir)
    systemctl("stop", slot.old_unit)  # returns once its in-flight requests finished


def _swap_back(spec: AppSpec, old_id: str | None, slot: Slot, unit_dir: Path) -> None:
    """Undo one instance's swap: the old unit first, so the socket always has a server."""
    systemctl("start", slot.old_unit, check=False)
    if old_id is None:
        for dropin in worker_socket_dropins(spec, str(slot.instance)):
            (unit_dir / dropin).unlink(missing_ok=True)
        systemctl("daemon-reload", check=False)
    else:
        _point_sockets(spec, old_id, slot.instance, unit_dir)
    systemctl("stop", slot.new_unit, check=False)


def swap(
    spec: AppSpec, old_id: str | None, new_id: str, *, grace: float, releases_dir: Path,
    unit_dir: Path,
) -> str:  # fmt: skip
    """Make ``new_id`` live in place of ``old_id`` (None: the units of ``cpsysd install``),
    slot by slot (the module docstring); returns what it replaced, for the report."""
    write_release_units(spec, new_id, releases_dir, unit_dir)
    todo = slots(spec, old_id, new_id)
    done: list[Slot] = []
    try:
        for slot in todo:
            _swap_slot(spec, new_id, slot, grace, unit_dir)
            done.append(slot)
    except CpsysdError:
        for slot in reversed(done):
            _swap_back(spec, old_id, slot, unit_dir)
        raise
    point_boot(spec, new_id, unit_dir)
    return todo[0].old_unit if len(todo) == 1 else f"{todo[0].old_unit} .. {todo[-1].old_unit}"
