"""Apps that write, under a real systemd: the sessions example (examples/sessions) with
``workers = 3`` keeps its CherryPy sessions in files in the one state directory all instances
share, so one session counts 1..10 while several instances answer; the same app with RAM
sessions gets verify's and install's warning, and under systemd loses count as warned."""

from __future__ import annotations

import dataclasses
import json

import pytest
from e2etools import REPO, prepare_app

from cpsysd.description.load import load_spec
from cpsysd.harness.container import Container

pytestmark = pytest.mark.e2e

SESSIONS = REPO / "examples" / "sessions"
WARNING = "cpsysd: warning: CherryPy keeps sessions in RAM"

# One session from inside the container: a new connection per request (so SO_REUSEPORT's hash
# spreads them over the instances), the session cookie sent back each time.
CLIENT = r"""
import http.client, json, sys
port, requests = int(sys.argv[1]), int(sys.argv[2])
cookie, seen = "", []
for _ in range(requests):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/", headers={"Cookie": cookie} if cookie else {})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, (response.status, body[-300:])
    cookie = (response.getheader("Set-Cookie") or cookie).split(";")[0]
    seen.append(json.loads(body))
    conn.close()
print(json.dumps(seen))
"""


def one_session(box: Container, port: int, requests: int = 10) -> list[dict[str, object]]:
    out = box.run(["/usr/bin/python3", "-c", CLIENT, str(port), str(requests)]).stdout
    return list(json.loads(out))


def test_file_sessions_count_across_worker_instances(container: Container) -> None:
    spec = load_spec(SESSIONS / "cpsysd.toml")
    install = prepare_app(container, spec, source=SESSIONS)
    installed = container.run(install)
    assert "warning" not in installed.stderr, installed.stderr

    seen = one_session(container, 8081)
    assert [answer["count"] for answer in seen] == list(range(1, 11))
    instances = {answer["instance"] for answer in seen}
    assert len(instances) > 1, seen  # the count went on in another process
    assert instances <= {"1", "2", "3"}
    # Every instance wrote to the one /var/lib/counter (a DynamicUser's lives in private/).
    listing = container.run(["ls", "-l", "/var/lib/private/counter/"]).stdout
    assert "session-" in listing, listing
    print(f"one session counted 1..10 over instances {sorted(map(str, instances))}")


def test_ram_sessions_with_workers_are_warned_and_do_break(container: Container) -> None:
    base = load_spec(SESSIONS / "cpsysd.toml")
    listener = base.listeners[0].with_port(8082)
    spec = dataclasses.replace(base, name="ramcount", config=None, listeners=(listener,))
    install = prepare_app(container, spec, source=SESSIONS)
    python, description = install[0], install[-1]

    verify = container.run([python, "-m", "cpsysd", "verify", "-c", description])
    assert verify.returncode == 0
    (line,) = verify.stderr.splitlines()
    assert line.startswith(WARNING), verify.stderr
    assert "with workers = 3" in line

    installed = container.run(install)
    assert installed.stderr.startswith(WARNING), installed.stderr
    counts = [answer["count"] for answer in one_session(container, 8082)]
    # What the warning said: another instance does not know the session and starts at 1.
    assert counts != list(range(1, 11)), counts
    print(f"RAM sessions over 3 workers counted {counts}")
