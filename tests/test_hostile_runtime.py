"""Hostile socket-activation and supervisor environments for ``cpsysd serve``.

Whatever LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES / NOTIFY_SOCKET / WATCHDOG_USEC /
CREDENTIALS_DIRECTORY say and whatever descriptors sit at fd 3 and up, the runtime adopts exactly
the descriptors sd_listen_fds(3) hands it (never one beyond LISTEN_FDS, never one meant for
another PID), never dies with a traceback, and refuses with one clear line. Checked in-process
with hypothesis (the parsing functions; adopt_sockets() in a forked child with real descriptors)
and end to end on real ``cpsysd serve`` processes given crafted descriptors."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpsysd.errors import ActivationError
from cpsysd.runtime import adopt, watchdog
from tests.test_hostile_spec import examples

VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID")
KINDS = ("tcp", "tcp6", "unix", "udp", "connected", "pipe", "file", "seqpacket", "closed")

# What an environment can hold: no NUL; undecodable bytes arrive as \udc80-\udcff (PEP 383).
ENV_CHARS = st.one_of(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),
)
numbers = st.one_of(
    st.integers(-5, 12).map(str),
    st.sampled_from(["", " 1", "1 ", "+1", "0x1", "1.0", "٣", "9" * 25, "9" * 5000, "1" * 4301]),
    st.text(ENV_CHARS, max_size=6),
)  # (an environment variable cannot hold a NUL)
env_value = st.one_of(st.none(), numbers, st.text(ENV_CHARS, max_size=30))


@contextmanager
def environment(values: dict[str, str | None]) -> Iterator[None]:
    saved = {var: os.environ.get(var) for var in values}
    try:
        for var, value in values.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        yield
    finally:
        for var, old in saved.items():
            if old is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = old


def one_line(message: str) -> None:
    assert message.strip(), "an empty message"
    assert len(message.splitlines()) == 1, message
    assert len(message) < 400, message


@examples(1500)
@given(pid=env_value, fds=env_value, names=env_value, self_pid=st.booleans())
def test_activation_variables_parse_or_refuse(
    pid: str | None, fds: str | None, names: str | None, self_pid: bool
) -> None:
    pid = str(os.getpid()) if self_pid else pid
    with environment({"LISTEN_PID": pid, "LISTEN_FDS": fds, "LISTEN_FDNAMES": names}):
        try:
            count, parsed = adopt._parse_environment()
        except ActivationError as err:
            one_line(err.one_line())
            return
    assert pid == str(os.getpid()), "sockets meant for another process were accepted"
    assert fds is not None
    assert count == int(fds) >= 1
    assert parsed is None if names is None else parsed == names.split(":")


@examples(1000)
@given(usec=env_value, wd_pid=st.one_of(st.none(), st.just("SELF"), numbers))
def test_watchdog_variables_give_a_usable_period(usec: str | None, wd_pid: str | None) -> None:
    wd_pid = str(os.getpid()) if wd_pid == "SELF" else wd_pid
    with environment({"WATCHDOG_USEC": usec, "WATCHDOG_PID": wd_pid}):
        period = watchdog.watchdog_period()
    if period is None:
        return
    assert wd_pid in (None, str(os.getpid()))
    assert usec is not None
    # half of WATCHDOG_USEC, or more often; never below MIN_PERIOD (a 1 us watchdog would spin)
    assert 0 < period <= max(int(usec) / 2e6, watchdog.MIN_PERIOD)
    assert period <= threading.TIMEOUT_MAX  # else Event.wait(period) raises OverflowError


# --- adopt_sockets() on real descriptors, in a forked child -------------------------------------


def make_fd(kind: str, stack: ExitStack, directory: str) -> int | None:
    """A descriptor of ``kind`` (kept open by ``stack``); None for a closed slot."""
    if kind == "closed":
        return None
    if kind == "pipe":
        read, write = os.pipe()
        stack.callback(os.close, write)
        stack.callback(os.close, read)
        return read
    if kind == "file":
        fd, _ = tempfile.mkstemp(dir=directory)
        stack.callback(os.close, fd)
        return fd
    if kind == "connected":
        left, right = socket.socketpair()
        stack.enter_context(left)
        stack.enter_context(right)
        return left.fileno()
    family, kind_type, address = {
        "tcp": (socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0)),
        "tcp6": (socket.AF_INET6, socket.SOCK_STREAM, ("::1", 0)),
        "udp": (socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 0)),
        "unix": (socket.AF_UNIX, socket.SOCK_STREAM, None),
        "seqpacket": (socket.AF_UNIX, socket.SOCK_SEQPACKET, None),
    }[kind]
    sock = stack.enter_context(socket.socket(family, kind_type))
    sock.bind(address or tempfile.mktemp(dir=directory, suffix=".sock"))
    if kind_type != socket.SOCK_DGRAM:
        sock.listen()
    return sock.fileno()


def adopt_in_child(sources: list[int | None], env: dict[str, str | None]) -> dict[str, Any]:
    """Fork; in the child put ``sources`` at fds 3, 4, ... (None: closed), set ``env`` ("SELF"
    is the child's pid), call adopt_sockets() and report what it did."""
    read, low = os.pipe()
    write = fcntl.fcntl(low, fcntl.F_DUPFD_CLOEXEC, 200)  # out of the way of fds 3, 4, ...
    os.close(low)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.write(write, json.dumps(_child(sources, env, write)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child crashed"
    result: dict[str, Any] = json.loads(b"".join(chunks))
    return result


def _child(sources: list[int | None], env: dict[str, str | None], keep: int) -> dict[str, Any]:
    # Copies above every slot first (F_DUPFD >= 100), so no slot is overwritten before use.
    high = [None if fd is None else fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in sources]
    for slot, fd in enumerate(high, start=3):
        if slot == keep:
            raise RuntimeError("the report pipe sits in the way")
        if fd is None:
            with suppress(OSError):
                os.close(slot)
        else:
            os.dup2(fd, slot, inheritable=True)
    for var, value in env.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = str(os.getpid()) if value == "SELF" else value
    try:
        adopted = adopt.adopt_sockets()
        outcome: dict[str, Any] = {
            "adopted": [[item.fd, item.name] for item in adopted or []],
            "none": adopted is None,
        }
    except ActivationError as err:
        outcome = {"error": err.one_line()}
    except Exception as err:  # the property: nothing else ever escapes
        outcome = {"crash": f"{type(err).__name__}: {err}"}
    slots = range(3, 3 + len(sources))
    outcome["open"] = [slot for slot in slots if _is_open(slot)]
    outcome["inheritable"] = [slot for slot in outcome["open"] if os.get_inheritable(slot)]
    outcome["env"] = [var for var in adopt.ACTIVATION_VARIABLES if var in os.environ]
    return outcome


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


layouts = st.lists(st.sampled_from(KINDS), max_size=4)
NAMES = ["http", "https", "", "a:b", "é\n"]


@examples(250)
@given(
    kinds=layouts,
    pid=st.one_of(st.just("SELF"), st.just("SELF"), env_value),
    count=st.one_of(st.integers(0, 5).map(str), numbers, st.none()),
    names=st.one_of(st.none(), st.lists(st.sampled_from(NAMES), max_size=5).map(":".join)),
)
def test_only_the_passed_sockets_are_adopted(
    kinds: list[str], pid: str | None, count: str | None, names: str | None
) -> None:
    with ExitStack() as stack, tempfile.TemporaryDirectory() as directory:
        sources = [make_fd(kind, stack, directory) for kind in kinds]
        env = {"LISTEN_PID": pid, "LISTEN_FDS": count, "LISTEN_FDNAMES": names}
        result = adopt_in_child(sources, env)
    assert "crash" not in result, result["crash"]
    opened = [3 + i for i, kind in enumerate(kinds) if kind != "closed"]
    if "error" in result:
        one_line(result["error"])
        assert result["open"] == opened, "a refusal must leave every descriptor alone"
        assert result["inheritable"] == opened
        return
    if result["none"]:
        assert (pid, count, names) == (None, None, None)
        return
    n = int(count or 0)
    assert pid == "SELF", "adopted sockets meant for another process"
    assert [fd for fd, _ in result["adopted"]] == list(range(3, 3 + n))
    assert all(kind in ("tcp", "tcp6", "unix") for kind in kinds[:n])
    assert [name for _, name in result["adopted"]] == (
        names.split(":") if names is not None else [None] * n
    )
    assert result["open"] == opened  # nothing closed, the foreign ones included
    foreign = [fd for fd in opened if fd >= 3 + n]
    assert [fd for fd in result["inheritable"] if fd >= 3 + n] == foreign, "foreign fd touched"
    assert result["env"] == []


@pytest.mark.parametrize(
    ("kinds", "env", "message"),
    [
        (["tcp"], {"LISTEN_PID": "1", "LISTEN_FDS": "1"}, "another process"),
        (["tcp", "tcp"], {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"}, "2 name(s)"),
        (["pipe"], {"LISTEN_FDS": "1"}, "a pipe"),
        (["udp"], {"LISTEN_FDS": "1"}, "UDP"),
        (["connected"], {"LISTEN_FDS": "1"}, "not listening"),
        (["tcp", "closed"], {"LISTEN_FDS": "2"}, "not open"),
        (["tcp"], {"LISTEN_FDS": "9" * 5000}, "LISTEN_FDS"),
        (["tcp"], {"LISTEN_FDS": "1", "LISTEN_PID": "9" * 5000}, "LISTEN_PID"),
    ],
)
def test_refusals_say_what_is_wrong(kinds: list[str], env: dict[str, str], message: str) -> None:
    with ExitStack() as stack, tempfile.TemporaryDirectory() as directory:
        sources = [make_fd(kind, stack, directory) for kind in kinds]
        result = adopt_in_child(sources, {"LISTEN_PID": "SELF", **env})
    assert message in result.get("error", ""), result
