"""Property tests over every field of the app description: whatever a user (or an attacker who
controls a project directory) writes, cpsysd either refuses it with a one-line error naming the
field, or the units it renders, read back the way systemd reads them (tests/unitparse.py), say
exactly what was meant: the same directives, no extra line, ExecStart's argv unchanged, no
specifier left for systemd to expand, the environment unchanged. The resolved description the
service reads (cpsysd.description.toml) must parse back to the same spec.

The strategies live here; test_hostile_verify.py runs a sample through systemd-analyze itself."""

from __future__ import annotations

import ipaddress
import operator
import os
import posixpath
import tomllib
import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpsysd.description.fields import FIELDS
from cpsysd.description.load import KNOWN_KEYS, AppSpec, parse_spec
from cpsysd.description.toml import spec_to_toml
from cpsysd.errors import SpecError
from cpsysd.render.common import hardening_lines
from cpsysd.render.units import RenderOptions, render_units
from tests import unitparse as up
from tests.unitparse import Extract

# --- strategies ---------------------------------------------------------------------------------

PIECES = [
    "%", "%%", "%n", "%i", "%h", "$", "$$", "${X}", "$MAINPID", "\\", "\\\\", '"', "'", " ",
    "\t", "\n", "\r", "\x00", "\x0b", "\x7f", "\x85", "\u2028", "\ufeff", "\udcff", "é", "日本",
    ";", " ; ", "#", "[Service]", "\nExecStartPre=/bin/evil", "\\\nUser=root", "=", ":", "/",
    "..", ".", "-", "@", "+", "!", "a", "app", "x y", "{}", "`", "\\x41", "\\n", "~",
]  # fmt: skip
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def word(first: str, rest: str, size: int) -> st.SearchStrategy[str]:
    """A name: one of ``first``, then up to ``size`` of ``rest`` (cheaper than from_regex)."""
    return st.builds(operator.add, st.sampled_from(first), st.text(rest, max_size=size))


ident = word(LETTERS[:52] + "_", LETTERS + "_", 10)

hostile = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=3)), max_size=6).map("".join)
wrong_type = st.one_of(
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.floats(allow_nan=True),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
# Free text a user may legitimately write: anything printable, quotes, %, $, backslashes.
free_text = st.one_of(
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30),
    hostile,
)
component = st.one_of(
    st.text(LETTERS + "_.@:+,=~-", min_size=1, max_size=12),
    st.text(st.characters(blacklist_characters="/\x00"), min_size=1, max_size=8),
    st.sampled_from([".", "..", "a" * 255, "b" * 256, "%i", "%%", "é", "x y"]),
)
path = st.builds(
    lambda lead, parts, trail: lead + "/".join(parts) + trail,
    st.sampled_from(["/", "/", "//", ""]),
    st.lists(component, max_size=4),
    st.sampled_from(["", "", "/"]),
)
user_name = word("abcdefghijklmnopqrstuvwxyz_", "abcdefghijklmnopqrstuvwxyz0123456789_-", 31)
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)
fd_name = st.one_of(word(LETTERS + "_", LETTERS + "_.-", 12), st.just("f" * 64))
port = st.integers(1, 65535)
address = st.one_of(
    port.map(str),
    st.tuples(v4, port).map(lambda hp: f"{hp[0]}:{hp[1]}"),
    st.tuples(v6, port).map(lambda hp: f"[{hp[0]}]:{hp[1]}"),
    path.filter(lambda p: p.startswith("/")),
)
listener = st.one_of(
    address,
    st.tuples(address, fd_name).map("=".join),
    st.tuples(address, st.sampled_from(["https", "http", "web"])).map("=".join),
    st.fixed_dictionaries({"address": address}, optional={"name": fd_name, "tls": st.booleans()}),
)
tls_table = st.fixed_dictionaries(
    {"cert": path, "key": path},
    optional={
        "chain": path,
        "renew_days": st.integers(-1, 400),
        "ca_dir": path,
        "hosts": st.lists(free_text, max_size=2),
        "passphrase_file": path,
        "ca_passphrase_file": path,
    },
)
nginx_table = st.fixed_dictionaries(
    {},
    optional={
        "server_name": st.lists(st.text("abc0.*-", min_size=1, max_size=20), max_size=2),
        "listen": st.integers(0, 70000),
        "static": st.dictionaries(st.text("ab/", max_size=8).map(lambda t: "/" + t), path),
        "upstream": st.lists(address, max_size=2),
        "tls_cert": path,
        "tls_key": path,
        "client_max_body_size": st.text("0123456789kmgx", min_size=1, max_size=5),
    },
)

# Values a user may mean (still full of odd characters where the field allows them) ...
VALID: dict[str, st.SearchStrategy[Any]] = {
    "name": st.one_of(
        *[word(LETTERS, LETTERS + "_.:-", 20)] * 4, st.integers(195, 205).map(lambda n: "n" * n)
    ),
    "entry": st.builds("{}.{}:{}".format, ident, ident, ident) | st.just("app:Root"),
    "kind": st.sampled_from(["auto", "cherrypy", "wsgi"]),
    "config": path,
    "python": path,
    "working_directory": path,
    "description": free_text,
    "user": st.one_of(st.just(""), user_name, st.tuples(user_name, user_name).map(":".join)),
    "environment": st.dictionaries(ident, free_text, max_size=4),
    "environment_file": path,
    "listen": st.lists(listener, min_size=1, max_size=3),
    "network": st.booleans(),
    "outbound": st.lists(
        st.one_of(v4, v6, st.sampled_from(["any", "localhost", "10.0.0.0/8", "::1/128"])),
        max_size=3,
    ),
    "watchdog_sec": st.integers(0, 3600),
    "idle_stop_sec": st.integers(0, 86400),
    "timeout_stop_sec": st.integers(1, 3600),
    "restart": st.sampled_from(["no", "on-success", "on-failure", "on-abnormal", "always"]),
    "hardening": st.sampled_from(["strict", "relaxed"]),
    "state_directory": st.booleans(),
    "workers": st.integers(1, 3),
    "worker_mode": st.sampled_from(["reuseport", "ports"]),
    "tls": tls_table,
    "nginx": nginx_table,
    "vhosts": st.dictionaries(st.text("ab0.-", min_size=1, max_size=20), free_text),
    # Every high at most every max, so that the pair is valid whatever is drawn.
    "memory_high": st.sampled_from(["32M", "256M", "512M", "536870912"]),
    "memory_max": st.sampled_from(["512M", "1G", "2T", "infinity"]),
    "health_path": st.from_regex(r"/[A-Za-z0-9_.~/?=&%+-]{0,20}", fullmatch=True),
    "credentials": st.dictionaries(
        st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,10}", fullmatch=True).filter(
            lambda n: not n.startswith("tls-")
        ),
        path,
        max_size=3,
    ),
}
# A field the table declares as an integer, boolean or choice needs no strategy written here.
for row in FIELDS:
    if row.toml == "integer":
        VALID.setdefault(row.key, st.integers(row.low, row.high))
    elif row.toml == "boolean":
        VALID.setdefault(row.key, st.booleans())
    elif row.choices is not None:
        VALID.setdefault(row.key, st.sampled_from([member.value for member in row.choices]))
# ... and anything at all.
HOSTILE: dict[str, st.SearchStrategy[Any]] = {
    key: st.one_of(hostile, wrong_type, strategy, st.text(max_size=40))
    for key, strategy in VALID.items()
}
HOSTILE["listen"] = st.one_of(st.lists(st.one_of(listener, hostile, wrong_type)), hostile)
HOSTILE["environment"] = st.dictionaries(
    st.one_of(hostile, st.text(max_size=5)), st.one_of(hostile, wrong_type), max_size=3
)
HOSTILE["watchdog_sec"] = HOSTILE["workers"] = HOSTILE["idle_stop_sec"] = st.one_of(
    st.integers(-(2**65), 2**65), wrong_type
)
assert set(VALID) == KNOWN_KEYS, "a new field needs a strategy here"


@st.composite
def tables(draw: st.DrawFn, most_bad: int = 2) -> dict[str, Any]:
    """A description table: some fields valid, up to ``most_bad`` hostile, sometimes a key
    missing or unknown."""
    present = draw(st.sets(st.sampled_from(sorted(KNOWN_KEYS - {"name", "entry"}))))
    bad = draw(st.sets(st.sampled_from(sorted(KNOWN_KEYS)), max_size=most_bad))
    table: dict[str, Any] = {}
    for key in ["name", "entry", *sorted(present)]:
        table[key] = draw((HOSTILE if key in bad else VALID)[key])
    if "python" not in table or draw(st.booleans()):
        table["python"] = "/opt/venv/bin/python3"
    if draw(st.integers(0, 30)) == 0:
        table.pop(draw(st.sampled_from(["name", "entry"])))
    if draw(st.integers(0, 30)) == 0:
        table[draw(st.text(max_size=8))] = 1
    return table


base_dirs = st.one_of(st.just("/srv/app"), path.filter(lambda p: p.startswith("/")))
# Where install puts the resolved description: /var/lib/cpsysd, or under $XDG_STATE_HOME/$HOME
# with --user or --root, which may hold spaces, '%', quotes, non-ASCII (not control characters).
home = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=12)
options = st.builds(
    RenderOptions,
    st.one_of(
        st.just("/var/lib/cpsysd/app.toml"),
        home.map(lambda h: f"/home/{h}/.local/state/cpsysd/app.toml"),
    ),
    st.booleans(),
    st.one_of(st.none(), st.just("/var/lib/cpsysd/app.env")),  # what install passes
)


# --- what the units must say --------------------------------------------------------------------


def check_refusal(err: SpecError, table: dict[str, Any]) -> None:
    """A refusal is one printable line that names a field of the description."""
    line = err.one_line()
    assert len(line.splitlines()) == 1, line
    assert line.strip(), line
    line.encode("utf-8")  # printable to any UTF-8 terminal: no lone surrogates
    root = err.field.split(".")[0].split("[")[0]
    assert root in KNOWN_KEYS or err.field in table, f"{err.field!r} names no field: {line}"


def norm(text: str, base: str) -> str:
    """Where a path of the description points, computed independently of cpsysd.description.load."""
    joined = posixpath.normpath(posixpath.join(base, text))
    return "/" + joined.lstrip("/")


def read(text: str, unit_type: str, known: dict[str, str] | None = None) -> up.UnitFile:
    unit = up.parse_unit(text, unit_type, known)
    assert unit.warnings == [], unit.warnings
    for line in text.splitlines():
        assert not line.startswith((" ", "\t")), f"indented line {line!r}"
    return unit


def resolved(unit: up.UnitFile, known: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(section.key, value) pairs after specifier expansion: SpecifierError if any is left."""
    return [
        (f"{a.section}.{a.key}", up.resolve_specifiers(a.value, known)) for a in unit.assignments
    ]


def check_service(spec: AppSpec, opts: RenderOptions, text: str) -> None:
    unit = read(text, "service")
    pairs = resolved(unit)
    env: dict[str, str] = {}
    for line in unit.values("Service", "Environment"):
        assert len(up.parse_environment(line)) == 1, f"one assignment per line: {line!r}"
        up.apply_environment(env, line)
    private = bool(opts.environment_path and spec.environment)  # install: values in NAME.env
    assert list(env.items()) == ([] if private else list(spec.environment))
    [start] = up.split_exec(unit.value("Service", "ExecStart"))
    argv = [spec.python, "-m", "cpsysd", "serve", "-c", opts.description_path]
    assert (start.path, start.prefixes) == (spec.python, "")
    assert up.replace_env_argv(start.argv, env) == argv
    [reload] = up.split_exec(unit.value("Service", "ExecReload"))
    assert reload.argv == ["/bin/kill", "-HUP", "$MAINPID"]
    sockets = [f"{spec.name}.socket"] + [f"{spec.name}-{fd}.socket" for fd in spec.fd_names[1:]]
    expected = [("Unit.Description", spec.description)]
    expected += [("Unit.Documentation", file_url(opts.description_path))]
    expected += [(f"Unit.{k}", s) for s in sockets for k in ("Requires", "After")]
    if spec.network and not opts.user_mode:
        online = "network-online.target"
        expected += [("Unit.Wants", online), ("Unit.After", online)]
    expected += [
        ("Service.Type", "notify"),
        ("Service.NotifyAccess", "main"),
        ("Service.WorkingDirectory", spec.working_directory),
        ("Service.Restart", spec.restart.value),
        ("Service.RestartSec", "1s"),
        ("Service.TimeoutStopSec", f"{spec.timeout_stop_sec}s"),
        ("Service.TimeoutStartSec", "90s"),
        ("Service.SyslogIdentifier", spec.name),
    ]
    if spec.watchdog_sec:
        expected.append(("Service.WatchdogSec", f"{spec.watchdog_sec}s"))
    if private:
        expected.append(("Service.EnvironmentFile", opts.environment_path))
    if spec.environment_file:
        expected.append(("Service.EnvironmentFile", spec.environment_file))
    creds: list[tuple[str, str]] = []
    if spec.tls:
        creds = [("tls-cert", spec.tls.cert), ("tls-key", spec.tls.key)]
        creds += [("tls-chain", spec.tls.chain)] if spec.tls.chain else []
        if spec.tls.passphrase_file:
            creds += [("tls-key-passphrase", spec.tls.passphrase_file)]
    creds += list(spec.credentials)
    got = [up.split_load_credential(v) for v in unit.values("Service", "LoadCredential")]
    assert got == creds
    expected += [("Service.LoadCredential", f"{i}:{p}") for i, p in creds]
    expected += [
        ("Service.MemoryHigh", spec.memory_high),
        ("Service.MemoryMax", spec.memory_max),
        ("Service.TasksMax", str(spec.tasks_max)),
        ("Service.LimitNOFILE", str(spec.limit_nofile)),
    ]
    if spec.state_directory:
        assert up.split_exec_directory(unit.value("Service", "StateDirectory")) == [
            (spec.name, None)
        ]
        expected.append(("Service.StateDirectory", spec.name))
        expected.append(("Service.StateDirectoryMode", "0700"))
    if spec.user and not opts.user_mode:
        expected.append(("Service.User", spec.user))
        expected += [("Service.Group", spec.group)] if spec.group else []
    elif not opts.user_mode:
        expected.append(("Service.DynamicUser", "yes"))
    sandbox = read("[Service]\n" + "\n".join(hardening_lines(spec, opts.user_mode)), "service")
    expected += resolved(sandbox)
    ignored = {"Service.ExecStart", "Service.ExecReload", "Service.Environment"}
    actual = [pair for pair in pairs if pair[0] not in ignored]
    assert sorted(actual) == sorted(expected)
    for key, value in actual:  # documentation_url_is_valid(): file:/ and ASCII, one word
        if key == "Unit.Documentation":
            assert value.isascii(), value
            assert len(up.split_words(value, Extract.UNQUOTE)) == 1, value


def check_socket(spec: AppSpec, opts: RenderOptions, fd: str, text: str) -> None:
    mine = [listener for listener in spec.listeners if listener.name == fd]
    expected = [
        # systemd strips the space an empty description leaves: cosmetic, not a change of meaning
        ("Unit.Description", f"{spec.description} ({fd} socket)".lstrip(" ")),
        ("Unit.Documentation", file_url(opts.description_path)),
        *(("Socket.ListenStream", listen_stream(listener)) for listener in mine),
        ("Socket.FileDescriptorName", fd),
        ("Socket.Service", f"{spec.name}.service"),
        ("Socket.Backlog", "1024"),
        ("Install.WantedBy", "sockets.target"),
    ]
    if any(listener.path is None for listener in mine):
        expected.append(("Socket.NoDelay", "yes"))
    if any(listener.path is not None for listener in mine):
        expected += [("Socket.SocketMode", "0666"), ("Socket.RemoveOnStop", "yes")]
    assert sorted(resolved(read(text, "socket"))) == sorted(expected)


def file_url(path: str) -> str:
    """RFC 8089 file URL of ``path``: what Documentation= should say, ASCII only."""
    return "file:" + urllib.parse.quote(path, safe="/")


def listen_stream(listener: Any) -> str:
    """systemd.socket(5) ListenStream= syntax, from the listener's parts."""
    if listener.path is not None:
        assert listener.path.startswith("/")
        assert len(listener.path.encode()) <= 107
        return str(listener.path)
    assert 1 <= listener.port <= 65535
    if listener.host is None:
        return str(listener.port)
    host = ipaddress.ip_address(listener.host)
    return f"[{host}]:{listener.port}" if host.version == 6 else f"{host}:{listener.port}"


def check_intent(spec: AppSpec, table: dict[str, Any], base: str) -> None:
    """The parsed spec holds what the table says (for the fields whose meaning is plain)."""
    assert spec.name == table["name"]
    assert spec.description == table.get("description", f"{spec.name} (served by cpsysd)")
    assert dict(spec.environment) == table.get("environment", {})
    workdir = norm(table.get("working_directory", base), base)
    assert spec.working_directory == workdir
    assert spec.python == norm(table["python"], "/")
    if "environment_file" in table:
        assert spec.environment_file == norm(table["environment_file"], "/")
    if spec.tls:
        assert (spec.tls.cert, spec.tls.key) == tuple(
            norm(table["tls"][k], workdir) for k in ("cert", "key")
        )
        for key in ("passphrase_file", "ca_passphrase_file"):
            given = table["tls"].get(key)
            assert getattr(spec.tls, key) == (None if given is None else norm(given, workdir))
    user = table.get("user", "")
    assert (spec.user or "", spec.group) == (user.partition(":")[0], user.partition(":")[2] or None)


def check_renew(spec: AppSpec, opts: RenderOptions, units: dict[str, str]) -> int:
    """The certificate-renewal timer and service (cpsysd.render.renew): how many there are."""
    if spec.tls is None or spec.tls.renew_days <= 0:
        return 0
    description = f"Renew the TLS certificate of {spec.description}".rstrip(" ")
    timer = read(units.pop(f"{spec.name}-cert-renew.timer"), "timer")
    service = read(units.pop(f"{spec.name}-cert-renew.service"), "service")
    for unit in (timer, service):
        resolved(unit)
        assert up.resolve_specifiers(unit.value("Unit", "Description")) == description
        documentation = up.resolve_specifiers(unit.value("Unit", "Documentation"))
        assert documentation == file_url(opts.description_path)
    [start] = up.split_exec(service.value("Service", "ExecStart"))
    argv = [spec.python, "-m", "cpsysd", "cert", "renew", "-c", opts.description_path]
    env: dict[str, str] = {}
    for line in service.values("Service", "Environment"):
        up.apply_environment(env, line)
    # As systemd runs it: ${NAME} substituted and "$$" a literal "$" (systemd.service(5)).
    assert up.replace_env_argv(start.argv, env) == argv + (["--user"] if opts.user_mode else [])
    writable = [
        word
        for line in service.values("Service", "ReadWritePaths")
        for word in up.split_words(up.resolve_specifiers(line), Extract.UNQUOTE | Extract.CUNESCAPE)
    ]
    creds = [("tls-key-passphrase", spec.tls.passphrase_file)] if spec.tls.passphrase_file else []
    if spec.tls.ca_passphrase_file:
        assert spec.tls.ca_dir is not None  # refused without one
        creds += [("tls-ca-passphrase", spec.tls.ca_passphrase_file)]
    got = [up.split_load_credential(v) for v in service.values("Service", "LoadCredential")]
    assert got == creds  # the passphrases only, never the key (it is written, not read)
    paths = [spec.tls.cert, spec.tls.key] + ([spec.tls.chain] if spec.tls.chain else [])
    if opts.user_mode:
        assert writable == []
    else:  # exactly the certificate's directories (and the CA's chain file's, if any)
        assert {posixpath.dirname(path) for path in paths} <= set(writable)
        assert len(set(writable)) == len(writable)
        assert all(norm(path, "/") == path for path in writable), writable
    return 2


def check_units(spec: AppSpec, opts: RenderOptions, units: dict[str, str]) -> None:
    for filename in units:
        assert up.unit_name_is_valid(filename), f"invalid unit name {filename!r}"
    units = dict(units)
    check_renew(spec, opts, units)
    if spec.workers > 1:
        for filename, text in units.items():
            kind = filename.rsplit(".", 1)[1]
            unit = read(text, kind, known={"i": "1"})
            resolved(unit, {"i": "1"})
        return
    assert next(iter(units)) == f"{spec.name}.service"
    check_service(spec, opts, units[f"{spec.name}.service"])
    for i, fd in enumerate(spec.fd_names):
        filename = f"{spec.name}.socket" if i == 0 else f"{spec.name}-{fd}.socket"
        check_socket(spec, opts, fd, units[filename])
    assert len(units) == 1 + len(spec.fd_names)


def check_description(table: dict[str, Any], base: str, opts: RenderOptions) -> None:
    """The whole property for one table: refused cleanly, or rendered faithfully."""
    try:
        spec = parse_spec(table, base)
    except SpecError as err:
        check_refusal(err, table)
        return
    check_intent(spec, table, base)
    again = tomllib.loads(spec_to_toml(spec))
    assert parse_spec(again, "/nonexistent") == spec, "the resolved description must round-trip"
    try:
        units = render_units(spec, opts)
    except SpecError as err:
        check_refusal(err, table)
        return
    check_units(spec, opts, units)


FAST = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
# CI runs the full counts (10,500 examples); CPSYSD_HOSTILE_SCALE=0.1 for a quick local run.
SCALE = float(os.environ.get("CPSYSD_HOSTILE_SCALE", "1"))


def examples(count: int) -> settings:
    return settings(FAST, max_examples=max(1, int(count * SCALE)))


@examples(6000)
@given(table=tables(), base=base_dirs, opts=options)
def test_any_description_is_refused_or_rendered_faithfully(
    table: dict[str, Any], base: str, opts: RenderOptions
) -> None:
    check_description(table, base, opts)


@examples(3000)
@given(
    table=st.fixed_dictionaries(
        {"name": VALID["name"], "entry": st.just("app:Root"), "python": path},
        optional={key: VALID[key] for key in ("description", "environment", "working_directory")},
    ),
    base=base_dirs,
    opts=options,
)
def test_free_text_fields_round_trip(table: dict[str, Any], base: str, opts: RenderOptions) -> None:
    """The fields that are free text (description, environment values) and paths, alone: most
    of these are accepted, so this drives rendering hard."""
    check_description(table, base, opts)


@examples(1500)
@given(table=st.fixed_dictionaries({key: HOSTILE[key] for key in sorted(KNOWN_KEYS)}))
def test_every_field_hostile_at_once(table: dict[str, Any]) -> None:
    check_description(table, "/srv/app", RenderOptions("/var/lib/cpsysd/app.toml"))


# --- the bugs these properties found, pinned -----------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "base", "field"),
    [
        # a project directory whose name holds a newline injected a root ExecStartPre=+ line
        ({"working_directory": "x"}, '/tmp/a\nExecStartPre=+/bin/sh -c "id"', "working_directory"),
        ({"tls": {"cert": "c.pem", "key": "k.pem"}, "working_directory": "/srv/a%"}, "/", None),
        ({"python": "/"}, "/srv", "python"),  # ExecStart=/ : systemd refuses the unit
        ({"python": "/" + "a" * 256}, "/srv", "python"),  # over NAME_MAX: likewise
        ({"name": "a:b", "state_directory": True}, "/srv", "state_directory"),  # a symlink "b"
        ({"description": "caf\udce9"}, "/srv", "description"),  # undecodable: no UTF-8 to write
        ({"listen": ["/"], "workers": 2}, "/srv", "listen[0]"),  # crashed deriving worker sockets
        ({"tls": {"cert": "/", "key": "/k", "renew_days": 1, "ca_dir": "/ca"}}, "/", "tls.cert"),
        # NAME-FDNAME.socket over systemd's 255 characters: no such unit can exist
        ({"name": "n" * 195, "listen": ["1", f"2={'f' * 64}"]}, "/srv", "listen[1]"),
    ],
)
def test_found_bugs_stay_fixed(fields: dict[str, Any], base: str, field: str | None) -> None:
    table = {"name": "app", "entry": "app:Root", "python": "/usr/bin/python3", **fields}
    if field is None:
        check_description(table, base, RenderOptions("/var/lib/cpsysd/app.toml"))
        return
    with pytest.raises(SpecError) as caught:
        parse_spec(table, base)
    assert caught.value.field == field
    check_refusal(caught.value, table)


def test_documentation_url_of_an_odd_state_directory() -> None:
    """--user installs put the description under $HOME, which may hold spaces, '%' and UTF-8:
    Documentation= gets a percent-encoded file: URL (systemd ignored the raw one)."""
    spec = parse_spec({"name": "app", "entry": "app:Root", "python": "/usr/bin/python3"}, "/srv")
    opts = RenderOptions("/home/J Smith/é%/.local/state/cpsysd/app.toml", user_mode=True)
    units = render_units(spec, opts)
    check_units(spec, opts, units)
    url = up.parse_unit(units["app.service"]).value("Unit", "Documentation")
    assert (
        up.resolve_specifiers(url) == "file:/home/J%20Smith/%C3%A9%25/.local/state/cpsysd/app.toml"
    )
