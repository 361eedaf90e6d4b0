"""``cpsysd install --user``: the app under a user's own systemd manager (user@UID.service)."""

from __future__ import annotations

import json

import pytest
from e2etools import curl, example_spec, install_app, wait_until

from cpsysd.harness.container import Container

pytestmark = pytest.mark.e2e


def test_user_unit_under_a_user_manager(container: Container) -> None:
    container.run(["useradd", "--create-home", "alice"])
    uid = int(container.run(["id", "-u", "alice"]).stdout)
    container.run(["systemctl", "start", f"user@{uid}.service"])
    wait_until(
        lambda: (
            container.run(
                ["systemctl", "--user", "is-system-running"], user="alice", check=False
            ).stdout.strip()
            in ("running", "degraded")
        ),
        what="alice's user manager",
    )
    install_app(container, example_spec(), user="alice")
    units = container.run(["ls", "/home/alice/.config/systemd/user"]).stdout.split()
    assert "hello.service" in units
    assert "hello.socket" in units
    # The socket belongs to alice's manager, not to PID 1.
    active = container.run(["systemctl", "--user", "is-active", "hello.socket"], user="alice")
    assert active.stdout == "active\n"
    assert (
        container.run(["systemctl", "is-active", "hello.socket"], check=False).stdout != "active\n"
    )

    status, _, body = curl(container, "http://127.0.0.1:8080/whoami")
    assert status == 200
    assert json.loads(body)["uid"] == uid
    assert container.wait_settled("hello.service", user="alice") == "active/running"
    shown = container.run(
        ["systemctl", "--user", "status", "--no-pager", "--lines=0", "hello.service"], user="alice"
    ).stdout
    assert f"/user.slice/user-{uid}.slice/user@{uid}.service" in shown
    assert 'Status: "' in shown
    # A volatile journal is not split per user: root reads the user unit's lines (journalctl
    # --user-unit would add _UID=0, so match the field itself).
    wait_until(
        lambda: (
            '"GET /whoami HTTP/1.1" 200'
            in container.journal(extra=["_SYSTEMD_USER_UNIT=hello.service", "--output=cat"])
        ),
        what="the user service's access log line in the journal",
    )
