"""A sample of the random descriptions of test_hostile_spec.py, checked by systemd itself:
``systemd-analyze verify`` prints nothing at all on stderr for the units cpsysd renders, and its
unit dump (``SYSTEMD_LOG_LEVEL=debug``) shows the argv, environment, description, paths, users
and listening addresses that were meant. The interpreter paths are real files here (symlinks
to this Python under odd directory names), since verify checks ExecStart's executable."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpsysd.description.load import AppSpec, parse_spec
from cpsysd.description.resources import memory_bytes
from cpsysd.errors import SpecError
from cpsysd.host.verify import verify_units
from cpsysd.render.units import RenderOptions, render_units
from tests import unitparse as up
from tests.test_hostile_spec import (
    LETTERS,
    SCALE,
    VALID,
    base_dirs,
    component,
    examples,
    ident,
    options,
    tables,
)

SAMPLE = max(5, int(300 * SCALE))  # drawn descriptions; most are accepted
# Paths without the characters cpsysd refuses, but with the odd ones it accepts.
safe_path = st.lists(
    st.text(LETTERS + "._-@+,=~:%é日", min_size=1, max_size=10), min_size=1, max_size=3
).map(lambda parts: "/" + "/".join(parts))
printable = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20)
rich_tables = st.fixed_dictionaries(
    {"name": VALID["name"], "entry": VALID["entry"]},
    optional={
        **{key: VALID[key] for key in ("description", "user", "listen")},
        "environment": st.dictionaries(ident, printable, max_size=3),
        **{key: VALID[key] for key in ("network", "state_directory", "restart", "hardening")},
        "working_directory": safe_path,
        "environment_file": safe_path,
        "tls": st.fixed_dictionaries(
            {"cert": safe_path, "key": safe_path},
            optional={"chain": safe_path, "renew_days": st.integers(0, 60)},
        ),
    },
)


def collect(root: Path) -> list[tuple[AppSpec, RenderOptions]]:
    """Accepted (spec, options) pairs with a real interpreter at a hostile path under root."""
    found: list[tuple[AppSpec, RenderOptions]] = []

    @examples(SAMPLE)
    @given(
        table=st.one_of(rich_tables, tables()),
        base=base_dirs,
        opts=options,
        where=st.lists(component, max_size=2),
    )
    def draw(table: dict[str, Any], base: str, opts: RenderOptions, where: list[str]) -> None:
        table = {**table, "python": "/".join([str(root), *where, "python3"])}
        table.pop("workers", None)  # template units: covered in-process only
        try:
            spec = parse_spec(table, base)
            render_units(spec, opts)
        except SpecError:
            return
        found.append((spec, opts))

    draw()
    return found


def systemd_analyze(paths: list[Path], debug: bool) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0"}
    if debug:
        env["SYSTEMD_LOG_LEVEL"] = "debug"
    args = []
    for path in paths:  # verify reads FILE:ALIAS, so "a:b.service" goes in as COPY:a:b.service
        if ":" in path.name:
            copy = path.parent / f"colon-{len(args)}{path.suffix}"
            copy.write_bytes(path.read_bytes())
            args.append(f"{copy}:{path.name}")
        else:
            args.append(str(path))
    return subprocess.run(
        ["systemd-analyze", "verify", *args],
        capture_output=True,
        env=env,
        check=False,
        timeout=300,
    )


def test_a_sample_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    sample = collect(tmp_path / "py")
    assert len(sample) >= min(20, SAMPLE // 4), "the strategies should accept enough descriptions"
    # One verify run per batch of descriptions whose unit names differ (names repeat a lot).
    batches: list[tuple[list[Path], list[tuple[AppSpec, RenderOptions]]]] = []
    for i, (spec, opts) in enumerate(sample):
        python = Path(spec.python)
        python.parent.mkdir(parents=True, exist_ok=True)
        if not python.exists():
            python.symlink_to(sys.executable)
        units = render_units(spec, opts)
        batch = next((b for b in batches if not {p.name for p in b[0]} & set(units)), None)
        if batch is None:
            batch = ([], [])
            batches.append(batch)
        directory = tmp_path / f"units{i}"
        directory.mkdir()
        for filename, text in units.items():
            (directory / filename).write_text(text, encoding="utf-8")
            batch[0].append(directory / filename)
        batch[1].append((spec, opts))
    for paths, specs in batches:
        quiet = systemd_analyze(paths, debug=False)
        assert quiet.stderr.decode() == "", (quiet.stderr.decode(), [str(p) for p in paths])
        assert quiet.returncode == 0
        dumps = up.parse_dump(systemd_analyze(paths, debug=True).stdout)
        for spec, opts in specs:
            check_dump(spec, opts, dumps)


def check_dump(spec: AppSpec, opts: RenderOptions, dumps: dict[str, up.UnitDump]) -> None:
    """What systemd loaded is what the description meant."""
    service = dumps[f"{spec.name}.service"]
    argv = [spec.python, "-m", "cpsysd", "serve", "-c", opts.description_path]
    [stored] = service.commands["ExecStart"]  # as loaded; $$ becomes $ at exec time
    assert up.replace_env_argv(stored, dict(spec.environment)) == argv
    files = [spec.environment_file] if spec.environment_file else []
    if opts.environment_path and spec.environment:  # install: the values only in that file
        assert service.values("Environment") == []
        files.insert(0, opts.environment_path)
    else:
        assert service.values("Environment") == [f"{k}={v}" for k, v in spec.environment]
    assert service.values("EnvironmentFile") == files
    assert service.values("Description") == [spec.description or f"{spec.name}.service"]
    assert service.values("WorkingDirectory") == [spec.working_directory]
    assert service.values("MemoryHigh") == [memory_dump(spec.memory_high)]
    assert service.values("MemoryMax") == [memory_dump(spec.memory_max)]
    assert service.values("TasksMax") == [str(spec.tasks_max)]
    assert service.values("LimitNOFILE") == [str(spec.limit_nofile)]
    if spec.state_directory:
        assert service.values("StateDirectory") == [spec.name]
        assert service.values("StateDirectorySymlink") == []
    if opts.user_mode or spec.user is None:
        assert service.values("DynamicUser") == ["no" if opts.user_mode else "yes"]
    else:
        assert service.values("User") == [spec.user]
        assert service.values("Group") == ([spec.group] if spec.group else [])
    for i, fd in enumerate(spec.fd_names):
        socket = dumps[f"{spec.name}.socket" if i == 0 else f"{spec.name}-{fd}.socket"]
        assert socket.values("FileDescriptorName") == [fd]
        mine = [listener for listener in spec.listeners if listener.name == fd]
        got = socket.values("ListenStream")
        assert len(got) == len(mine)
        for listener, shown in zip(mine, got, strict=True):
            assert same_address(listener, shown), (listener, shown)


def memory_dump(size: str) -> str:
    """A memory size as systemd's dump shows it: bytes, infinity as UINT64_MAX."""
    return str(memory_bytes(size) if size != "infinity" else 2**64 - 1)


def same_address(listener: Any, shown: str) -> bool:
    """systemd prints addresses canonically: a bare port as [::]:PORT (0.0.0.0 without IPv6)."""
    if listener.path is not None:  # printed with C escapes for non-ASCII bytes
        return bool(up.dump_unescape(shown) == listener.path)
    host, _, port = shown.rpartition(":")
    if int(port) != listener.port:
        return False
    if listener.host is None:
        return host in ("[::]", "0.0.0.0")
    return ipaddress.ip_address(host.strip("[]")) == ipaddress.ip_address(listener.host)


@pytest.mark.parametrize(
    "path",
    ["/srv/a/app.toml", "/home/J Smith/é%/.local/state/cpsysd/app.toml", "/home/%n/$x/'q'.toml"],
)
def test_odd_description_paths_pass_verify(tmp_path: Path, path: str) -> None:
    spec = parse_spec({"name": "app", "entry": "app:Root", "python": sys.executable}, "/srv")
    opts = RenderOptions(path)
    for filename, text in render_units(spec, opts).items():
        (tmp_path / filename).write_text(text, encoding="utf-8")
    result = systemd_analyze([tmp_path / "app.service", tmp_path / "app.socket"], debug=False)
    assert (result.returncode, result.stderr.decode()) == (0, "")
    dump = up.parse_dump(systemd_analyze([tmp_path / "app.service"], debug=True).stdout)
    [stored] = dump["app.service"].commands["ExecStart"]
    assert up.replace_env_argv(stored, {})[-1] == path


def test_cpsysd_verify_takes_a_name_with_a_colon() -> None:
    """systemd allows ':' in unit names; `cpsysd verify` failed on them ("Couldn't process
    aliases": systemd-analyze verify reads FILE:ALIAS)."""
    spec = parse_spec({"name": "my:app", "entry": "app:Root", "python": sys.executable}, "/srv")
    report = verify_units(spec)
    assert "my:app.service" in report.exposures


@pytest.mark.parametrize("hardening", ["strict", "relaxed"])
@pytest.mark.parametrize("network", [True, False])
@pytest.mark.parametrize("user", ["", "www-data"])
def test_cpsysd_verify_accepts_its_own_units(hardening: str, network: bool, user: str) -> None:
    """Every documented sandbox choice passes cpsysd's own exposure thresholds (hardening =
    "relaxed" with network scored 2.7 and failed `cpsysd verify` against its 2.0)."""
    table = {"name": "app", "entry": "app:Root", "python": sys.executable, "user": user}
    spec = parse_spec({**table, "hardening": hardening, "network": network}, "/srv")
    report = verify_units(spec)
    assert 0 < report.exposure <= (0.9 if hardening == "strict" else 3.0)


# --- the nginx site (cpsysd nginx) of hostile descriptions: the real nginx -t --------------------


def test_nginx_sites_of_random_descriptions_pass_nginx_t(tmp_path: Path) -> None:
    """Whatever server names, static locations, upstreams and vhosts a description has, the
    site is refused with one line or ``nginx -t`` accepts it without a warning."""
    from cpsysd.targets.nginx import render_site
    from tests.scalekit import nginx_problems, nginx_test

    checked: list[int] = []

    @examples(60)
    @given(
        table=st.fixed_dictionaries(
            {"name": VALID["name"], "entry": VALID["entry"], "nginx": VALID["nginx"]},
            optional={key: VALID[key] for key in ("vhosts", "listen", "workers", "worker_mode")},
        ),
        base=base_dirs,
    )
    def draw(table: dict[str, Any], base: str) -> None:
        table = {**table, "python": "/usr/bin/python3"}
        table["nginx"] = {k: v for k, v in table["nginx"].items() if not k.startswith("tls_")}
        try:
            site = render_site(parse_spec(table, base))
        except SpecError as err:
            refusal = err.one_line()
        else:
            refusal = ""
        if refusal:
            assert len(refusal.splitlines()) == 1
            return
        result = nginx_test(tmp_path / f"nginx{len(checked)}", site)
        assert result.returncode == 0, (site, result.stderr)
        assert nginx_problems(result) == [], (site, result.stderr)
        checked.append(1)

    draw()
    assert len(checked) >= 5, len(checked)
