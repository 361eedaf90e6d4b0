"""The sd_notify lifecycle of ``cpsysd serve``, received on a real AF_UNIX datagram socket given
as NOTIFY_SOCKET: READY after listening, RELOADING/READY around SIGHUP, STOPPING, watchdog pings
that stop while every request thread hangs, EXTEND_TIMEOUT_USEC during a slow import."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from runtimekit import (
    APP_SOURCE,
    CPSYSD,
    NotifyReceiver,
    Proc,
    UnixHTTPConnection,
    free_port,
    get,
    get_when_up,
    socket_activate,
    wait_for,
    write_app,
)

from cpsysd.runtime import notify as notify_module


@pytest.fixture
def receiver(tmp_path: Path):
    notify = NotifyReceiver(tmp_path / "notify.sock")
    yield notify
    notify.close()


def _connectable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_lifecycle_ready_reload_stop(tmp_path: Path, receiver: NotifyReceiver) -> None:
    port = free_port()
    path = str(tmp_path / "second.sock")
    description = write_app(tmp_path / "app", [str(port), f"{path}=admin"], greeting="before")
    proc = Proc(
        [*CPSYSD, "serve", "-c", str(description)],
        tmp_path / "serve.log",
        env={"NOTIFY_SOCKET": receiver.path},
    )
    try:
        ready = receiver.wait_for("READY", "1")
        # READY=1 only once every server accepts: both answer right away (cpsysd binds these
        # itself here, so a connection before listen() would be refused, not queued).
        assert _connectable(port)
        assert get(path, "/") == (200, b"before\n")
        status = receiver.messages[ready]["STATUS"]
        assert status == f"Serving rt on http://[::]:{port}, unix:{path}"

        keep_alive = UnixHTTPConnection(path)
        keep_alive.request("GET", "/")
        assert keep_alive.getresponse().read() == b"before\n"

        (tmp_path / "app" / "app.conf").write_text('[app]\ngreeting = "after"\n')
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        proc.signal(signal.SIGHUP)
        reloading = receiver.wait_for("RELOADING", "1", start=ready + 1)
        assert (
            before
            <= int(receiver.messages[reloading]["MONOTONIC_USEC"])
            <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        )
        again = receiver.wait_for("READY", "1", start=reloading + 1)
        assert receiver.messages[again]["STATUS"] == status
        assert get(f"127.0.0.1:{port}", "/") == (200, b"after\n")  # same process, new config
        keep_alive.request("GET", "/")  # the connection opened before the reload still works
        assert keep_alive.getresponse().read() == b"after\n"
        keep_alive.close()
        assert proc.popen.poll() is None

        proc.signal(signal.SIGTERM)
        receiver.wait_for("STOPPING", "1", start=again + 1)
        assert proc.wait(20) == 0
        assert receiver.states() == ["READY", "RELOADING", "READY", "STOPPING"]
    finally:
        proc.stop()


def test_failed_reload_keeps_the_running_config(tmp_path: Path, receiver: NotifyReceiver) -> None:
    port = free_port()
    description = write_app(tmp_path / "app", [str(port)], greeting="kept")
    proc = Proc(
        [*CPSYSD, "serve", "-c", str(description)],
        tmp_path / "serve.log",
        env={"NOTIFY_SOCKET": receiver.path},
    )
    try:
        ready = receiver.wait_for("READY", "1")
        (tmp_path / "app" / "app.conf").write_text("[app]\ngreeting = unquoted words\n")
        proc.signal(signal.SIGHUP)
        again = receiver.wait_for("READY", "1", start=ready + 1)
        assert "last reload failed: invalid CherryPy config" in receiver.messages[again]["STATUS"]
        assert get(f"127.0.0.1:{port}", "/") == (200, b"kept\n")
    finally:
        assert proc.stop() == 0
    assert "reload failed, keeping the previous settings" in proc.output()


def test_ready_under_socket_activation(tmp_path: Path, receiver: NotifyReceiver) -> None:
    port = free_port()
    description = write_app(tmp_path / "app", [str(port)])
    argv = socket_activate(
        [str(port)],
        [*CPSYSD, "serve", "-c", str(description)],
        env={"NOTIFY_SOCKET": receiver.path},
    )
    proc = Proc(argv, tmp_path / "serve.log")
    try:
        time.sleep(0.2)
        assert get_when_up(f"127.0.0.1:{port}", "/")[0] == 200
        index = receiver.wait_for("READY", "1")
        assert receiver.messages[index]["STATUS"] == f"Serving rt on http://[::]:{port}"
    finally:
        assert proc.stop() == 0
    assert receiver.states() == ["READY", "STOPPING"]


def test_no_ready_when_a_start_listener_of_the_app_fails(
    tmp_path: Path, receiver: NotifyReceiver
) -> None:
    """CherryPy runs the remaining start listeners after one raised: the servers start and
    READY=1 would follow, then the engine exits. systemd must never hear READY=1."""
    port = free_port()
    failing = APP_SOURCE + (
        "\n\ndef _open_database():\n    raise RuntimeError('the orders database is gone')\n\n\n"
        "cherrypy.engine.subscribe('start', _open_database, priority=50)\n"
    )
    description = write_app(tmp_path / "app", [str(port)], app_source=failing)
    argv = socket_activate(
        [str(port)],
        [*CPSYSD, "serve", "-c", str(description)],
        env={"NOTIFY_SOCKET": receiver.path},
    )
    proc = Proc(argv, tmp_path / "serve.log")
    try:
        wait_for(lambda: _connectable(port), what="systemd-socket-activate")  # starts it
        assert proc.wait(60) != 0, proc.output()
    finally:
        proc.stop()
    assert "READY" not in receiver.states(), receiver.messages
    assert "the orders database is gone" in proc.output()


def _hang_all_threads(port: int, seconds: float) -> list[threading.Thread]:
    """The test app has server.thread_pool = 2: two /hang requests occupy every thread."""
    threads = [
        threading.Thread(
            target=get, args=(f"127.0.0.1:{port}", f"/hang?seconds={seconds}", 60), daemon=True
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    return threads


def test_watchdog_pings_stop_while_the_app_hangs(tmp_path: Path, receiver: NotifyReceiver) -> None:
    port = free_port()
    description = write_app(tmp_path / "app", [str(port)])
    proc = Proc(
        [*CPSYSD, "serve", "-c", str(description)],
        tmp_path / "serve.log",
        env={"NOTIFY_SOCKET": receiver.path, "WATCHDOG_USEC": "1000000"},
    )  # ping every 0.5 s
    try:
        ready = receiver.wait_for("READY", "1")
        first = receiver.wait_for("WATCHDOG", "1", start=ready)
        receiver.wait_for("WATCHDOG", "1", start=first + 1)  # pings keep coming while healthy

        receiver.poll()
        mark = len(receiver.messages)  # a slow probe before the hang may have said it already
        # The hang must outlast its detection plus the 1.6 s below, also on a loaded machine.
        threads = _hang_all_threads(port, seconds=6)
        stuck = receiver.wait_for(
            "STATUS", "Not answering: every request thread is busy or stuck", start=mark
        )
        time.sleep(1.6)  # three more watchdog periods
        receiver.poll()
        assert "WATCHDOG" not in receiver.states()[stuck + 1 :], receiver.messages[stuck:]
        print(
            f"\nwatchdog: {receiver.states()[:stuck].count('WATCHDOG')} pings, then none while hung"
        )

        for thread in threads:  # the hang ends after 6 s: the pings resume
            thread.join(20)
        recovered = receiver.wait_for("WATCHDOG", "1", start=stuck + 1)
        assert (
            receiver.wait_for("STATUS", f"Serving rt on http://[::]:{port}", start=stuck + 1)
            <= recovered + 1
        )
    finally:
        assert proc.stop() == 0
    assert "watchdog: no request thread answered" in proc.output()


def test_no_pings_when_the_watchdog_is_for_another_pid(
    tmp_path: Path, receiver: NotifyReceiver
) -> None:
    port = free_port()
    description = write_app(tmp_path / "app", [str(port)])
    proc = Proc(
        [*CPSYSD, "serve", "-c", str(description)],
        tmp_path / "serve.log",
        env={"NOTIFY_SOCKET": receiver.path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"},
    )
    try:
        receiver.wait_for("READY", "1")
        time.sleep(0.8)  # eight periods of 0.1 s
        assert "WATCHDOG" not in receiver.states()
    finally:
        assert proc.stop() == 0


def test_extend_timeout_while_a_start_is_slow(
    tmp_path: Path, receiver: NotifyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.path)
    with notify_module.StartupExtender("Importing slow:app", grace=0.1, every=0.1) as extender:
        time.sleep(1.0)
    receiver.poll()  # leaving the block waited for a send under way: nothing comes after it
    extensions = [m for m in receiver.messages if "EXTEND_TIMEOUT_USEC" in m]
    assert len(extensions) == extender.extensions >= 2
    assert all(m["EXTEND_TIMEOUT_USEC"] == "200000" for m in extensions)
    assert extensions[0]["STATUS"].startswith("Importing slow:app (")
    time.sleep(0.5)
    receiver.poll()
    assert len([m for m in receiver.messages if "EXTEND_TIMEOUT_USEC" in m]) == len(
        extensions
    )  # stopped


@pytest.mark.slow
def test_slow_import_extends_the_start_timeout(tmp_path: Path, receiver: NotifyReceiver) -> None:
    port = free_port()
    slow_app = "import time\ntime.sleep(6.5)  # a slow import\n" + APP_SOURCE
    description = write_app(tmp_path / "app", [str(port)], app_source=slow_app)
    proc = Proc(
        [*CPSYSD, "serve", "-c", str(description)],
        tmp_path / "serve.log",
        env={"NOTIFY_SOCKET": receiver.path},
    )
    try:
        extend = receiver.wait_for("EXTEND_TIMEOUT_USEC", timeout=30)
        assert receiver.messages[extend]["STATUS"].startswith("Importing testapp:Root (")
        ready = receiver.wait_for("READY", "1", timeout=30)
        assert extend < ready
    finally:
        assert proc.stop() == 0


def test_notify_is_silent_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify_module.ready("x") is False
    assert os.environ.get("NOTIFY_SOCKET") is None


SLOW_IMPORT = 'open("importing", "w").close()\nimport time\ntime.sleep(1.5)\n'


def test_sighup_during_the_start_is_held_until_ready(
    tmp_path: Path, receiver: NotifyReceiver
) -> None:
    port = free_port()
    description = write_app(tmp_path / "app", [str(port)], app_source=SLOW_IMPORT + APP_SOURCE)
    proc = Proc(
        [*CPSYSD, "serve", "-c", str(description)],
        tmp_path / "serve.log",
        env={"NOTIFY_SOCKET": receiver.path},
    )
    try:
        wait_for(lambda: (tmp_path / "app" / "importing").exists(), what="the import")
        proc.signal(signal.SIGHUP)  # would kill a process without a SIGHUP handler
        ready = receiver.wait_for("READY", "1")
        reloading = receiver.wait_for("RELOADING", "1", start=ready + 1)
        receiver.wait_for("READY", "1", start=reloading + 1)
        assert get(f"127.0.0.1:{port}", "/") == (200, b"hello\n")
    finally:
        assert proc.stop() == 0
    assert receiver.states() == ["READY", "RELOADING", "READY", "STOPPING"]


def test_sigterm_during_the_import_exits_cleanly(tmp_path: Path, receiver: NotifyReceiver) -> None:
    description = write_app(
        tmp_path / "app", [str(free_port())], app_source=SLOW_IMPORT + APP_SOURCE
    )
    proc = Proc(
        [*CPSYSD, "serve", "-c", str(description)],
        tmp_path / "serve.log",
        env={"NOTIFY_SOCKET": receiver.path},
    )
    wait_for(lambda: (tmp_path / "app" / "importing").exists(), what="the import")
    proc.signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert "cpsysd: stopped (SIGTERM) before serving" in proc.output()
    assert "Traceback" not in proc.output()
    assert "READY" not in receiver.states()
