"""Bad socket-activation environments: ``cpsysd serve`` refuses each with one clear line on
stderr, a STATUS= notification and a non-zero exit, never serving a foreign descriptor.

The environments come from the real ``systemd-socket-activate`` where it can make them (a UDP
socket with ``--datagram``, a connected socket with ``--accept``, a missing listener) and from a
small launcher that places crafted descriptors at fd 3.. and execs cpsysd (same PID)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from runtimekit import (
    CPSYSD,
    NotifyReceiver,
    Proc,
    connect_when_up,
    free_port,
    free_ports,
    get_json,
    launch_with_fds,
    socket_activate,
    write_app,
)


@pytest.fixture
def notify(tmp_path: Path):
    receiver = NotifyReceiver(tmp_path / "notify.sock")
    yield receiver
    receiver.close()


def _fails(proc: Proc, notify: NotifyReceiver, expected: str, code: int = 3) -> str:
    """The process exits with ``code``, says ``expected`` in one cpsysd line, no traceback,
    and its last STATUS= says it failed."""
    rc = proc.wait(30)
    output = proc.output()
    errors = [line for line in output.splitlines() if line.startswith("cpsysd:")]
    assert rc == code, output
    assert len(errors) == 1, output
    assert expected in errors[0], output
    assert "Traceback" not in output
    index = notify.wait_for("STATUS", timeout=5)
    assert notify.messages[index]["STATUS"].startswith("Failed: "), notify.messages
    assert expected in notify.messages[index]["STATUS"]
    assert "READY" not in notify.states()
    return errors[0]


def _launch(
    tmp_path: Path,
    notify: NotifyReceiver,
    fds: list[str],
    listen: str | None = None,
    **options: object,
) -> Proc:
    description = write_app(tmp_path / "app", [listen or str(free_port())])
    argv = launch_with_fds(fds, ["-c", str(description)], **options)
    return Proc(argv, tmp_path / "out.log", env={"NOTIFY_SOCKET": notify.path})


def test_listen_pid_of_another_process(tmp_path: Path, notify: NotifyReceiver) -> None:
    port = free_port()
    proc = _launch(tmp_path, notify, [f"tcp:{port}"], pid="1")
    line = _fails(proc, notify, "LISTEN_PID=1 is not this process")
    assert "the sockets were passed to another process" in line


def test_listen_fds_not_a_number(tmp_path: Path, notify: NotifyReceiver) -> None:
    proc = _launch(tmp_path, notify, [f"tcp:{free_port()}"], count="two")
    _fails(proc, notify, "LISTEN_FDS='two' is not a number")


def test_listen_fds_larger_than_the_open_descriptors(
    tmp_path: Path, notify: NotifyReceiver
) -> None:
    proc = _launch(tmp_path, notify, [f"tcp:{free_port()}"], count="3")
    _fails(proc, notify, "fd 4 is not open: LISTEN_FDS is larger than the descriptors passed")


def test_names_count_mismatch(tmp_path: Path, notify: NotifyReceiver) -> None:
    proc = _launch(tmp_path, notify, [f"tcp:{free_port()}"], names="http:admin")
    _fails(proc, notify, "LISTEN_FDNAMES has 2 name(s) for LISTEN_FDS=1")


def test_pipe_is_refused(tmp_path: Path, notify: NotifyReceiver) -> None:
    proc = _launch(tmp_path, notify, ["pipe"], names="http")
    _fails(proc, notify, "fd 3 ('http') is a pipe, not a socket")


def test_regular_file_is_refused(tmp_path: Path, notify: NotifyReceiver) -> None:
    proc = _launch(tmp_path, notify, [f"tcp:{free_port()}", "file"])
    _fails(proc, notify, "fd 4 is a regular file, not a socket")


def test_udp_socket_from_systemd_socket_activate(tmp_path: Path, notify: NotifyReceiver) -> None:
    port = free_port()
    description = write_app(tmp_path / "app", [str(port)])
    argv = socket_activate(
        [f"127.0.0.1:{port}"],
        [*CPSYSD, "serve", "-c", str(description)],
        env={"NOTIFY_SOCKET": notify.path},
    )
    argv.insert(1, "--datagram")
    proc = Proc(argv, tmp_path / "out.log")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            # Datagram activation starts it; repeat until it has run (the first datagrams
            # may arrive before systemd-socket-activate has bound the port).
            deadline = time.monotonic() + 20
            while proc.popen.poll() is None and time.monotonic() < deadline:
                client.sendto(b"wake up", ("127.0.0.1", port))
                time.sleep(0.2)
        _fails(proc, notify, "fd 3 is a UDP socket, not a stream socket")
    finally:
        proc.stop()


def test_connected_socket_from_accept_mode(tmp_path: Path, notify: NotifyReceiver) -> None:
    """``--accept`` (Accept=yes) passes one connected socket per connection: not listening."""
    port = free_port()
    description = write_app(tmp_path / "app", [str(port)])
    argv = socket_activate(
        [f"127.0.0.1:{port}"],
        [*CPSYSD, "serve", "-c", str(description)],
        env={"NOTIFY_SOCKET": notify.path},
    )
    argv.insert(1, "--accept")
    proc = Proc(argv, tmp_path / "out.log")
    try:
        with connect_when_up(port) as client:
            assert client.recv(100) == b""  # the instance refuses and closes the connection
        index = notify.wait_for("STATUS")
        assert "fd 3 is a stream socket that is not listening" in notify.messages[index]["STATUS"]
        assert "Accept=no" in proc.output() or "not listening" in proc.output()
        assert "Traceback" not in proc.output()
    finally:
        proc.stop()


def test_listener_missing_from_what_systemd_passed(tmp_path: Path, notify: NotifyReceiver) -> None:
    port, other = free_ports(2)
    description = write_app(tmp_path / "app", [str(port), f"127.0.0.1:{other}=admin"])
    argv = socket_activate(
        [str(port)],
        [*CPSYSD, "serve", "-c", str(description)],
        fdnames=["http"],
        env={"NOTIFY_SOCKET": notify.path},
    )
    proc = Proc(argv, tmp_path / "out.log")
    try:
        connect_when_up(port).close()
        _fails(
            proc,
            notify,
            f"listener 127.0.0.1:{other} ('admin') is in the description "
            "but systemd did not pass it",
        )
    finally:
        proc.stop()


def test_socket_matching_no_listener(tmp_path: Path, notify: NotifyReceiver) -> None:
    port, stray = free_ports(2)
    proc = _launch(tmp_path, notify, [f"tcp:{port}", f"tcp:{stray}"], listen=str(port))
    _fails(proc, notify, f"systemd passed fd 4 [::]:{stray}, which matches no listener")


def test_debug_shows_the_traceback(tmp_path: Path, notify: NotifyReceiver) -> None:
    description = write_app(tmp_path / "app", [str(free_port())])
    argv = launch_with_fds(["pipe"], ["-c", str(description), "--debug"])
    proc = Proc(argv, tmp_path / "out.log", env={"NOTIFY_SOCKET": notify.path})
    assert proc.wait(30) == 3
    assert "Traceback" in proc.output()
    assert "cpsysd: error: fd 3 is a pipe, not a socket" in proc.output()


def test_adopted_descriptors_are_close_on_exec_and_variables_unset(tmp_path: Path) -> None:
    port = free_port()
    description = write_app(tmp_path / "app", [str(port)])
    proc = Proc(launch_with_fds([f"tcp:{port}"], ["-c", str(description)]), tmp_path / "out.log")
    try:
        seen = get_json(f"127.0.0.1:{port}")
        assert seen["env_listen"] == []  # children of the app never inherit LISTEN_*
        flags = next(
            line
            for line in Path(f"/proc/{proc.pid}/fdinfo/3").read_text().splitlines()
            if line.startswith("flags:")
        )
        assert int(flags.split()[1], 8) & 0o2000000  # O_CLOEXEC
    finally:
        assert proc.stop() == 0


def test_daemon_refused_under_systemd(tmp_path: Path) -> None:
    description = write_app(tmp_path / "app", [str(free_port())])
    proc = Proc(
        [*CPSYSD, "serve", "-c", str(description), "--daemon"],
        tmp_path / "out.log",
        env={"INVOCATION_ID": "0123456789abcdef0123456789abcdef"},
    )
    assert proc.wait(30) == 1
    assert (
        "--daemon refused: systemd supervises this process (INVOCATION_ID is set)" in proc.output()
    )
    assert "Traceback" not in proc.output()
