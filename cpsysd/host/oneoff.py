"""``cpsysd run NAME -- CMD ARGS...``: a one-off command run the way the installed service runs.

The installed unit (``systemctl cat``: the file and its drop-ins, so local changes count too) is
turned into the properties of a transient service started with ``systemd-run --wait --collect``
(systemd-run(1)): same user, sandbox, environment, credentials, state and working directory.
Only what describes the service's life cycle is left out (``Type=``, ``ExecStart=``,
``Restart=``, ``WatchdogSec=``, the timeouts, the standard streams, which ``--pty``/``--pipe``
set). The command's exit status is systemd-run's (``--wait`` returns it).

``DynamicUser=yes`` without ``User=`` names the user after the unit (systemd.exec(5)): the
transient unit would get a user of its own, and ``StateDirectory=`` would be chowned to it under
the running service's feet. So the transient unit gets ``User=NAME``: while the service runs the
one-off joins its dynamic user (same UID), otherwise systemd allocates the same name again, and
the state directory stays the service's.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from cpsysd.errors import CommandError
from cpsysd.host.run import check_installed_app, spawn, systemctl, wait

# [Service] settings about how the service starts, stops and restarts, or where its standard
# streams go: none applies to a command run once with the caller's terminal.
_LIFE_CYCLE = frozenset(
    {
        "Type", "ExitType", "NotifyAccess", "PIDFile", "BusName", "GuessMainPID", "Sockets",
        "RemainAfterExit", "Restart", "RestartSec", "RestartSteps", "RestartMaxDelaySec",
        "RestartPreventExitStatus", "RestartForceExitStatus", "SuccessExitStatus",
        "ExecCondition", "ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload",
        "ExecStop", "ExecStopPost", "WatchdogSec", "TimeoutSec", "TimeoutStartSec",
        "TimeoutStopSec", "TimeoutAbortSec", "RuntimeMaxSec", "RuntimeRandomizedExtraSec",
        "FileDescriptorStoreMax", "NonBlocking", "USBFunctionDescriptors",
        "USBFunctionStrings", "StandardInput", "StandardOutput", "StandardError",
        "StandardInputText", "StandardInputData", "TTYPath", "OOMPolicy",
    }
)  # fmt: skip
# Debian's systemd default PATH (split-usr), behind the interpreter's directory.
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PYTHON_NAMES = frozenset({"python", "python3"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ServiceUnit:
    """What a one-off needs of an installed service: its unit name, the ``[Service]``
    assignments in file order (drop-ins after the file), and its interpreter."""

    unit: str
    settings: tuple[tuple[str, str], ...]
    python: str | None


def parse_unit_settings(text: str, section: str = "Service") -> list[tuple[str, str]]:
    """The ``KEY=VALUE`` assignments of ``section`` in ``text`` (``systemctl cat`` output: a
    unit file and its drop-ins, each headed by a ``# /path`` comment), in order; comments,
    blank lines and other sections skipped, backslash continuations joined
    (systemd.syntax(7))."""
    settings: list[tuple[str, str]] = []
    current = ""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and "=" in line:
            key, _, value = line.partition("=")
            settings.append((key.strip(), value.strip()))
    return settings


def resolve_specifiers(value: str, unit: str) -> str:
    """``value`` with the unit-name specifiers (%i %I %n %N %p %P %j %J %%, systemd.unit(5))
    replaced for ``unit``: a transient unit's properties are taken literally, so ``%i`` would
    reach the command as the two characters. Other specifiers are left as they are."""
    stem = unit.rpartition(".")[0]
    prefix, _, instance = stem.partition("@")
    table = {
        "i": instance, "I": instance, "n": unit, "N": stem, "p": prefix, "P": prefix,
        "j": prefix.rpartition("-")[2], "J": prefix.rpartition("-")[2], "%": "%",
    }  # fmt: skip
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char != "%":
            out.append(char)
            continue
        spec = next(chars, "")
        out.append(table.get(spec, "%" + spec))
    return "".join(out)


def _interpreter(settings: Sequence[tuple[str, str]]) -> str | None:
    starts = [value for key, value in settings if key == "ExecStart" and value]
    if not starts:
        return None
    try:
        first = shlex.split(starts[-1])[0]
    except (ValueError, IndexError):
        return None
    first = first.lstrip("-@:+!")  # ExecStart= prefixes, systemd.service(5)
    return first if PurePosixPath(first).name.startswith("python") else None


def _flag(value: str) -> bool:
    return value.lower() in ("1", "yes", "true", "on")


def oneoff_properties(service: ServiceUnit, name: str) -> list[str]:
    """The ``-p KEY=VALUE`` properties of the transient unit (without the ``-p``)."""
    props: list[str] = []
    if service.python:
        # First, so that a PATH= of the unit's own still wins; console scripts of the app's
        # virtualenv (django-admin, flask, alembic) are then found by name.
        bindir = str(PurePosixPath(service.python).parent)
        props.append(f"Environment=PATH={bindir}:{_DEFAULT_PATH}")
    dynamic = user_given = False
    for key, value in service.settings:
        if key in _LIFE_CYCLE:
            continue
        if key == "DynamicUser":
            dynamic = _flag(value)
        if key == "User":
            user_given = bool(value)
        props.append(f"{key}={resolve_specifiers(value, service.unit)}")
    if dynamic and not user_given:
        props.append(f"User={name}")  # the service's dynamic user: see the module docstring
    return props


def oneoff_argv(
    service: ServiceUnit,
    name: str,
    command: Sequence[str],
    *,
    user: bool,
    tty: bool,
    setenv: Sequence[str] = (),
) -> list[str]:
    """The ``systemd-run`` command line that runs ``command`` like ``service``. A leading
    ``python``/``python3`` becomes the service's own interpreter (its virtualenv's).
    ``setenv``: ``NAME=VALUE``, or ``NAME`` alone for the value in this process's environment
    (systemd-run reads it there, so a password stays off every command line)."""
    if not command:
        raise CommandError("no command to run", f"cpsysd run {name} -- COMMAND [ARGS...]")
    for assignment in setenv:
        if not _ENV_NAME.fullmatch(assignment.partition("=")[0]):
            raise CommandError(
                f"--setenv {assignment!r}: not an environment variable name",
                "give NAME=VALUE, or NAME to pass this environment's value",
            )
    argv = list(command)
    if service.python and argv[0] in _PYTHON_NAMES:
        argv[0] = service.python
    run = ["systemd-run", *(["--user"] if user else []), "--quiet", "--wait", "--collect"]
    run.append("--pty" if tty else "--pipe")
    run += ["--service-type=exec", f"--description=cpsysd run {name}: {shlex.join(command)}"]
    for prop in oneoff_properties(service, name):
        run += ["-p", prop]
    for assignment in setenv:  # after the unit's Environment=, so these win
        run += ["--setenv", assignment]
    return [*run, "--", *argv]


def read_service(name: str, user: bool = False) -> ServiceUnit:
    """The installed ``NAME.service``, or with workers the ``NAME@.service`` template (read
    as its first instance, ``NAME@1.service``)."""
    check_installed_app(
        name,
        "cpsysd run runs commands as the installed service; install the app on a systemd host",
    )
    candidates = ((f"{name}.service", f"{name}.service"), (f"{name}@1.service", f"{name}@.service"))
    for unit, file in candidates:
        result = systemctl("cat", file, user=user, check=False)
        if result.returncode == 0 and result.stdout.strip():
            settings = parse_unit_settings(result.stdout)
            return ServiceUnit(unit, tuple(settings), _interpreter(settings))
    where = "systemctl --user" if user else "systemd"
    raise CommandError(
        f"{name} is not installed ({where} knows no {name}.service or {name}@.service)",
        f"install it first: cpsysd install {name}" + (" --user" if user else ""),
    )


def run_oneoff(
    name: str,
    command: Sequence[str],
    *,
    user: bool = False,
    tty: bool = False,
    setenv: Sequence[str] = (),
) -> int:
    """Run ``command`` as the installed service ``name`` runs, attached to this process's
    standard streams (a pseudo-terminal with ``tty``), with ``setenv`` added to its
    environment (see :func:`oneoff_argv`); returns the command's exit status."""
    argv = oneoff_argv(read_service(name, user), name, command, user=user, tty=tty, setenv=setenv)
    proc = spawn(argv)
    try:
        # No time limit of ours: a migration takes what it takes; ^C reaches systemd-run too
        # (same process group), which then stops the unit.
        while (status := wait(proc, 3600)) is None:
            pass
    except BaseException:
        if wait(proc, 5) is None:
            proc.kill()
            proc.wait()
        raise
    return status
