"""Rendered units: hardened, verified by systemd-analyze with nothing on stderr, scored."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cpsysd.description.load import parse_spec
from cpsysd.host.verify import default_threshold, verify_units
from cpsysd.render.common import MARKER
from cpsysd.render.units import RenderOptions, render_units, units_to_enable

OPTIONS = RenderOptions("/var/lib/cpsysd/app.toml")


def spec_of(**fields: object):
    base = {"name": "app", "entry": "app:Root", "python": "/usr/bin/python3"}
    return parse_spec({**base, **fields}, "/srv/app")


def directives(text: str) -> list[tuple[str, str]]:
    pairs = []
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            pairs.append((key, value))
    return pairs


def analyze(units: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    return subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / n) for n in units)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_default_units(tmp_path: Path) -> None:
    units = render_units(spec_of(), OPTIONS)
    assert set(units) == {"app.service", "app.socket"}
    service = dict(directives(units["app.service"]))
    assert service["Type"] == "notify"
    assert service["ExecStart"] == "/usr/bin/python3 -m cpsysd serve -c /var/lib/cpsysd/app.toml"
    assert service["DynamicUser"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["WatchdogSec"] == "30s"
    assert "PrivateNetwork" not in service  # network = true by default
    assert ("ListenStream", "8080") in directives(units["app.socket"])
    assert ("NoDelay", "yes") in directives(units["app.socket"])
    assert all(MARKER in text for text in units.values())
    result = analyze(units, tmp_path)
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize(("network", "limit"), [(True, 0.9), (False, 0.3)])
def test_exposure_is_within_the_promise(network: bool, limit: float) -> None:
    spec = spec_of(network=network)
    assert default_threshold(spec) == limit
    report = verify_units(spec)
    print(f"network={network}: exposure {report.exposure}")
    assert report.exposure <= limit


def test_network_is_limited_to_localhost_and_outbound() -> None:
    service = directives(render_units(spec_of(outbound=["10.0.0.0/8"]), OPTIONS)["app.service"])
    assert ("IPAddressDeny", "any") in service
    assert ("IPAddressAllow", "localhost 10.0.0.0/8") in service


def test_no_network_gets_a_private_network() -> None:
    service = directives(render_units(spec_of(network=False), OPTIONS)["app.service"])
    assert ("PrivateNetwork", "yes") in service
    assert ("RestrictAddressFamilies", "AF_UNIX") in service


def test_named_sockets_become_separate_units(tmp_path: Path) -> None:
    spec = spec_of(listen=["80", "[::1]:8081=admin", "/run/app/admin.sock=admin"])
    units = render_units(spec, OPTIONS)
    assert set(units) == {"app.service", "app.socket", "app-admin.socket"}
    admin = directives(units["app-admin.socket"])
    assert ("FileDescriptorName", "admin") in admin
    assert ("Service", "app.service") in admin
    assert [v for k, v in admin if k == "ListenStream"] == ["[::1]:8081", "/run/app/admin.sock"]
    service = directives(units["app.service"])
    assert [v for k, v in service if k == "Requires"] == ["app.socket", "app-admin.socket"]
    assert units_to_enable(spec) == ["app.socket", "app-admin.socket"]
    result = analyze(units, tmp_path)
    assert (result.returncode, result.stderr) == (0, "")


def test_specifiers_and_quotes_are_escaped(tmp_path: Path) -> None:
    spec = spec_of(
        description="100% %n app",
        environment={"GREETING": 'say "hi" %h $HOME'},
        working_directory="/srv/100%",
    )
    units = render_units(spec, OPTIONS)
    service = dict(directives(units["app.service"]))
    assert service["Description"] == "100%% %%n app"
    assert service["Environment"] == '"GREETING=say \\"hi\\" %%h $HOME"'
    assert service["WorkingDirectory"] == "/srv/100%%"
    result = analyze(units, tmp_path)
    assert (result.returncode, result.stderr) == (0, "")


def test_tls_material_goes_through_credentials() -> None:
    spec = spec_of(
        listen=["8443=https"], tls={"cert": "/etc/app/cert.pem", "key": "/etc/app/key.pem"}
    )
    service = directives(render_units(spec, OPTIONS)["app.service"])
    assert ("LoadCredential", "tls-cert:/etc/app/cert.pem") in service
    assert ("LoadCredential", "tls-key:/etc/app/key.pem") in service


def test_key_passphrase_goes_through_a_credential_too() -> None:
    spec = spec_of(
        listen=["8443=https"],
        tls={"cert": "/etc/app/c.pem", "key": "/etc/app/k.pem", "passphrase_file": "/etc/app/pw"},
    )
    service = directives(render_units(spec, OPTIONS)["app.service"])
    assert ("LoadCredential", "tls-key-passphrase:/etc/app/pw") in service


def test_named_user_instead_of_dynamic_user() -> None:
    service = dict(directives(render_units(spec_of(user="web:www-data"), OPTIONS)["app.service"]))
    assert (service["User"], service["Group"]) == ("web", "www-data")
    assert "DynamicUser" not in service


def test_user_mode_units_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    units = render_units(spec_of(), RenderOptions("/home/u/.local/state/cpsysd/app.toml", True))
    service = dict(directives(units["app.service"]))
    assert "DynamicUser" not in service
    assert "ProtectSystem" not in service
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "--user", "verify", *(str(tmp_path / n) for n in units)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
