"""Loading the app: kind detection, WSGI callables, the CherryPy config, virtual hosts and
tools.proxy from the description, import errors as one line, and the access log."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import cherrypy
import pytest
from runtimekit import CPSYSD, Proc, free_port, get, get_json, get_when_up, running, write_app

from cpsysd.description.load import Kind
from cpsysd.errors import CpsysdError
from cpsysd.runtime.app import detect_kind, looks_like_cherrypy_root

WSGI_APP = """
import json

def application(environ, start_response):
    body = json.dumps({"ip": environ["REMOTE_ADDR"], "path": environ["PATH_INFO"]}).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers)
    return [body]
"""

VHOST_APP = """
import cherrypy

class Site:
    def __init__(self, name):
        self.name = name

    @cherrypy.expose
    def index(self):
        return self.name

class Root:
    def __init__(self):
        self.blog = Site("blog")
        self.shop = Site("shop")

    @cherrypy.expose
    def index(self):
        return "main"

    @cherrypy.expose
    def whoami(self):
        return cherrypy.request.remote.ip
"""


class _Exposed:
    @cherrypy.expose
    def index(self) -> str:
        return ""


def _wsgi(environ: object, start_response: object) -> list[bytes]:
    return []


def test_kind_detection() -> None:
    assert detect_kind(_Exposed, Kind.AUTO) is Kind.CHERRYPY  # a class: the root, instantiated
    assert detect_kind(_Exposed(), Kind.AUTO) is Kind.CHERRYPY
    assert detect_kind(cherrypy.Application(_Exposed()), Kind.AUTO) is Kind.CHERRYPY
    assert detect_kind(_wsgi, Kind.AUTO) is Kind.WSGI
    assert detect_kind(_wsgi, Kind.CHERRYPY) is Kind.CHERRYPY  # declared wins
    assert not looks_like_cherrypy_root(_wsgi)
    with pytest.raises(CpsysdError, match="neither a CherryPy root nor a WSGI callable"):
        detect_kind(42, Kind.AUTO)


def test_wsgi_callable_is_served_with_an_access_log(tmp_path: Path) -> None:
    port = free_port()
    description = write_app(
        tmp_path / "app", [str(port)], app_source=WSGI_APP, entry="testapp:application"
    )
    with running([*CPSYSD, "serve", "-c", str(description)], tmp_path / "serve.log") as proc:
        status, body = get_when_up(f"127.0.0.1:{port}", "/some/path?q=1")
        assert status == 200
        assert json.loads(body) == {"ip": "127.0.0.1", "path": "/some/path"}
    assert "127.0.0.1 - - [" in proc.output()
    assert '"GET /some/path?q=1 HTTP/1.1" 200 ' in proc.output()


def test_virtual_hosts_and_proxy_from_the_description(tmp_path: Path) -> None:
    port = free_port()
    extra = (
        '[vhosts]\n"blog.example" = "/blog"\n"shop.example" = "/shop"\n'
        '"*.shops.example" = "/shop"\n"*.example" = "/blog"\n\n'
        '[nginx]\nserver_name = ["blog.example"]\n'
    )
    description = write_app(tmp_path / "app", [str(port)], app_source=VHOST_APP, extra=extra)
    with running([*CPSYSD, "serve", "-c", str(description)], tmp_path / "serve.log"):
        get_when_up(f"127.0.0.1:{port}", "/")
        for host, expected in (
            (f"blog.example:{port}", b"blog"),
            ("shop.example", b"shop"),
            ("Shop.Example.:8443", b"shop"),  # case, trailing dot, any port: as nginx matches
            ("a.b.shops.example", b"shop"),  # the longest wildcard wins over *.example
            ("other.example", b"blog"),  # *.example
            (f"other.test:{port}", b"main"),
            ("shops.example", b"blog"),  # *.shops.example needs a label before it
        ):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            conn.request("GET", "/", headers={"Host": host})
            assert conn.getresponse().read() == expected, host
            conn.close()
        # Behind nginx (in the description) X-Forwarded-Host picks the virtual host.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request(
            "GET", "/", headers={"Host": "other.test", "X-Forwarded-Host": "x.shops.example"}
        )
        assert conn.getresponse().read() == b"shop"
        conn.close()
        # nginx in the description turns on tools.proxy: X-Forwarded-For is the client.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("GET", "/whoami", headers={"X-Forwarded-For": "203.0.113.9"})
        assert conn.getresponse().read() == b"203.0.113.9"
        conn.close()


def test_without_nginx_forwarded_headers_are_not_trusted(tmp_path: Path) -> None:
    port = free_port()
    description = write_app(tmp_path / "app", [str(port)], app_source=VHOST_APP)
    with running([*CPSYSD, "serve", "-c", str(description)], tmp_path / "serve.log"):
        get_when_up(f"127.0.0.1:{port}", "/")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("GET", "/whoami", headers={"X-Forwarded-For": "203.0.113.9"})
        assert conn.getresponse().read() == b"127.0.0.1"
        conn.close()


def test_without_nginx_forwarded_host_does_not_pick_the_virtual_host(tmp_path: Path) -> None:
    port = free_port()
    extra = '[vhosts]\n"blog.example" = "/blog"\n'
    description = write_app(tmp_path / "app", [str(port)], app_source=VHOST_APP, extra=extra)
    with running([*CPSYSD, "serve", "-c", str(description)], tmp_path / "serve.log"):
        get_when_up(f"127.0.0.1:{port}", "/")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("GET", "/", headers={"Host": "x.test", "X-Forwarded-Host": "blog.example"})
        assert conn.getresponse().read() == b"main"
        conn.close()


def _start_error(
    tmp_path: Path, app_source: str, entry: str = "testapp:Root", debug: bool = False
) -> str:
    description = write_app(
        tmp_path / "app", [str(free_port())], app_source=app_source, entry=entry
    )
    argv = [*CPSYSD, "serve", "-c", str(description)] + (["--debug"] if debug else [])
    proc = Proc(argv, tmp_path / "serve.log")
    assert proc.wait(30) == 1
    output = proc.output()
    assert ("Traceback" in output) is debug
    errors = [line for line in output.splitlines() if line.startswith("cpsysd: error:")]
    assert len(errors) == 1, output
    return errors[0]


def test_missing_module_is_one_line(tmp_path: Path) -> None:
    line = _start_error(tmp_path, "", entry="nosuchmodule:Root")
    assert f"cannot import 'nosuchmodule': no such module in {tmp_path / 'app'}" in line


def test_import_failure_is_one_line_and_debug_shows_it(tmp_path: Path) -> None:
    line = _start_error(tmp_path, "raise RuntimeError('database unreachable')\n")
    assert "importing 'testapp' failed: RuntimeError: database unreachable" in line
    _start_error(tmp_path / "debug", "raise RuntimeError('database unreachable')\n", debug=True)


def test_missing_attribute_is_one_line(tmp_path: Path) -> None:
    line = _start_error(tmp_path, "x = 1\n", entry="testapp:Nope")
    assert "'testapp' has no attribute 'Nope'" in line


def test_access_log_escapes_control_characters(tmp_path: Path) -> None:
    port = free_port()
    description = write_app(tmp_path / "app", [str(port)])
    with running([*CPSYSD, "serve", "-c", str(description)], tmp_path / "serve.log") as proc:
        get_json(f"127.0.0.1:{port}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("GET", "/", headers={"User-Agent": "evil\x1b[31m agent"})
        conn.getresponse().read()
        conn.close()
    assert '"evil\\x1b[31m agent"' in proc.output()
    assert "\x1b" not in proc.output()


def test_log_screen_false_silences_the_logs(tmp_path: Path) -> None:
    port = free_port()
    description = write_app(tmp_path / "app", [str(port)])
    conf = tmp_path / "app" / "app.conf"
    conf.write_text(conf.read_text().replace("[global]\n", "[global]\nlog.screen = False\n"))
    with running([*CPSYSD, "serve", "-c", str(description)], tmp_path / "serve.log") as proc:
        assert get_when_up(f"127.0.0.1:{port}", "/")[0] == 200
        assert get(f"127.0.0.1:{port}", "/") == (200, b"hello\n")
    assert '"GET / HTTP/1.1"' not in proc.output()
    assert "ENGINE" not in proc.output()
