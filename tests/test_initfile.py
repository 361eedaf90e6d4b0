"""``cpsysd init``'s commented template (cpsysd.host.initfile), beyond what the CLI tests drive."""

from __future__ import annotations

import dataclasses
import tomllib

from cpsysd.description.load import parse_spec
from cpsysd.description.model import TLSConfig
from cpsysd.host.initfile import InitRequest, render_init


def test_every_tls_field_is_in_the_template_and_parses_uncommented() -> None:
    text = render_init(InitRequest("app", "app:Root", tls_cert="c.pem", tls_key="k.pem"))
    section = text.split("\n[tls]", 1)[1]
    uncommented = "\n".join(line.removeprefix("# ") for line in section.splitlines())
    table = tomllib.loads(uncommented)
    assert set(table) == {field.name for field in dataclasses.fields(TLSConfig)}
    # acme and ca_dir exclude each other (tests/test_fields.py tries both); the local CA here.
    local = {key: value for key, value in table.items() if not key.startswith("acme")}
    spec = parse_spec(
        {"name": "app", "entry": "app:Root", "listen": ["8443=https"], "tls": local}, "/srv/app"
    )
    assert spec.tls is not None
    assert spec.tls.ca_passphrase_file == "/root/ca.pass"
    assert spec.tls.cert == "/srv/app/c.pem"
    assert tomllib.loads(text)["tls"] == {"cert": "c.pem", "key": "k.pem"}  # the rest commented


def test_idle_stop_is_in_the_template_commented_out_and_parses_uncommented() -> None:
    text = render_init(InitRequest("app", "app:Root"))
    assert "idle_stop_sec" not in tomllib.loads(text)  # off unless asked for
    [line] = [line for line in text.splitlines() if line.startswith("# idle_stop_sec =")]
    assert "only under systemd" in line  # nothing else would start it again
    table = tomllib.loads(text.replace(line, line.removeprefix("# ")))
    assert parse_spec(table, "/srv/app").idle_stop_sec == 300
