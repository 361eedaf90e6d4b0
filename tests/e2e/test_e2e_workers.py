"""Worker instances under a real systemd: NAME.target starts N hardened instances sharing one
port (ReusePort=yes), `cpsysd restart` rolls through them under load without one failed
request, a broken release stops the rolling restart at the first instance, and in ports mode
each instance has its own port and stopping the target stops everything."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from e2etools import LoadRun, curl, example_spec, install_app, wait_until

from cpsysd.description.load import WorkerMode
from cpsysd.harness.container import Container

pytestmark = pytest.mark.e2e

WORKERS = 3


def active(box: Container, *units: str) -> list[str]:
    return box.run(["systemctl", "is-active", *units], check=False).stdout.split()


def main_pids(box: Container, units: list[str]) -> dict[str, int]:
    out = box.run(["systemctl", "show", "-p", "Id,MainPID", *units]).stdout
    blocks = [
        dict(line.split("=", 1) for line in block.splitlines()) for block in out.split("\n\n")
    ]
    return {block["Id"]: int(block["MainPID"]) for block in blocks if block}


def pids_answering(box: Container, port: int, requests: int = 60) -> set[int]:
    """PIDs seen over ``requests`` new connections (each a new source port, so SO_REUSEPORT's
    hash spreads them over the instances)."""
    script = (
        "import http.client, json, sys\n"
        "pids = set()\n"
        f"for _ in range({requests}):\n"
        f"    c = http.client.HTTPConnection('127.0.0.1', {port}, timeout=30)\n"
        "    c.request('GET', '/whoami'); pids.add(json.loads(c.getresponse().read())['pid'])\n"
        "    c.close()\n"
        "print(json.dumps(sorted(pids)))\n"
    )
    return set(json.loads(box.run(["/usr/bin/python3", "-c", script]).stdout))


def test_rolling_restart_under_load_fails_no_request(
    container: Container, figure: Callable[[str, str], None]
) -> None:
    spec = example_spec(workers=WORKERS)
    python = install_app(container, spec)
    instances = [f"hello@{i}.service" for i in range(1, WORKERS + 1)]
    assert active(container, "hello.target", *instances) == ["active"] * (WORKERS + 1)
    before = main_pids(container, instances)
    assert pids_answering(container, 8080) == set(before.values())  # every instance serves

    load = LoadRun(container, 8080, "/", limit=20000, seconds=90)
    restart = container.run([python, "-m", "cpsysd", "restart", "hello"], timeout=300)
    result = load.finish()

    lines = restart.stdout.splitlines()
    assert [line.split()[1] for line in lines] == instances  # one at a time, in order
    after = main_pids(container, instances)
    for unit in instances:
        assert f"restarted {unit} (pid {before[unit]} -> {after[unit]})" in lines
        assert after[unit] != before[unit]
    assert result["failed"] == 0, result["errors"]
    assert result["ok"] > 20
    figure(f"rolling restart of {WORKERS} workers under load", f"{result['ok']} ok, 0 failed")


def test_rolling_restart_stops_at_a_broken_release(container: Container) -> None:
    """A release that cannot start stops the rolling restart at the first instance, which is
    taken out of service with its socket, so no connection waits on it; the other instances
    keep serving the old code, and the next restart after the fix brings all back."""
    python = install_app(container, example_spec(workers=WORKERS))
    instances = [f"hello@{i}.service" for i in range(1, WORKERS + 1)]
    before = main_pids(container, instances)
    container.run(["cp", "/srv/hello/hello.py", "/srv/hello/hello.py.good"])
    container.write_file("/srv/hello/hello.py", "raise ImportError('release 2 is broken')\n")
    container.run(["find", "/srv/hello", "-name", "__pycache__", "-exec", "rm", "-rf", "{}", "+"])

    failed = container.run([python, "-m", "cpsysd", "restart", "hello"], check=False)
    assert failed.returncode != 0
    assert failed.stderr.startswith("cpsysd: error: hello@1.service did not come back")
    assert "taken out of service); 0 of 3 instances restarted" in failed.stderr
    assert failed.stderr.count("\n") == 1
    assert active(container, "hello@1.socket", "hello@1.service") == ["inactive", "inactive"]
    others = instances[1:]
    assert main_pids(container, others) == {unit: before[unit] for unit in others}  # untouched
    assert pids_answering(container, 8080) == {before[unit] for unit in others}

    container.run(["mv", "/srv/hello/hello.py.good", "/srv/hello/hello.py"])
    fixed = container.run([python, "-m", "cpsysd", "restart", "hello"], timeout=300)
    assert fixed.stdout.count("restarted hello@") == WORKERS
    assert active(container, "hello@1.socket", *instances) == ["active"] * (WORKERS + 1)
    assert len(pids_answering(container, 8080)) == WORKERS


def test_ports_mode_instances_and_the_target(container: Container) -> None:
    base = example_spec()
    listener = base.listeners[0].with_port(9200)
    spec = example_spec(workers=WORKERS, worker_mode=WorkerMode.PORTS, listeners=(listener,))
    install_app(container, spec)
    ports = [9200 + i for i in range(WORKERS)]
    sockets = [f"hello@{port}.socket" for port in ports]
    assert active(container, *sockets) == ["active"] * WORKERS
    seen = {
        json.loads(curl(container, f"http://127.0.0.1:{port}/whoami")[2])["pid"] for port in ports
    }
    assert len(seen) == WORKERS  # one process per port

    container.run(["systemctl", "stop", "hello.target"])
    wait_until(
        lambda: (
            set(active(container, *sockets, *(s.replace("socket", "service") for s in sockets)))
            == {"inactive"}
        ),
        what="every instance and socket to stop with the target",
    )
    refused = container.run(["curl", "--silent", f"http://127.0.0.1:{ports[0]}/"], check=False)
    assert refused.returncode == 7  # connection refused: nothing re-activated the instance

    container.run(["systemctl", "start", "hello.target"])
    assert active(container, *sockets) == ["active"] * WORKERS
    assert curl(container, f"http://127.0.0.1:{ports[-1]}/health")[0] == 200
