"""Real nginx (foreground, private prefix) in front of real `cpsysd serve` instances started
under systemd-socket-activate: the app sees the client's address through X-Forwarded-For, the
instances share the load, nginx serves static files gzipped, vhosts reach their path, TLS ends
at nginx, and unix-socket instances work as `server unix:` upstreams."""

from __future__ import annotations

import gzip
import http.client
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from scalekit import (
    REPO,
    activated_instances,
    free_port,
    free_port_run,
    http_get,
    nginx_running,
    wait_for_port,
    whoami,
)

from cpsysd.description.load import load_spec
from cpsysd.render.workers import instance_listener, instance_names
from cpsysd.targets.nginx import render_site

pytestmark = pytest.mark.slow
WORKERS = 3


def describe(tmp_path: Path, app_listen: str, extra: str = "", **nginx: str) -> Path:
    """A description of the example app in ``tmp_path`` with ``[nginx]`` lines ``nginx``."""
    path = tmp_path / "hello.toml"
    table = "".join(f"{key} = {value}\n" for key, value in nginx.items())
    path.write_text(
        f'name = "hello"\nentry = "hello:Root"\nworking_directory = "{REPO}/examples/hello"\n'
        f'config = "app.conf"\nlisten = ["{app_listen}"]\n{extra}[nginx]\n{table}'
    )
    return path


def instance_addresses(description: Path) -> list[str]:
    """Where each instance listens, as the generated NAME@.socket units would bind."""
    spec = load_spec(description)
    return [instance_listener(spec, spec.listeners[0], i).address for i in instance_names(spec)]


def test_nginx_in_front_of_port_instances(tmp_path: Path) -> None:
    # One run for the instances and nginx: separate calls may hand out the same port twice.
    base = free_port_run(WORKERS + 1)
    front = base + WORKERS
    static = tmp_path / "static"
    static.mkdir()
    (static / "notes.txt").write_text("static text, compressible. " * 200)
    description = describe(
        tmp_path,
        f"127.0.0.1:{base}",
        f'workers = {WORKERS}\nworker_mode = "ports"\n[vhosts]\n"api.example.test" = "/whoami"\n'
        '"*.apis.example.test" = "/whoami"\n',
        listen=str(front),
        server_name='["www.example.test"]',
        static=f'{{ "/static" = "{static}" }}',
    )
    site = render_site(load_spec(description), ("127.0.0.1",))
    addresses = instance_addresses(description)
    assert addresses == [f"127.0.0.1:{base + i}" for i in range(WORKERS)]
    with (
        activated_instances(description, addresses, tmp_path),
        nginx_running(tmp_path / "nginx", site) as nginx,
    ):
        wait_for_port("127.0.0.1", front, proc=nginx)
        # The client's own address, through X-Forwarded-For and tools.proxy; a forged header
        # from the client is replaced by nginx, never believed.
        me = whoami("127.0.0.1", front, source="127.0.0.2", headers={"X-Forwarded-For": "6.6.6.6"})
        assert me["ip"] == "127.0.0.2"
        assert whoami("127.0.0.1", front, source="127.0.0.3")["ip"] == "127.0.0.3"

        pids = [whoami("127.0.0.1", front)["pid"] for _ in range(30)]
        assert len(set(pids)) == WORKERS  # round robin over the three instances
        print(f"30 requests through nginx: {[pids.count(p) for p in sorted(set(pids))]} per pid")

        status, headers, body = http_get(
            "127.0.0.1", front, "/static/notes.txt", headers={"Accept-Encoding": "gzip"}
        )
        assert (status, headers.get("content-encoding")) == (200, "gzip")
        assert gzip.decompress(body) == (static / "notes.txt").read_bytes()

        status, _, body = http_get("127.0.0.1", front, "/", headers={"Host": "api.example.test"})
        assert (status, body[:7]) == (200, b'{"ip": ')  # VirtualHost: / of api is /whoami
        status, _, body = http_get(
            "127.0.0.1", front, "/", headers={"Host": "v2.apis.example.test"}
        )
        assert (status, body[:7]) == (200, b'{"ip": ')  # a wildcard server_name, and vhost
        status, _, body = http_get("127.0.0.1", front, "/", headers={"Host": "www.example.test"})
        assert (status, body[:5]) == (200, b"Hello")
    access = (tmp_path / "nginx" / "access.log").read_text()
    assert "127.0.0.2 - - " in access


def test_unix_socket_instances_behind_nginx(tmp_path: Path) -> None:
    front = free_port()
    description = describe(tmp_path, f"{tmp_path}/app.sock", "workers = 2\n", listen=str(front))
    site = render_site(load_spec(description), ("127.0.0.1",))
    assert f"server unix:{tmp_path}/app-1.sock;" in site
    addresses = instance_addresses(description)
    with (
        activated_instances(description, addresses, tmp_path),
        nginx_running(tmp_path / "nginx", site) as nginx,
    ):
        wait_for_port("127.0.0.1", front, proc=nginx)
        answers = [whoami("127.0.0.1", front, source="127.0.0.2") for _ in range(10)]
        assert {me["ip"] for me in answers} == {"127.0.0.2"}
        assert len({me["pid"] for me in answers}) == 2


def test_tls_terminates_at_nginx(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-subj", "/CN=www.example.test",
         "-addext", "subjectAltName=DNS:www.example.test", "-days", "2"],
        check=True, capture_output=True,
    )  # fmt: skip
    app_port = free_port_run(2)  # both held at once, so two distinct ports
    front = app_port + 1
    description = describe(
        tmp_path, f"127.0.0.1:{app_port}", listen=str(front),
        server_name='["www.example.test"]', tls_cert=f'"{cert}"', tls_key=f'"{key}"',
    )  # fmt: skip
    site = render_site(load_spec(description), ("127.0.0.1",))
    with (
        activated_instances(description, [f"127.0.0.1:{app_port}"], tmp_path),
        nginx_running(tmp_path / "nginx", site) as nginx,
    ):
        wait_for_port("127.0.0.1", front, proc=nginx)
        # Verify nginx's certificate for www.example.test (SNI), connecting to its loopback port.
        context = ssl.create_default_context(cafile=str(cert))
        raw = socket.create_connection(("127.0.0.1", front), 10, ("127.0.0.2", 0))
        conn = http.client.HTTPSConnection("www.example.test", front, context=context)
        conn.sock = context.wrap_socket(raw, server_hostname="www.example.test")
        conn.request("GET", "/whoami", headers={"Host": "www.example.test"})
        response = conn.getresponse()
        assert response.status == 200
        assert b'"ip": "127.0.0.2"' in response.read()
        conn.close()
