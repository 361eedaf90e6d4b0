"""Two hosts behind one nginx, made of network namespaces: ``app1`` and ``app2`` each run the
same app description with `cpsysd serve`, ``proxy`` runs nginx with ``[nginx] upstream`` naming
both hosts, joined by veth pairs. Every address lives only inside these namespaces (the host's
network is never touched), and everything is deleted at the end, also on failure."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from scalekit import REPO, nginx_prepare, running, serve_env, stop_process

from cpsysd.description.load import load_spec
from cpsysd.targets.nginx import render_site

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

# Inside fresh namespaces nothing else listens, so fixed ports cannot collide with anything.
APP_PORT, PROXY_PORT = 8080, 80
CLIENT = r"""
import http.client, json, sys
answers = []
for _ in range(int(sys.argv[1])):
    conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[2]), timeout=10,
                                      source_address=("127.0.0.2", 0))
    conn.request("GET", "/whoami")
    response = conn.getresponse()
    answers.append([response.status, json.loads(response.read())])
    conn.close()
print(json.dumps(answers))
"""
WAIT = r"""
import socket, sys, time
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    for _ in range(300):
        try:
            socket.create_connection((host, int(port)), 1).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        sys.exit(f"{target} does not answer")
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass(frozen=True)
class Hosts:
    """The namespaces of one test and the app hosts' addresses."""

    proxy: str
    apps: tuple[str, ...]
    addresses: tuple[str, ...]


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    tag = secrets.token_hex(3)
    subnet = 100 + secrets.randbelow(150)  # 10.S.N.0/24: private, and only inside the netns
    proxy, apps = f"cpsysd-{tag}-proxy", (f"cpsysd-{tag}-app1", f"cpsysd-{tag}-app2")
    made: list[str] = []
    try:
        for name in (proxy, *apps):
            ip("netns", "add", name)
            made.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        addresses = []
        for number, app in enumerate(apps, start=1):
            near, far = f"cv{tag}p{number}", f"cv{tag}a{number}"  # <= 15 bytes (IFNAMSIZ)
            ip("link", "add", near, "netns", proxy, "type", "veth", "peer", "name", far,
               "netns", app)  # fmt: skip
            ip("-n", proxy, "addr", "add", f"10.{subnet}.{number}.1/24", "dev", near)
            ip("-n", app, "addr", "add", f"10.{subnet}.{number}.2/24", "dev", far)
            ip("-n", proxy, "link", "set", near, "up")
            ip("-n", app, "link", "set", far, "up")
            addresses.append(f"10.{subnet}.{number}.2")
        yield Hosts(proxy, apps, tuple(addresses))
    finally:
        for name in made:  # the veth pairs go with their namespaces
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert not [name for name in made if name in listed], listed


def in_netns(namespace: str, *argv: str) -> list[str]:
    """``ip netns exec`` execs the command itself: the Popen PID is the command's PID."""
    return ["ip", "netns", "exec", namespace, *argv]


def ask(hosts: Hosts, count: int) -> list[tuple[int, dict[str, object]]]:
    result = subprocess.run(
        in_netns(hosts.proxy, sys.executable, "-c", CLIENT, str(count), str(PROXY_PORT)),
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return [(status, body) for status, body in json.loads(result.stdout)]


def test_two_hosts_behind_one_nginx(hosts: Hosts, tmp_path: Path) -> None:
    upstream = ", ".join(f'"{address}:{APP_PORT}"' for address in hosts.addresses)
    description = tmp_path / "hello.toml"
    description.write_text(
        f'name = "hello"\nentry = "hello:Root"\nworking_directory = "{REPO}/examples/hello"\n'
        f'listen = ["{APP_PORT}"]\n[nginx]\nlisten = {PROXY_PORT}\nupstream = [{upstream}]\n'
    )
    site = render_site(load_spec(description), ("127.0.0.1",))
    assert f"server {hosts.addresses[1]}:{APP_PORT};" in site
    prefix = tmp_path / "nginx"
    conf = nginx_prepare(prefix, site)
    nginx = in_netns(hosts.proxy, "nginx", "-p", str(prefix), "-c", str(conf), "-e",
                     str(prefix / "error.log"), "-g", "daemon off;")  # fmt: skip
    with ExitStack() as stack:
        apps = [
            stack.enter_context(
                running(
                    in_netns(app, sys.executable, "-m", "cpsysd", "serve", "-c", str(description)),
                    tmp_path / f"{app}.log",
                    env=serve_env(),
                )
            )
            for app in hosts.apps
        ]
        stack.enter_context(running(nginx, tmp_path / "nginx.out"))
        targets = [f"{address}:{APP_PORT}" for address in hosts.addresses]
        subprocess.run(in_netns(hosts.proxy, sys.executable, "-c", WAIT, *targets,
                                f"127.0.0.1:{PROXY_PORT}"), check=True, timeout=60)  # fmt: skip

        answers = ask(hosts, 20)
        assert {status for status, _ in answers} == {200}
        assert {body["ip"] for _, body in answers} == {"127.0.0.2"}  # via X-Forwarded-For
        pids = [body["pid"] for _, body in answers]
        assert set(pids) == {app.pid for app in apps}  # both hosts served
        print(f"20 requests over two hosts: {pids.count(apps[0].pid)} / {pids.count(apps[1].pid)}")

        stop_process(apps[0])  # host 1's app goes away: nginx sends everything to host 2
        answers = ask(hosts, 10)
        assert [status for status, _ in answers] == [200] * 10
        assert {body["pid"] for _, body in answers} == {apps[1].pid}
