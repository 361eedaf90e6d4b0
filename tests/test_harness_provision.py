"""What ``cpsysd try`` provisions besides cpsysd (cpsysd.harness.provision): asking the app's
interpreter for its packages, and choosing which of them the app needs. No container here;
tests/e2e/test_e2e_try_packages.py proves the result under a real systemd."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest

from cpsysd.errors import SpecError
from cpsysd.harness.provision import (
    AppInterpreter,
    Provisioned,
    _key,
    app_distributions,
    ask_interpreter,
    runtime_distributions,
)
from cpsysd.harness.trying import provision_lines


def _dist_info(site: Path, name: str, *requires: str, requested: bool = False) -> None:
    """A minimal installed distribution, as pip leaves it (METADATA, optional REQUESTED)."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0"]
    lines += [f"Requires-Dist: {requirement}" for requirement in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    if requested:
        (info / "REQUESTED").write_text("")


def _names(dists: list[metadata.Distribution]) -> list[str]:
    return sorted(_key(dist.metadata["Name"]) for dist in dists)


def test_the_apps_packages_are_kept_cpsysds_dev_tools_and_pip_left_out(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    _dist_info(site, "cpsysd", "cherrypy", 'pytest; extra == "dev"', 'tornado; extra == "dev"')
    _dist_info(site, "cherrypy")
    _dist_info(site, "pytest", "iniconfig", "idna")  # idna: pulled in by a tool, and...
    _dist_info(site, "iniconfig")
    _dist_info(site, "requests", "idna", "charset-normalizer")  # ...needed by the app's requests
    _dist_info(site, "idna")
    _dist_info(site, "charset-normalizer")
    _dist_info(site, "tornado", requested=True)  # an extra's, but installed by name: the app's
    _dist_info(site, "pip", requested=True)
    dists = tuple(metadata.distributions(path=[str(site)]))
    kept, left_out = app_distributions(dists, ours={"cpsysd", "cherrypy"})
    assert _names(kept) == ["charset-normalizer", "idna", "requests", "tornado"]
    assert _names(left_out) == ["iniconfig", "pip", "pytest"]


def test_without_cpsysd_in_the_apps_interpreter_everything_but_pip_is_the_apps(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site-packages"
    _dist_info(site, "pytest", "iniconfig")
    _dist_info(site, "iniconfig")
    _dist_info(site, "pip", requested=True)
    kept, left_out = app_distributions(tuple(metadata.distributions(path=[str(site)])), set())
    assert _names(kept) == ["iniconfig", "pytest"]
    assert _names(left_out) == ["pip"]


def test_this_interpreter_answers_with_what_it_imports() -> None:
    app = ask_interpreter(sys.executable)
    assert app.version == "{}.{}".format(*sys.version_info[:2])
    names = {_key(dist.metadata["Name"]) for dist in app.distributions}
    assert {_key(dist.metadata["Name"]) for dist in runtime_distributions()} <= names
    assert len(names) == len(app.distributions)  # one per name: the first on sys.path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: tmp / "venv" / "bin" / "python", r"does not exist on this host"),
        (lambda tmp: tmp, r"cannot run .*: Permission denied"),
        (lambda tmp: Path("/bin/false"), r"/bin/false did not list its packages: exit status 1"),
    ],
    ids=["missing", "a-directory", "not-python"],
)
def test_an_interpreter_that_cannot_answer_is_one_line_naming_the_field(
    tmp_path: Path, make: Callable[[Path], Path], expected: str
) -> None:
    python = str(make(tmp_path))
    with pytest.raises(SpecError, match=expected) as caught:
        ask_interpreter(python)
    assert caught.value.field == "python"
    assert "\n" not in caught.value.one_line()
    assert "set python to" in (caught.value.hint or "")


def test_progress_lines_name_what_was_copied_and_what_was_left_out() -> None:
    app = AppInterpreter("/srv/app/venv/bin/python", "3.11", ())
    copied = tuple(f"pkg{i} 1.0" for i in range(10))
    lines = provision_lines(
        app,
        Provisioned(
            "/opt/cpsysd/venv/bin/python",
            copied=copied,
            left_out=("pip 23.0.1",),
            kept_ours=(("CherryPy", "18.8.0", "18.10.0"),),
        ),
    )
    assert lines[0] == (
        "copied 10 packages of /srv/app/venv/bin/python: "
        "pkg0 1.0, pkg1 1.0, pkg2 1.0, pkg3 1.0, pkg4 1.0, pkg5 1.0, pkg6 1.0, pkg7 1.0 and 2 more"
    )
    assert lines[1] == "left out (pip, and what only cpsysd's extras need): pip 23.0.1"
    assert lines[2] == "cpsysd's own versions used: CherryPy 18.10.0 (the app's has 18.8.0)"
    nothing = provision_lines(app, Provisioned("/opt/cpsysd/venv/bin/python"))
    assert nothing == ["/srv/app/venv/bin/python has no packages beyond cpsysd's own dependencies"]
