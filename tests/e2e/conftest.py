"""Fixtures of the end-to-end suite: a real systemd (cpsysd.harness.container) per test, cpsysd and
the
example app installed inside, a session-end check that nothing of any container is left on the
machine, and the figures the tests measure, printed at the end of the run for the README.

Without root the suite is skipped. As root (CI) a machine that cannot run the container FAILS:
a missing capability must not turn the proof into a silent skip.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from cpsysd.harness import container as harness
from cpsysd.harness.container import Container

FIGURES: list[tuple[str, str]] = []


def require_container() -> None:
    """Skip without root; fail (never skip) as root when the container cannot run."""
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests boot systemd in namespaces: they need root")
    reason = harness.available()
    if reason:
        pytest.fail(f"running as root, but the systemd container is unusable: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.stash[_FAILED] = report.failed


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def container(request: pytest.FixtureRequest) -> Iterator[Container]:
    """A booted, empty systemd container; torn down after the test. When the test failed, the
    container's journal is printed (it shows up in the failure report)."""
    require_container()
    with Container() as box:
        yield box
        if request.node.stash.get(_FAILED, False):
            print(f"--- journal of container {box.name} (last 150 lines) ---")
            print(box.run(["journalctl", "--no-pager", "-n", "150"], check=False).stdout)


@pytest.fixture
def container_allowed() -> None:
    """For tests that boot containers themselves (e.g. through ``cpsysd try``)."""
    require_container()


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_behind() -> Iterator[None]:
    """After the whole session: no container process, mount, cgroup or scratch directory."""
    yield
    left = harness.leftovers()
    assert left == [], f"the end-to-end tests left behind: {left}"


@pytest.fixture
def figure() -> Callable[[str, str], None]:
    """Record a measured figure; all are printed in the terminal summary (for the README)."""

    def record(label: str, value: str) -> None:
        print(f"FIGURE {label}: {value}")
        FIGURES.append((label, value))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("figures measured in the systemd container")
        for label, value in FIGURES:
            terminalreporter.write_line(f"{label:<48} {value}")
