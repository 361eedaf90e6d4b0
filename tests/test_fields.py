"""The field table (cpsysd.description.fields) drives everything that names a field: parsing,
``cpsysd init``'s file, the README's table, the resolved description install writes and the
``--help`` of init's flags. Each test reads the real output (the README file on disk, the real
``cpsysd init --help``), so a row added, renamed or re-defaulted without the rest fails here."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cpsysd.description.docs import default_text, flag_help, with_readme_table
from cpsysd.description.fields import FIELDS, REQUIRED, Derived, Field
from cpsysd.description.initfile import InitRequest, default_note, render_init
from cpsysd.description.load import KNOWN_KEYS, parse_spec
from cpsysd.description.model import AppSpec, NginxConfig, TLSConfig
from cpsysd.description.toml import spec_to_toml, toml_value
from cpsysd.errors import SpecError

README = Path(__file__).resolve().parent.parent / "README.md"
ROWS = [(None, row) for row in FIELDS] + [
    (section.key, sub) for section in FIELDS for sub in section.fields
]
IDS = [f"{section}.{row.key}" if section else row.key for section, row in ROWS]
MINIMAL = {"name": "app", "entry": "app:Root"}


def uncommented(text: str) -> str:
    """init's text with every commented-out field and section turned on."""
    return re.sub(r"(?m)^# (?=\[|[\w\"/.-]+ = )", "", text)


# [tls] acme and ca_dir are two sources of the certificate, refused together: init shows both
# (commented out), so a file with every line turned on keeps one of them.
LOCAL_CA_KEYS = ("ca_dir", "ca_passphrase_file")


def one_source(table: dict[str, Any], keep_local_ca: bool = False) -> dict[str, Any]:
    tls = table.get("tls", {})
    if "acme" not in tls or "ca_dir" not in tls:
        return table
    drop = [k for k in tls if k.startswith("acme")] if keep_local_ca else LOCAL_CA_KEYS
    return {**table, "tls": {k: v for k, v in tls.items() if k not in drop}}


def section_text(text: str, section: str | None) -> str:
    """The lines of one section (None: the top level) of an init file, commented or not."""
    parts = re.split(r"(?m)^(?:# )?\[(\w+)\]", text)
    if section is None:
        return parts[0]
    return parts[parts.index(section) + 1]


def test_readme_table_is_the_generated_one() -> None:
    text = README.read_text(encoding="utf-8")
    assert with_readme_table(text) == text, "README drifted from the field table: run just fields"


@pytest.mark.parametrize(("section", "row"), ROWS, ids=IDS)
def test_every_field_is_in_init_readme_and_write_back(section: str | None, row: Field) -> None:
    # init: a line for the field in its section, showing or naming its default
    init = render_init(InitRequest("app", "app:Root"))
    own = section_text(init, section)
    if row.fields or (row.toml == "table" and section is None):
        assert re.search(rf"(?m)^(# )?\[{row.key}\] ", init), row.key
    else:
        [line] = re.findall(rf"(?m)^(?:# )?{row.key} = .*$", own)
        if row.default not in (REQUIRED, None) and not isinstance(row.default, Derived):
            shown = f"{row.key} = {toml_value(row.default)}"
            assert line.startswith(("# " + shown, shown)) or default_note(row, None) in line
        if isinstance(row.default, Derived):
            assert default_note(row, None) in line
    # README: its row, with the table's default
    key = f"[{section}] {row.key}" if section else (f"[{row.key}]" if row.fields else row.key)
    assert f"| `{key}` | " in README.read_text(encoding="utf-8")
    assert f"| {default_text(row)} | {row.help} |" in README.read_text(encoding="utf-8")
    # write-back: present in the resolved description of init's every-field example ...
    every = tomllib.loads(uncommented(init))
    full = parse_spec(one_source(every, keep_local_ca=row.key in LOCAL_CA_KEYS), "/srv/app")
    written = tomllib.loads(spec_to_toml(full))
    assert row.key in (written[section] if section else written)
    # ... and a literal default is written as itself when the description leaves it out
    if row.default is None or row.default is REQUIRED or isinstance(row.default, Derived):
        return
    sections = {"tls": {"cert": "c.pem", "key": "k.pem"}, "nginx": {}}
    table = {**MINIMAL, section: sections[section]} if section else MINIMAL
    minimal = tomllib.loads(spec_to_toml(parse_spec(table, "/srv")))
    value = (minimal[section] if section else minimal)[row.key]
    assert row.parse(row.key, value, "/srv") == row.parse(row.key, row.default, "/srv")


def test_init_uncommented_uses_every_field_and_parses() -> None:
    """Turning every line of init's file on gives a valid description that sets every field:
    the examples are consistent with each other and with the checkers."""
    text = uncommented(render_init(InitRequest("app", "app:Root", listen=("8443=https",))))
    table = tomllib.loads(text)
    assert set(table) == KNOWN_KEYS
    for section in (row for row in FIELDS if row.fields):
        assert set(table[section.key]) == {sub.key for sub in section.fields}
    with pytest.raises(SpecError, match=r"^tls\.ca_dir: and acme are two sources"):
        parse_spec(table, "/srv/app")
    assert parse_spec(one_source(table), "/srv/app").tls.acme  # type: ignore[union-attr]
    spec = parse_spec(one_source(table, keep_local_ca=True), "/srv/app")
    assert spec.tls is not None
    assert spec.tls.ca_passphrase_file == "/root/ca.pass"
    assert spec.nginx is not None
    assert spec.nginx.static == (("/static/", "/srv/APP/static"),)
    assert spec.environment == (("DATABASE_URL", "postgresql:///app"),)


@pytest.mark.parametrize(
    ("model", "rows", "spec"),
    [
        (AppSpec, FIELDS, parse_spec(MINIMAL, "/srv")),
        (TLSConfig, FIELDS[-1].fields, None),
        (NginxConfig, FIELDS[-2].fields, None),
    ],
)
def test_model_defaults_agree_with_the_table(model: type, rows: Any, spec: Any) -> None:
    """The model keeps defaults for code that builds records directly; they must be the
    table's, parsed."""
    if spec is None:
        parsed = parse_spec({**MINIMAL, "tls": {"cert": "/c", "key": "/k"}, "nginx": {}}, "/")
        spec = parsed.tls if model is TLSConfig else parsed.nginx
    defaults = {f.name: f.default for f in dataclasses.fields(model)}
    for row in rows:
        if row.default is REQUIRED or isinstance(row.default, Derived) or row.key == "user":
            continue
        assert defaults[row.name] == getattr(spec, row.name), row.key


@pytest.mark.parametrize(
    ("flag", "dotted"),
    [
        ("--name", "name"),
        ("--entry", "entry"),
        ("--listen", "listen"),
        ("--no-network", "network"),
        ("--config", "config"),
        ("--python", "python"),
        ("--working-directory", "working_directory"),
        ("--tls-cert", "tls.cert"),
        ("--tls-key", "tls.key"),
    ],
)
def test_init_flags_help_is_the_fields_help(flag: str, dotted: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cpsysd", "init", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    entries: list[str] = []
    for line in result.stdout.splitlines():
        if line.startswith("  -"):
            entries.append(line)
        elif entries and line.startswith("   "):
            entries[-1] += line
    [entry] = [" ".join(e.split()) for e in entries if e.split()[0] == flag]
    # the field's help and default, after the flag's own lead ("Repeatable. ", "[tls] cert: ")
    assert " ".join(flag_help(dotted).split()).lower() in entry.lower()
