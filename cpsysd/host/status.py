"""``cpsysd status NAME``: every unit of an installed app, as systemd sees it.

The units are found by asking systemd, not the description, so instances started by hand count
too: ``NAME.target``, ``NAME.service`` or ``NAME@*.service``, and the sockets that trigger them
(``TriggeredBy=``, which names ``NAME-FDNAME.socket`` exactly, where a glob could catch another
app called ``NAME-FDNAME``). Each gets one ``systemctl show`` record: state, main PID, the
``STATUS=`` text of sd_notify(3), since when, ``NRestarts``, and the last warning-or-worse lines
of its journal (every line for a failed unit: a traceback on stderr is logged at ``info``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cpsysd.errors import CommandError
from cpsysd.host.run import check_installed_app, run_command, systemctl

_PROPERTIES = (
    "Id,LoadState,ActiveState,SubState,Result,MainPID,StatusText,StateChangeTimestamp,"
    "NRestarts,TriggeredBy"
)


@dataclass(frozen=True)
class UnitStatus:
    """One unit of the app as ``systemctl show`` reports it; ``restarts`` is None for units
    that are not services (only services count restarts)."""

    unit: str
    load: str
    active: str
    sub: str
    result: str
    main_pid: int
    status_text: str
    since: str
    restarts: int | None
    journal: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        """Failed, or not even loaded (a broken unit file)."""
        return self.active == "failed" or self.load not in ("loaded", "")

    def lines(self) -> list[str]:
        """The unit as a few human-readable lines."""
        state = f"{self.active} ({self.sub})"
        if self.result not in ("", "success"):
            state += f", result {self.result}"
        head = f"{'x' if self.failed else '*'} {self.unit}: {state}"
        if self.since:
            head += f" since {self.since}"
        details = []
        if self.main_pid:
            details.append(f"pid {self.main_pid}")
        if self.restarts is not None:
            details.append(f"restarts {self.restarts}")
        if self.status_text:
            details.append(f"status: {self.status_text}")
        out = [head] + ([f"    {', '.join(details)}"] if details else [])
        return out + [f"    | {line}" for line in self.journal]


@dataclass(frozen=True)
class AppStatus:
    """Every unit of app ``name``: target first, then services, then sockets."""

    name: str
    units: tuple[UnitStatus, ...]

    @property
    def failed(self) -> tuple[UnitStatus, ...]:
        """The units that failed."""
        return tuple(unit for unit in self.units if unit.failed)

    def lines(self) -> list[str]:
        """The whole report, one block per unit."""
        out: list[str] = []
        for unit in self.units:
            out += unit.lines()
        failed = self.failed
        summary = f"{self.name}: {len(self.units)} units"
        summary += f", {len(failed)} failed" if failed else ", none failed"
        return [*out, summary]


def parse_show(text: str) -> list[dict[str, str]]:
    """``systemctl show`` output of several units: one dict per unit (records are separated by
    a blank line; values may contain ``=``)."""
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if current:
                records.append(current)
            current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    return records


def _instance_key(unit: str) -> tuple[int, int, int, str]:
    stem, _, kind = unit.rpartition(".")
    instance = stem.partition("@")[2]
    order = {"target": 0, "service": 1, "socket": 2}.get(kind, 3)
    number = int(instance) if instance.isdigit() else 0
    return (order, 0 if instance.isdigit() else 1, number, unit)


def unit_status(record: dict[str, str], journal: tuple[str, ...] = ()) -> UnitStatus:
    """A :class:`UnitStatus` from one ``systemctl show`` record."""
    restarts = record.get("NRestarts", "")
    return UnitStatus(
        unit=record.get("Id", "?"),
        load=record.get("LoadState", ""),
        active=record.get("ActiveState", ""),
        sub=record.get("SubState", ""),
        result=record.get("Result", ""),
        main_pid=int(record.get("MainPID") or 0),
        status_text=record.get("StatusText", ""),
        since=record.get("StateChangeTimestamp", ""),
        restarts=int(restarts) if restarts.isdigit() else None,
        journal=journal,
    )


def _show(units: list[str], user: bool) -> list[dict[str, str]]:
    return parse_show(systemctl("show", "-p", _PROPERTIES, *units, user=user).stdout)


def find_units(name: str, user: bool = False) -> list[str]:
    """The loaded units of app ``name``: its target, services and their sockets, sorted."""
    result = systemctl(
        "list-units", "--all", "--plain", "--no-legend", "--full",
        f"{name}.service", f"{name}@*.service", f"{name}.target", user=user,
    )  # fmt: skip
    units = set()
    for line in result.stdout.splitlines():
        fields = line.split()
        if fields and fields[0] in ("●", "*"):  # a failed unit's marker
            fields = fields[1:]
        if fields:
            units.add(fields[0])
    services = sorted(unit for unit in units if unit.endswith(".service"))
    if services:
        for record in _show(services, user):
            units.update(record.get("TriggeredBy", "").split())
    return sorted(units, key=_instance_key)


def last_journal_lines(unit: str, *, failed: bool, lines: int, user: bool) -> tuple[str, ...]:
    """The last ``lines`` lines of ``unit``'s journal at warning or worse (every priority for
    a failed unit)."""
    argv = ["journalctl", *(["--user"] if user else []), "--no-pager", "--quiet"]
    argv += ["-u", unit, "-n", str(lines), "-o", "short-iso"]
    if not failed:
        argv.append("--priority=warning")
    result = run_command(argv, check=False, timeout=30)
    return tuple(line for line in result.stdout.splitlines() if line.strip())


def app_status(name: str, *, user: bool = False, lines: int = 5) -> AppStatus:
    """The status of every unit of the installed app ``name``."""
    check_installed_app(
        name,
        "cpsysd status asks the service manager; run it on the host the app is installed on",
    )
    units = find_units(name, user)
    if not units:
        raise CommandError(
            f"no unit of {name} is loaded ({name}.service, {name}@*.service, {name}.target)",
            f"install it (cpsysd install {name}) or start it: systemctl "
            f"{'--user ' if user else ''}start {name}.socket",
        )
    statuses = []
    for record in _show(units, user):
        status = unit_status(record)
        journal = last_journal_lines(status.unit, failed=status.failed, lines=lines, user=user)
        statuses.append(unit_status(record, journal))
    return AppStatus(name, tuple(statuses))
