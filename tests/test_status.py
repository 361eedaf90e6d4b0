"""``cpsysd status`` and ``cpsysd logs``: parsing what systemctl and journalctl print (the real
run under systemd is tests/e2e/test_e2e_ops.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cpsysd.host.logs import format_entry, journal_argv
from cpsysd.host.status import AppStatus, _instance_key, parse_show, unit_status

# `systemctl show -p ... hello@1.service hello@2.service hello@1.socket` as systemd 252 prints it
SHOW = """Id=hello@1.service
LoadState=loaded
ActiveState=active
SubState=running
Result=success
MainPID=214
StatusText=serving 1 socket: http=[::]:8080 (reuseport)
StateChangeTimestamp=Sun 2026-12-06 01:40:02 UTC
NRestarts=0
TriggeredBy=hello@1.socket

Id=hello@2.service
LoadState=loaded
ActiveState=failed
SubState=failed
Result=exit-code
MainPID=0
StatusText=
StateChangeTimestamp=Sun 2026-12-06 01:40:09 UTC
NRestarts=4
TriggeredBy=hello@2.socket

Id=hello@1.socket
LoadState=loaded
ActiveState=active
SubState=running
Result=success
MainPID=0
StatusText=
StateChangeTimestamp=Sun 2026-12-06 01:40:01 UTC
NRestarts=
TriggeredBy=
"""


def test_show_records_become_unit_statuses() -> None:
    records = parse_show(SHOW)
    assert [record["Id"] for record in records] == [
        "hello@1.service",
        "hello@2.service",
        "hello@1.socket",
    ]
    first, second, socket = (unit_status(record) for record in records)
    assert (first.main_pid, first.restarts, first.failed) == (214, 0, False)
    assert first.status_text == "serving 1 socket: http=[::]:8080 (reuseport)"  # '=' kept
    assert (second.failed, second.restarts, second.result) == (True, 4, "exit-code")
    assert socket.restarts is None


def test_the_report_names_state_pid_status_restarts_and_journal() -> None:
    records = parse_show(SHOW)
    units = (unit_status(records[0]), unit_status(records[1], ("01:40:09 boom",)))
    report = AppStatus("hello", units)
    text = "\n".join(report.lines())
    assert "* hello@1.service: active (running) since Sun 2026-12-06 01:40:02 UTC" in text
    assert "pid 214, restarts 0, status: serving 1 socket" in text
    assert "x hello@2.service: failed (failed), result exit-code" in text
    assert "restarts 4" in text
    assert "    | 01:40:09 boom" in text
    assert report.lines()[-1] == "hello: 2 units, 1 failed"
    assert [unit.unit for unit in report.failed] == ["hello@2.service"]


def test_units_sort_target_services_in_number_order_then_sockets() -> None:
    units = ["hello@10.service", "hello@2.socket", "hello.target", "hello@2.service"]
    assert sorted(units, key=_instance_key) == [
        "hello.target",
        "hello@2.service",
        "hello@10.service",
        "hello@2.socket",
    ]


def test_journal_argv() -> None:
    argv = journal_argv(["a.service", "a@*.service"], follow=True, since="today", lines=3)
    assert argv == [
        "journalctl", "--no-pager", "--quiet", "-o", "json", "-u", "a.service",
        "-u", "a@*.service", "--since", "today", "-n", "3", "--follow",
    ]  # fmt: skip
    assert journal_argv(["a.service"], user=True)[:2] == ["journalctl", "--user"]


def test_access_entries_show_their_request_fields() -> None:
    entry = {
        "__REALTIME_TIMESTAMP": "1796521202000000",
        "_SYSTEMD_UNIT": "hello@2.service",
        "_PID": "215",
        "_COMM": "python",
        "MESSAGE": '127.0.0.1 "GET /a?b=1 HTTP/1.1" 200 5',
        "CPSYSD_LOG": "access",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "METHOD": "GET",
        "PATH": "/a",
        "QUERY_STRING": "b=1",
        "PROTOCOL": "HTTP/1.1",
        "STATUS": "200",
        "BYTES": "5",
        "HOST": "localhost:8080",
        "USER_AGENT": "curl/7.88",
        "REFERER": "",
    }
    line = format_entry(entry)
    assert line.startswith("2026-")
    assert line.endswith(
        ' hello@2.service[215]: 127.0.0.1:40000 "GET /a?b=1 HTTP/1.1" 200 5 '
        'host=localhost:8080 agent="curl/7.88" referer=""'
    )


def test_manager_messages_name_their_unit_and_fields_cannot_inject_lines() -> None:
    manager = {
        "__REALTIME_TIMESTAMP": "1796521202000000",
        "_SYSTEMD_UNIT": "init.scope",
        "_PID": "1",
        "_COMM": "systemd",
        "UNIT": "hello@1.socket",
        "MESSAGE": "Listening on hello@1.socket.",
    }
    assert format_entry(manager).endswith(" hello@1.socket: Listening on hello@1.socket.")
    hostile = {"_SYSTEMD_UNIT": "a.service", "MESSAGE": list(b"x\nfake entry\xff")}
    line = format_entry(hostile)
    assert "\n" not in line
    assert line == "? a.service: x\\nfake entry\ufffd"
    assert json.dumps(line)  # one printable line


@pytest.mark.skipif(Path("/run/systemd/system").exists(), reason="only where systemd is not PID 1")
@pytest.mark.parametrize("command", [["status", "hello"], ["logs", "hello", "-f"]])
def test_cli_without_systemd_is_one_line(cpsysd_cmd: list[str], command: list[str]) -> None:
    result = subprocess.run([*cpsysd_cmd, *command], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("cpsysd: error: systemd is not running here")
    assert result.stderr.count("\n") == 1
