"""The app's logs in the journal of a real systemd, with their structured fields."""

from __future__ import annotations

import json

import pytest
from e2etools import curl, example_spec, install_app, wait_until

from cpsysd.harness.container import Container

pytestmark = pytest.mark.e2e


def _entries(box: Container, *match: str) -> list[dict[str, str]]:
    text = box.journal("hello.service", extra=["--output=json", *match])
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_access_and_error_logs_have_structured_fields(container: Container) -> None:
    install_app(container, example_spec())
    assert curl(container, "http://127.0.0.1:8080/slow?seconds=0", "-A", "e2e-agent")[0] == 200
    assert curl(container, "http://127.0.0.1:8080/slow?seconds=oops")[0] == 500

    def access_logged() -> bool:
        return any(
            e.get("PATH") == "/slow" and e.get("STATUS") == "200"
            for e in _entries(container, "CPSYSD_LOG=access")
        )

    wait_until(access_logged, what="the access log entry in the journal")
    entry = next(
        e
        for e in _entries(container, "CPSYSD_LOG=access")
        if e.get("PATH") == "/slow" and e.get("STATUS") == "200"
    )
    print(json.dumps(entry, indent=1, sort_keys=True))
    assert entry["_SYSTEMD_UNIT"] == "hello.service"
    assert entry["SYSLOG_IDENTIFIER"] == "hello"
    assert entry["METHOD"] == "GET"
    assert entry["STATUS"] == "200"
    assert entry["REMOTE_ADDR"] == "127.0.0.1"
    assert entry["QUERY_STRING"] == "seconds=0"
    assert entry["USER_AGENT"] == "e2e-agent"
    assert entry["PRIORITY"] == "6"
    assert int(entry["_UID"]) != 0

    def error_logged() -> bool:
        return any(
            "ValueError" in e.get("MESSAGE", "") for e in _entries(container, "--priority=err")
        )

    wait_until(error_logged, what="the traceback of the failed request at priority err")
    cli = container.run(
        ["journalctl", "-u", "hello", "--no-pager", "-o", "cat", "CPSYSD_LOG=access"]
    )
    assert '"GET /slow?seconds=0 HTTP/1.1" 200' in cli.stdout
