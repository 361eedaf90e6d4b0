"""``cpsysd logs NAME``: the journal of every instance and socket of an app, merged in time.

One ``journalctl -o json`` over all the app's units (``-u`` with globs for the instances, which
journalctl matches against the units the journal has seen, so stopped instances count; the
sockets found by :func:`cpsysd.host.status.find_units` exactly). Each entry becomes one line:
time, unit, PID, message; an access entry of ``cpsysd serve`` (``CPSYSD_LOG=access``, the fields
of cpsysd/runtime/journal.py) is shown with its request fields instead of the bare message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime

from cpsysd.errors import CommandError
from cpsysd.host.run import PIPE, check_installed_app, run_command, spawn, wait
from cpsysd.host.status import find_units


def journal_argv(
    units: Sequence[str],
    *,
    user: bool = False,
    follow: bool = False,
    since: str | None = None,
    lines: int | None = None,
) -> list[str]:
    """The journalctl command line for ``units`` (names or globs), as JSON lines."""
    argv = ["journalctl", *(["--user"] if user else []), "--no-pager", "--quiet", "-o", "json"]
    for unit in units:
        argv += ["-u", unit]
    if since is not None:
        argv += ["--since", since]
    if lines is not None:
        argv += ["-n", str(lines)]
    if follow:
        argv.append("--follow")
    return argv


def app_units(name: str, user: bool = False) -> list[str]:
    """What to ask the journal for: every instance (globs, so stopped ones too), the target,
    and the sockets systemd has loaded for the app."""
    patterns = [f"{name}.service", f"{name}@*.service", f"{name}.socket", f"{name}@*.socket"]
    patterns.append(f"{name}.target")
    loaded = [unit for unit in find_units(name, user) if unit not in patterns]
    return patterns + loaded


def _text(value: object) -> str:
    # journalctl gives a field that is not valid UTF-8 as an array of byte values.
    if isinstance(value, list):
        value = bytes(b for b in value if isinstance(b, int)).decode("utf-8", "replace")
    text = str(value) if value is not None else ""
    # Log injection: a newline in a field must not start a line that looks like an entry.
    return "".join(ch if ch.isprintable() or ch == "\t" else repr(ch)[1:-1] for ch in text)


def _unit(entry: dict[str, object]) -> str:
    for field in ("_SYSTEMD_UNIT", "_SYSTEMD_USER_UNIT"):
        value = _text(entry.get(field))
        if value and value != "init.scope" and not value.startswith("user@"):
            return value
    # Messages of the service manager about a unit (started, failed, ...): the unit it is about.
    return _text(entry.get("USER_UNIT") or entry.get("UNIT") or entry.get("SYSLOG_IDENTIFIER"))


def format_entry(entry: dict[str, object]) -> str:
    """One journal entry (a ``journalctl -o json`` record) as one line."""
    try:
        stamp = datetime.fromtimestamp(int(_text(entry.get("__REALTIME_TIMESTAMP"))) / 1e6)
        when = stamp.astimezone().isoformat(timespec="seconds")
    except (TypeError, ValueError):
        when = "?"
    pid = _text(entry.get("_PID"))
    source = (
        f"{_unit(entry)}[{pid}]" if pid and _text(entry.get("_COMM")) != "systemd" else _unit(entry)
    )
    if _text(entry.get("CPSYSD_LOG")) == "access":

        def get(field: str) -> str:
            return _text(entry.get(field))

        query = f"?{get('QUERY_STRING')}" if get("QUERY_STRING") else ""
        message = (
            f'{get("REMOTE_ADDR")}:{get("REMOTE_PORT")} "{get("METHOD")} {get("PATH")}{query} '
            f'{get("PROTOCOL")}" {get("STATUS")} {get("BYTES")} host={get("HOST")} '
            f'agent="{get("USER_AGENT")}" referer="{get("REFERER")}"'
        )
    else:
        message = _text(entry.get("MESSAGE"))
    return f"{when} {source}: {message}"


def _parse(line: str) -> str | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return format_entry(entry) if isinstance(entry, dict) else None


def _check_name(name: str) -> None:
    check_installed_app(
        name,
        "cpsysd logs reads the journal of the host the app is installed on",
    )


def app_logs(
    name: str,
    *,
    user: bool = False,
    follow: bool = False,
    since: str | None = None,
    lines: int | None = None,
) -> Iterator[str]:
    """The app's journal lines, oldest first; with ``follow`` it goes on until interrupted.
    Without ``since`` or ``lines``, the last 50 lines."""
    _check_name(name)
    if lines is None and since is None:
        lines = 50
    argv = journal_argv(app_units(name, user), user=user, follow=follow, since=since, lines=lines)
    if not follow:
        result = run_command(argv, check=False, timeout=120)
        if result.returncode != 0:
            detail = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
            raise CommandError(
                f"journalctl failed: {detail[-1]}",
                "check --since (e.g. '1 hour ago', 'today', '2024-05-01 12:00')",
            )
        for raw in result.stdout.splitlines():
            if (line := _parse(raw)) is not None:
                yield line
        return
    proc = spawn(argv, stdout=PIPE)
    assert proc.stdout is not None
    try:
        for chunk in proc.stdout:
            if (line := _parse(chunk.decode("utf-8", "replace"))) is not None:
                yield line
    finally:
        proc.kill()
        wait(proc, 5)
