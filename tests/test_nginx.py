"""Generated nginx sites: every variant passes the real ``nginx -t``; values cannot inject
directives; ``cpsysd nginx`` writes the file atomically or fails with one line."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from scalekit import free_port, nginx_problems, nginx_running, nginx_test, wait_for_port

from cpsysd.description.load import AppSpec, NginxConfig, parse_spec
from cpsysd.errors import SpecError
from cpsysd.targets.nginx import render_site, upstream_servers


def spec_of(tmp: Path, **fields: object) -> AppSpec:
    base: dict[str, object] = {"name": "app", "entry": "app:Root", "nginx": {"listen": 8080}}
    return parse_spec({**base, **fields}, str(tmp))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-subj", "/CN=example.org",
         "-days", "2"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def assert_nginx_accepts(site: str, prefix: Path) -> None:
    result = nginx_test(prefix, site)
    assert result.returncode == 0, result.stderr
    assert nginx_problems(result) == []


VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "reuseport-workers": {"workers": 4},
    "port-workers": {"workers": 3, "worker_mode": "ports", "listen": ["127.0.0.1:9300"]},
    "unix": {"listen": ["8080", "/run/app/app.sock=nginx"]},
    "unix-workers": {"workers": 2, "listen": ["/run/app/app.sock"]},
    "ipv6": {"listen": ["[::1]:8080"]},
    "static": {"nginx": {"listen": 8080, "static": {"/static": "static", "/media/": "/srv/m"}}},
    "hosts": {"nginx": {"listen": 8080, "upstream": ["10.0.0.2:8080", "[fd00::3]:8080"]}},
    "vhosts": {
        "nginx": {"listen": 8080, "server_name": ["example.org", "blog.example.org"]},
        "vhosts": {"blog.example.org": "/blog", "*.shop.example.org": "/shop"},
    },
    "only-vhosts": {"vhosts": {"a.example": "/a"}, "nginx": {"server_name": ["a.example"]}},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_passes_nginx_t(variant: str, tmp_path: Path) -> None:
    spec = spec_of(tmp_path, **VARIANTS[variant])
    assert_nginx_accepts(render_site(spec), tmp_path / "nginx")


@pytest.mark.parametrize("port", [443, 8443])
def test_tls_termination_passes_nginx_t(
    port: int, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = tls_files
    nginx = {"listen": port, "tls_cert": str(cert), "tls_key": str(key),
             "server_name": ["example.org"]}  # fmt: skip
    site = render_site(spec_of(tmp_path, nginx=nginx, vhosts={"b.example.org": "/b"}))
    assert f"listen {port} ssl http2;" in site
    assert f"ssl_certificate {cert};" in site
    assert ("return 301 https://$host$request_uri;" in site) == (port == 443)
    assert_nginx_accepts(site, tmp_path / "nginx")


def test_tls_app_listener_is_proxied_over_https(
    tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    spec = spec_of(tmp_path, listen=["8443=https"], tls={"cert": str(cert), "key": str(key)})
    site = render_site(spec)
    assert "proxy_pass https://cpsysd_app;" in site
    assert_nginx_accepts(site, tmp_path / "nginx")


def test_upstream_servers() -> None:
    base = Path("/srv")
    assert upstream_servers(spec_of(base)) == ["127.0.0.1:8080"]
    assert upstream_servers(spec_of(base, listen=["[::]:81", "/r/a.sock"])) == ["unix:/r/a.sock"]
    assert upstream_servers(spec_of(base, workers=3)) == ["127.0.0.1:8080"]  # kernel balances
    ports = spec_of(base, workers=3, worker_mode="ports", listen=["[::]:7000"])
    assert upstream_servers(ports) == ["[::1]:7000", "[::1]:7001", "[::1]:7002"]
    unix = spec_of(base, workers=2, listen=["/run/a/s.sock"])
    assert upstream_servers(unix) == ["unix:/run/a/s-1.sock", "unix:/run/a/s-2.sock"]


def test_site_content(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, nginx={"listen": 8080, "static": {"/static": "www"}},
                   vhosts={"blog.example.org": "/blog"})  # fmt: skip
    site = render_site(spec, ("127.0.0.1",))
    assert "upstream cpsysd_app {\n    server 127.0.0.1:8080;\n" in site
    assert site.count("listen 127.0.0.1:8080;") == 2  # main block + the vhost's block
    assert "server_name blog.example.org;" in site
    assert f"location /static/ {{\n        alias {tmp_path}/www/;" in site
    for header in ("Host $host", "X-Real-IP $remote_addr", "X-Forwarded-For $remote_addr",
                   "X-Forwarded-Proto $scheme"):  # fmt: skip
        assert f"proxy_set_header {header};" in site
    assert "keepalive 32;" in site
    assert "gzip on;" in site


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("static", (("/s/", "/srv/x; include /etc/shadow"),)),
        ("static", (("/s/ { }", "/srv/x"),)),
        ("server_names", ("a.example;",)),
        ("upstream", ("10.0.0.1:80; server evil",)),
        ("client_max_body_size", "1m;"),
        ("static", (("/", "/srv/www"),)),  # a second "location /" would hide the app
    ],
)
def test_values_cannot_inject_directives(field: str, value: object, tmp_path: Path) -> None:
    """parse_spec already refuses these; render_site refuses them again for specs built in code."""
    spec = spec_of(tmp_path)
    assert spec.nginx is not None
    bad = dataclasses.replace(spec, nginx=dataclasses.replace(spec.nginx, **{field: value}))
    with pytest.raises(SpecError):
        render_site(bad)


def test_spec_without_nginx_table_is_refused(tmp_path: Path) -> None:
    spec = parse_spec({"name": "app", "entry": "app:Root"}, str(tmp_path))
    with pytest.raises(SpecError, match=r"nginx: is missing"):
        render_site(spec)
    assert NginxConfig().listen == 80


def test_cli_writes_the_site(tmp_path: Path, cpsysd_cmd: list[str]) -> None:
    description = tmp_path / "cpsysd.toml"
    description.write_text(
        'name = "app"\nentry = "app:Root"\nworkers = 2\n[nginx]\nlisten = 8081\n'
    )
    out = tmp_path / "sites" / "app.conf"
    out.parent.mkdir()
    result = subprocess.run(
        [*cpsysd_cmd, "nginx", "-c", str(description), "-o", str(out), "--listen-host",
         "127.0.0.1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert out.stat().st_mode & 0o777 == 0o644
    assert "listen 127.0.0.1:8081;" in out.read_text()
    assert [p.name for p in out.parent.iterdir()] == ["app.conf"]  # no temp file left
    assert_nginx_accepts(out.read_text(), tmp_path / "nginx")


def test_cli_fails_with_one_line(tmp_path: Path, cpsysd_cmd: list[str]) -> None:
    description = tmp_path / "cpsysd.toml"
    description.write_text('name = "app"\nentry = "app:Root"\n')
    out = tmp_path / "app.conf"
    result = subprocess.run(
        [*cpsysd_cmd, "nginx", "-c", str(description), "-o", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1
    assert "nginx: is missing" in result.stderr
    assert not out.exists()


def test_the_nginx_check_rejects_a_broken_site(tmp_path: Path) -> None:
    """The wrapper really includes the site: a bad directive in it fails nginx -t."""
    result = nginx_test(tmp_path / "nginx", "server { listen 127.0.0.1:1; bogus_directive on; }\n")
    assert result.returncode != 0
    assert "bogus_directive" in result.stderr


@pytest.mark.parametrize("port", [80, 443])
def test_acme_answers_come_before_the_proxy_and_the_redirect(
    port: int, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """The generated site serves http-01 answers from the challenge directory itself, on the
    plain site and on the port-80 server that otherwise redirects to HTTPS (real nginx)."""
    cert, key = tls_files
    answers = tmp_path / "acme"
    answers.mkdir()
    (answers / "tok_1").write_text("tok_1.thumbprint")
    front = free_port()
    nginx: dict[str, object] = {"listen": front if port == 80 else 443, "server_name": ["a.test"]}
    if port == 443:
        nginx |= {"tls_cert": str(cert), "tls_key": str(key)}
    tls = {"cert": str(cert), "key": str(key), "acme": "letsencrypt-staging", "hosts": ["a.test"],
           "acme_challenge_dir": str(answers)}  # fmt: skip
    site = render_site(spec_of(tmp_path, nginx=nginx, tls=tls), ("127.0.0.1",))
    assert site.count("location ^~ /.well-known/acme-challenge/") == (1 if port == 80 else 2)
    assert_nginx_accepts(site, tmp_path / "check")
    if port == 443:
        return  # the live check needs port 80 for the redirect server; nginx -t covers it
    with nginx_running(tmp_path / "nginx", site) as proc:
        wait_for_port("127.0.0.1", front, proc=proc)

        def get(path: str) -> tuple[str, str]:
            out = subprocess.run(
                ["curl", "-s", "-w", " %{http_code}", "-H", "Host: a.test",
                 f"http://127.0.0.1:{front}{path}"],
                capture_output=True, text=True, timeout=10,
            )  # fmt: skip
            body, _, code = out.stdout.rpartition(" ")
            return code, body

        assert get("/.well-known/acme-challenge/tok_1") == ("200", "tok_1.thumbprint")
        assert get("/.well-known/acme-challenge/other")[0] == "404"  # not proxied to the app


def test_no_acme_location_without_acme(tmp_path: Path) -> None:
    assert "acme-challenge" not in render_site(spec_of(tmp_path))
