"""The app description: defaults, every field validated, errors name their field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cpsysd.description.load import Hardening, Kind, Listener, load_spec, parse_listener, parse_spec
from cpsysd.description.toml import spec_to_toml
from cpsysd.errors import SpecError

BASE = {"name": "app", "entry": "app:Root", "python": "/usr/bin/python3"}


def parse(**fields: object):
    return parse_spec({**BASE, **fields}, "/srv/app")


def test_defaults_are_filled_in() -> None:
    spec = parse()
    assert spec.working_directory == "/srv/app"
    assert spec.kind is Kind.AUTO
    assert spec.hardening is Hardening.STRICT
    assert spec.user is None  # DynamicUser
    assert spec.listeners == (Listener("http", False, port=8080),)
    assert spec.network is True
    assert spec.watchdog_sec == 30
    assert spec.idle_stop_sec == 0  # scale to zero is opt-in


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080", Listener("http", False, port=8080)),
        ("127.0.0.1:80", Listener("http", False, port=80, host="127.0.0.1")),
        ("[::1]:8443=https", Listener("https", True, port=8443, host="::1")),
        ("/run/app.sock=admin", Listener("admin", False, path="/run/app.sock")),
        ("0.0.0.0:1", Listener("http", False, port=1, host="0.0.0.0")),
    ],
)
def test_listener_forms(text: str, expected: Listener) -> None:
    listener = parse_listener("listen[0]", text)
    assert listener == expected
    assert parse_listener("x", {"address": listener.address, "name": listener.name}) == expected


def test_listener_table_form_with_tls_flag() -> None:
    listener = parse_listener("l", {"address": "9443", "name": "secure", "tls": True})
    assert listener == Listener("secure", True, port=9443)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"listen": ["0"]}, "listen[0]"),
        ({"listen": ["70000"]}, "listen[0]"),
        ({"listen": ["localhost:80"]}, "listen[0]"),
        ({"listen": ["::1:80"]}, "listen[0]"),
        ({"listen": ["relative.sock"]}, "listen[0]"),
        ({"listen": ["/" + "x" * 120]}, "listen[0]"),
        ({"listen": ["8080", "8080"]}, "listen[1]"),
        ({"listen": []}, "listen"),
        ({"listen": ["8080=bad name"]}, "listen[0]"),
        ({"name": "a/b"}, "name"),
        ({"name": "my app"}, "name"),
        ({"name": "a@b"}, "name"),
        ({"name": ""}, "name"),
        ({"entry": "app"}, "entry"),
        ({"entry": "app:Root()"}, "entry"),
        ({"description": "two\nlines"}, "description"),
        ({"description": "ends with \\"}, "description"),
        ({"python": "bin/python"}, "python"),
        ({"python": "/opt/my venv/bin/python"}, "python"),
        ({"working_directory": "/srv/../etc"}, "working_directory"),
        ({"environment_file": "env"}, "environment_file"),
        ({"environment": {"1BAD": "x"}}, "environment.1BAD"),
        ({"environment": {"OK": "a\nb"}}, "environment.OK"),
        ({"user": "root"}, "user"),
        ({"user": "Bad User"}, "user"),
        ({"user": "u" * 32}, "user"),  # systemd warns above 31 (strict user name rules)
        ({"user": "www-data:" + "g" * 32}, "user"),
        ({"watchdog_sec": -1}, "watchdog_sec"),
        ({"watchdog_sec": True}, "watchdog_sec"),
        ({"idle_stop_sec": -1}, "idle_stop_sec"),
        ({"idle_stop_sec": 86401}, "idle_stop_sec"),
        ({"idle_stop_sec": "5m"}, "idle_stop_sec"),
        ({"idle_stop_sec": 1}, "idle_stop_sec"),  # a trickle of clients trips StartLimitBurst=
        ({"idle_stop_sec": 60, "restart": "always"}, "idle_stop_sec"),  # a restart loop
        ({"idle_stop_sec": 60, "restart": "on-success"}, "idle_stop_sec"),
        ({"network": "no"}, "network"),
        ({"restart": "sometimes"}, "restart"),
        ({"hardening": "none"}, "hardening"),
        ({"workers": 0}, "workers"),
        ({"listen": ["8443=https"]}, "tls"),
        ({"colour": "blue"}, "colour"),
        ({"tls": {"cert": "/c.pem"}}, "tls.key"),
        ({"tls": {"cert": "/c", "key": "/k", "days": 3}}, "tls.days"),
        ({"nginx": {"server_name": ["bad name"]}}, "nginx.server_name[0]"),
        ({"vhosts": {"example.com": "no-slash"}}, "vhosts.example.com"),
        (
            {
                "listen": ["8080=a", "/run/a.sock=a"],
                "tls": {"cert": "/c", "key": "/k"},
                "workers": 1,
            },
            None,
        ),
    ],
)
def test_bad_values_name_their_field(fields: dict[str, object], field: str | None) -> None:
    if field is None:  # the last case is valid: one name may group TCP and unix listeners
        parse(**fields)
        return
    with pytest.raises(SpecError) as info:
        parse(**fields)
    assert info.value.field == field
    assert "\n" not in info.value.one_line()


def test_missing_required_fields() -> None:
    for missing in ("name", "entry"):
        table = {k: v for k, v in BASE.items() if k != missing}
        with pytest.raises(SpecError) as info:
            parse_spec(table, "/srv")
        assert info.value.field == missing


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(SpecError) as info:
        parse(watchdog=5)
    assert "watchdog_sec" in info.value.one_line()


def test_relative_config_is_taken_from_the_working_directory() -> None:
    spec = parse(config="conf/app.conf", working_directory="/opt/app")
    assert spec.config == "/opt/app/conf/app.conf"


def test_extra_socket_names_keep_their_order() -> None:
    spec = parse(listen=["8080", "/run/x.sock=admin", "[::]:8081"])
    assert spec.fd_names == ("http", "admin")


def test_pyproject_tool_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.cpsysd]\nname = "x"\nentry = "x:app"\nkind = "wsgi"\n'
    )
    spec = load_spec(tmp_path / "pyproject.toml")
    assert (spec.name, spec.kind, spec.working_directory) == ("x", Kind.WSGI, str(tmp_path))


def test_pyproject_without_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(SpecError, match=r"tool\.cpsysd"):
        load_spec(tmp_path / "pyproject.toml")


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "cpsysd.toml").write_text('name = "x\n')
    with pytest.raises(SpecError, match="invalid TOML"):
        load_spec(tmp_path / "cpsysd.toml")


def test_resolved_description_round_trips() -> None:
    spec = parse(
        description='quotes " and \\ and % and ünïcode',
        environment={"A": "1", "B": 'x "y" \\z $HOME %i'},
        listen=["8080", "[::1]:8443=https", "/run/app/admin.sock=admin"],
        tls={
            "cert": "/etc/ssl/c.pem",
            "key": "/etc/ssl/k.pem",
            "renew_days": 20,
            "hosts": ["example.com"],
        },
        nginx={
            "server_name": ["example.com"],
            "static": {"/static/": "/srv/s"},
            "upstream": ["10.0.0.2:8080"],
        },
        vhosts={"a.example.com": "/a"},
        user="www-data:www-data",
        config="/etc/app.conf",
        environment_file="/etc/default/app",
        idle_stop_sec=600,
    )
    again = parse_spec(tomllib.loads(spec_to_toml(spec)), "/elsewhere")
    assert again == spec


def test_user_and_group_names_up_to_31_characters() -> None:
    """systemd's strict limit (systemd-analyze verify warns about a 32-character User=, found
    by the hostile-input sample)."""
    spec = parse(user="u" * 31 + ":" + "g" * 31)
    assert (spec.user, spec.group) == ("u" * 31, "g" * 31)
