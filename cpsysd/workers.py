"""Worker instances: N processes of one app as systemd template units, and rolling restarts.

``workers = N`` renders ``NAME@.service`` and ``NAME@.socket`` (one ``NAME-FDNAME@.socket`` per
further socket name, as for a single service) and ``NAME.target``, which wants every instance and
which the instances are ``PartOf=`` (systemd.unit(5)), so ``systemctl start|stop|restart
NAME.target`` acts on all of them.

Instance names (``%i``, systemd.unit(5) "Specifiers"; computed in :mod:`cpsysd.instances`, which
``cpsysd serve --instance`` shares):

* ``worker_mode = "reuseport"``: ``1`` .. ``N``. Every instance's socket binds the same addresses
  with ``ReusePort=yes`` (SO_REUSEPORT, socket(7)) and the kernel spreads new connections among
  them. A unix socket cannot be shared that way, so instance ``i`` of ``/run/app/app.sock``
  listens on ``/run/app/app-i.sock``.
* ``worker_mode = "ports"``: the port number. Instance ``8081`` listens on port 8081
  (``ListenStream=[HOST:]%i``), so instance ``i`` of ``listen = ["8080"]`` is ``NAME@808(i-1)``
  and ``systemctl start NAME@8090.socket`` adds one more. Every listener therefore needs the same
  port (they may differ in host).

:func:`rolling_restart` restarts the running instances one at a time; a ``Type=notify`` unit's
``systemctl restart`` returns only after the new process sent ``READY=1``, and the listening
sockets belong to systemd and stay open meanwhile, so the app keeps answering throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from cpsysd import escape
from cpsysd.errors import CommandError, SpecError
from cpsysd.instances import instance_listener, instance_names, instance_unix_path
from cpsysd.render import MARKER, RenderOptions, comment_text, render_template, service_context
from cpsysd.spec import SUN_PATH_MAX, AppSpec, Listener, WorkerMode

__all__ = [  # instance_*: computed in cpsysd.instances (shared with cpsysd serve), kept here too
    "Restarted",
    "instance_listener",
    "instance_names",
    "instance_unix_path",
    "list_instances",
    "render_instance_service",
    "render_instance_socket",
    "render_target",
    "render_worker_units",
    "rolling_restart",
    "service_template_name",
    "socket_template_name",
    "target_name",
]
from cpsysd.systemctl import run_command, systemctl, systemd_running

_NOTE = {
    WorkerMode.REUSEPORT: "Worker instances {first}..{last} share one address (ReusePort=yes).",
    WorkerMode.PORTS: "Worker instances are named by their port: {first}..{last}.",
}


def target_name(spec: AppSpec) -> str:
    """``NAME.target``: starts, stops and restarts every instance together."""
    return f"{spec.name}.target"


def socket_template_name(spec: AppSpec, fd_name: str, instance: str = "") -> str:
    """``NAME@.socket`` for the first socket name, ``NAME-FDNAME@.socket`` for the others; with
    ``instance`` the instance's unit name instead of the template's."""
    stem = spec.name if fd_name == spec.fd_names[0] else f"{spec.name}-{fd_name}"
    return f"{stem}@{instance}.socket"


def service_template_name(spec: AppSpec, instance: str = "") -> str:
    """``NAME@.service``, or the instance ``NAME@INSTANCE.service``."""
    return f"{spec.name}@{instance}.service"


def _socket_address(spec: AppSpec, listener: Listener) -> str:
    """The ``ListenStream=`` value with ``%i`` where the instance goes (escaped elsewhere)."""
    if listener.path is not None:
        longest = instance_unix_path(listener.path, str(spec.workers))
        if len(longest.encode()) > SUN_PATH_MAX:
            raise SpecError(
                "listen",
                f"{listener.path} with an instance number is longer than {SUN_PATH_MAX} bytes",
                "use a shorter path, e.g. under /run",
            )
        pure = PurePosixPath(listener.path)
        directory = escape.escape_specifiers(str(pure.parent)).rstrip("/")
        stem, suffix = (escape.escape_specifiers(part) for part in (pure.stem, pure.suffix))
        return f"{directory}/{stem}-%i{suffix}"
    if spec.worker_mode is WorkerMode.PORTS:
        if listener.host is None:
            return "%i"
        return f"[{listener.host}]:%i" if ":" in listener.host else f"{listener.host}:%i"
    return escape.escape_specifiers(listener.address)


def _common_context(spec: AppSpec, options: RenderOptions) -> dict[str, object]:
    names = instance_names(spec)
    return {
        "marker": MARKER,
        "source": comment_text(spec.source or options.description_path),
        "description_path": escape.file_url_path(options.description_path),
        "target": target_name(spec),
        "instance_note": _NOTE[spec.worker_mode].format(first=names[0], last=names[-1]),
    }


def render_instance_socket(spec: AppSpec, options: RenderOptions, fd_name: str) -> str:
    """The template socket unit of socket name ``fd_name``."""
    listeners = [listener for listener in spec.listeners if listener.name == fd_name]
    tcp = any(not listener.is_unix for listener in listeners)
    return render_template(
        "instance@.socket.j2",
        **_common_context(spec, options),
        description=escape.escape_specifiers(spec.description),
        addresses=[_socket_address(spec, listener) for listener in listeners],
        fd_name=fd_name,
        service=service_template_name(spec, "%i"),
        tcp=tcp,
        unix=any(listener.is_unix for listener in listeners),
        reuse_port=tcp and spec.worker_mode is WorkerMode.REUSEPORT,
    )


def render_instance_service(spec: AppSpec, options: RenderOptions) -> str:
    """The template service unit: :func:`cpsysd.render.service_context` (the same sandbox as a
    single service), with the instance's sockets and ``PartOf=NAME.target``."""
    context = service_context(spec, options)
    context.update(_common_context(spec, options))
    context["sockets"] = [socket_template_name(spec, fd, "%i") for fd in spec.fd_names]
    return render_template("instance@.service.j2", **context)


def render_target(spec: AppSpec, options: RenderOptions) -> str:
    """``NAME.target``: wants every instance's sockets and service."""
    members = []
    for instance in instance_names(spec):
        members += [socket_template_name(spec, fd, instance) for fd in spec.fd_names]
        members.append(service_template_name(spec, instance))
    return render_template(
        "target.j2",
        **_common_context(spec, options),
        description=escape.escape_specifiers(spec.description),
        count=spec.workers,
        members=members,
        wanted_by="default.target" if options.user_mode else "multi-user.target",
    )


def render_worker_units(spec: AppSpec, options: RenderOptions) -> dict[str, str]:
    """Every unit of a multi-worker app: file name -> text (what render_units returns for it)."""
    units = {service_template_name(spec): render_instance_service(spec, options)}
    for fd_name in spec.fd_names:
        units[socket_template_name(spec, fd_name)] = render_instance_socket(spec, options, fd_name)
    units[target_name(spec)] = render_target(spec, options)
    return units


# --- rolling restart ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Restarted:
    """One instance restarted by :func:`rolling_restart`: its unit and main PIDs before/after."""

    unit: str
    old_pid: int
    new_pid: int


def _instance_sort_key(unit: str) -> tuple[int, int, str]:
    instance = unit.partition("@")[2].removesuffix(".service")
    return (0, int(instance), "") if instance.isdigit() else (1, 0, instance)


def list_instances(name: str, user: bool = False) -> dict[str, str]:
    """The loaded units of app ``name``: ``NAME@*.service`` (or ``NAME.service``) -> ActiveState,
    instances in numeric order. Asks systemd, so instances started by hand count too."""
    result = systemctl(
        "list-units", "--all", "--plain", "--no-legend", "--full", "--type=service",
        f"{name}@*.service", f"{name}.service", user=user,
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
    try:
        escape.check_unit_stem(name)
    except ValueError as err:
        raise CommandError(f"app name {name!r} {err}", "give the name of the description") from None
    if not systemd_running():
        raise CommandError(
            "systemd is not running here (no /run/systemd/system), so there is nothing to restart",
            "without systemd, restart the app with its supervisor (e.g. supervisorctl restart)",
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
