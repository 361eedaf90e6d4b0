"""``cpsysd restart``: restart an app's running instances one at a time.

:func:`rolling_restart` restarts the running instances one at a time; a ``Type=notify`` unit's
``systemctl restart`` returns only after the new process sent ``READY=1``, and the listening
sockets belong to systemd and stay open meanwhile, so the app keeps answering throughout.

After ``cpsysd deploy`` the app runs as its live release (``NAME-release@ID.service``, or
``NAME-release-ID@I.service`` per worker), not as the units ``cpsysd install`` made, which
are stopped and would start the code in ``working_directory``: the live release's units are
the ones restarted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cpsysd.errors import CommandError
from cpsysd.host.releases import read_state
from cpsysd.host.run import check_installed_app, run_command, systemctl
from cpsysd.render.releases import RELEASES_DIR, release_unit


@dataclass(frozen=True)
class Restarted:
    """One instance restarted by :func:`rolling_restart`: its unit and main PIDs before/after."""

    unit: str
    old_pid: int
    new_pid: int


def _instance_sort_key(unit: str) -> tuple[int, int, str]:
    instance = unit.partition("@")[2].removesuffix(".service")
    return (0, int(instance), "") if instance.isdigit() else (1, 0, instance)


def app_unit_patterns(name: str, user: bool = False, releases_dir: Path = Path(RELEASES_DIR)
                      ) -> tuple[str, ...]:  # fmt: skip
    """The units that serve ``name``: its live release's after a deploy (system units only;
    deploy is root's), else ``NAME@*.service`` and ``NAME.service``."""
    live = None if user else read_state(releases_dir / name).live
    if live is None:
        return (f"{name}@*.service", f"{name}.service")
    return (release_unit(name, live), f"{name}-release-{live}@*.service")


def list_instances(name: str, user: bool = False) -> dict[str, str]:
    """The loaded units of app ``name`` (:func:`app_unit_patterns`) -> ActiveState, instances
    in numeric order. Asks systemd, so instances started by hand count too."""
    result = systemctl(
        "list-units", "--all", "--plain", "--no-legend", "--full", "--type=service",
        *app_unit_patterns(name, user), user=user,
    )  # fmt: skip
    states: dict[str, str] = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        # UNIT LOAD ACTIVE SUB DESCRIPTION; a failed unit's line may start with a marker.
        if fields and fields[0] in ("●", "*"):
            fields = fields[1:]
        if len(fields) >= 4 and fields[1] == "loaded":
            states[fields[0]] = fields[2]
    return {unit: states[unit] for unit in sorted(states, key=_instance_sort_key)}


def _show(unit: str, user: bool) -> dict[str, str]:
    out = systemctl(
        "show", "-p", "ActiveState,SubState,MainPID,TriggeredBy", unit, user=user
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _take_out(unit: str, state: dict[str, str], user: bool) -> str:
    """Stop a broken instance and its sockets: with SO_REUSEPORT the kernel would keep queueing
    new connections on its socket, where they would wait for a process that never comes; with
    its own port nginx would wait too. Stopped, its share goes to the other instances."""
    sockets = state.get("TriggeredBy", "").split()
    result = systemctl("stop", *sockets, unit, user=user, check=False)
    return "taken out of service" if result.returncode == 0 else "could not be stopped"


def rolling_restart(name: str, user: bool = False) -> list[Restarted]:
    """Restart every loaded instance of ``name`` (``NAME@*.service``, or ``NAME.service``) one
    at a time; each must be active and running again (READY=1: ``systemctl restart`` of a
    Type=notify unit returns after it) before the next. Its sockets stay open in systemd
    meanwhile, so connections wait in the backlog rather than being refused.

    On the first instance that does not come back the restart stops, so the others keep
    serving old code, and CommandError names it. When other instances exist it is also stopped
    with its sockets (see :func:`_take_out`); the next ``cpsysd restart`` starts it again.
    """
    check_installed_app(
        name,
        "without systemd, restart the app with its supervisor (e.g. supervisorctl restart)",
        why=", so there is nothing to restart",
    )
    units = list(list_instances(name, user))
    if not units:
        raise CommandError(
            f"no instance of {name} is loaded (no {name}@*.service or {name}.service)",
            f"start it: systemctl {'--user ' if user else ''}start {name}.target or {name}.socket",
        )
    done: list[Restarted] = []
    for unit in units:
        before = int(_show(unit, user).get("MainPID", "0"))
        # TimeoutStopSec + TimeoutStartSec of the unit bound the job; systemd enforces both.
        argv = ["systemctl", *(["--user"] if user else []), "restart", unit]
        result = run_command(argv, check=False, timeout=600)
        state = _show(unit, user)
        if result.returncode == 0 and (state["ActiveState"], state["SubState"]) == (
            "active",
            "running",
        ):
            done.append(Restarted(unit, before, int(state.get("MainPID", "0"))))
            continue
        what = f"{state.get('ActiveState')}/{state.get('SubState')}"
        if len(units) > 1:
            what += ", " + _take_out(unit, state, user)
        raise CommandError(
            f"{unit} did not come back after restart ({what}); {len(done)} of {len(units)} "
            "instances restarted, the others left running",
            f"see journalctl {'--user ' if user else ''}-u {unit}; fix, then cpsysd restart again",
        )
    return done
