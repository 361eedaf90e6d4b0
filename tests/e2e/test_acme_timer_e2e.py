"""The real ``NAME-cert-renew.timer`` renews a short-lived certificate from pebble on its own, under
a real systemd (cpsysd.harness.container), while four HTTPS clients loop on the app.

Pebble issues certificates valid for :data:`VALIDITY` seconds (its ``certificateValidityPeriod``),
so the job's own rule (two thirds of the lifetime, less the serial's jitter) comes due within a
minute; only the timer's schedule is shortened, by a drop-in of this test. First the CA refuses:
its DNS sends the name to an address nothing answers on, the timer's job fails, the old
certificate keeps serving and ``systemctl show -p StatusText`` names the cause. Then the DNS is
right again, the retry state is removed (it stands in for the hour of backoff), the next timer run
renews, restarts the app, and the clients see the new serial with no failed request."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from cpsysd.description.load import Listener, TLSConfig
from cpsysd.harness.container import Container
from tests.e2e.e2etools import SYSTEM_PYTHON, example_spec, install_app, wait_until
from tests.e2e.test_acme_e2e import DIRECTORY, HOST, PEBBLE, TLS_DIR, start_pebble

pytestmark = pytest.mark.e2e

VALIDITY = 90  # seconds: due after 54 to 60 s
TIMER_DROPIN = "/etc/systemd/system/hello-cert-renew.timer.d/test-every-5s.conf"
STOP_FILE, READY_FILE = "/run/https-load-stop", "/run/https-load-ready"

# Four clients in one process (Debian's python3 in the container): a new TLS connection per
# request, verified against pebble's root and the name; bounded by time and count, stopped by a
# file. Reports the counts and the served serials in the order they first appeared.
HTTPS_CLIENTS = r"""
import json, os, socket, ssl, sys, threading, time
host, cafile, seconds, limit = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
stop_file, ready_file = sys.argv[5], sys.argv[6]
deadline = time.monotonic() + seconds
context = ssl.create_default_context(cafile=cafile)
lock = threading.Lock()
state = {"ok": 0, "failed": 0, "errors": [], "serials": []}
request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()

def one():
    with socket.create_connection(("127.0.0.1", 443), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(request)
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            serial = tls.getpeercert()["serialNumber"]
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(data[:60])
    return serial

def client():
    after_stop = 0
    while time.monotonic() < deadline and after_stop < 20:
        with lock:
            if state["ok"] + state["failed"] >= limit:
                return
        try:
            serial, error = one(), None
        except Exception as err:
            serial, error = None, f"{type(err).__name__}: {err}"
        with lock:
            if error is None:
                state["ok"] += 1
                if serial not in state["serials"]:
                    state["serials"].append(serial)
            else:
                state["failed"] += 1
                state["errors"] = (state["errors"] + [error])[:5]
            if state["ok"] == 20:
                open(ready_file, "w").close()
        if os.path.exists(stop_file):
            after_stop += 1

threads = [threading.Thread(target=client) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(state))
"""


class HttpsLoad:
    """:data:`HTTPS_CLIENTS` inside ``box`` (from a thread here) until :meth:`finish`."""

    def __init__(self, box: Container, cafile: str, seconds: float = 300) -> None:
        self.box = box
        argv = [SYSTEM_PYTHON, "-c", HTTPS_CLIENTS, HOST, cafile, str(seconds), "400000"]
        argv += [STOP_FILE, READY_FILE]
        self.result: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(argv, seconds + 60), daemon=True)
        self.thread.start()
        wait_until(self._ready, what="the HTTPS clients' first 20 answers")

    def _ready(self) -> bool:
        if not self.thread.is_alive():
            raise AssertionError(f"the HTTPS clients stopped early: {self.error or self.result}")
        return self.box.run(["test", "-e", READY_FILE], check=False).returncode == 0

    def _run(self, argv: list[str], timeout: float) -> None:
        try:
            self.result = json.loads(self.box.run(argv, timeout=timeout).stdout)
        except BaseException as err:  # reported by finish()
            self.error = err

    def finish(self) -> dict[str, Any]:
        self.box.run(["touch", STOP_FILE])
        self.thread.join(timeout=120)
        if self.error is not None:
            raise self.error
        return self.result


def served_serial(box: Container) -> int:
    script = (
        f"openssl s_client -connect 127.0.0.1:443 -servername {HOST} </dev/null 2>/dev/null "
        "| openssl x509 -noout -serial"
    )
    return int(box.sh(script).stdout.strip().removeprefix("serial="), 16)


def status_text(box: Container) -> str:
    return box.run(["systemctl", "show", "-p", "StatusText", "--value", "hello.service"]).stdout


def pebble_dns(box: Container, command: str, **request: object) -> None:
    """pebble-challtestsrv's management API: what its DNS answers for a name."""
    box.run(
        ["curl", "-sf", "-X", "POST", "-d", json.dumps(request), f"http://127.0.0.1:8055/{command}"]
    )


def test_the_timer_renews_under_load_and_status_names_a_failure(container: Container) -> None:
    box = container
    start_pebble(box, validity=VALIDITY)
    config = TLSConfig(
        cert=f"{TLS_DIR}/hello.crt",
        key=f"{TLS_DIR}/hello.key",
        acme=DIRECTORY,
        acme_ca_bundle=f"{PEBBLE}/https.pem",
        hosts=(HOST,),
    )
    listeners = (Listener("http", False, port=80), Listener("https", True, port=443))
    install_app(box, example_spec(listeners=listeners, tls=config))
    box.sh(f"curl -sf --cacert {PEBBLE}/https.pem https://127.0.0.1:15000/roots/0 > /root/root.pem")
    first = served_serial(box)
    # The only test-made change: the timer fires every 5 s instead of hourly at a random minute.
    timer = "[Timer]\nOnCalendar=\nOnCalendar=*:*:0/5\nRandomizedDelaySec=0\nAccuracySec=1s\n"
    box.write_file(TIMER_DROPIN, timer)
    box.run(["systemctl", "daemon-reload"])
    box.run(["systemctl", "restart", "hello-cert-renew.timer"])
    listed = box.run(["systemctl", "list-timers", "--all", "hello-cert-renew.timer"]).stdout
    assert "hello-cert-renew.service" in listed, listed
    # The CA refuses: its DNS sends the name to an address where nothing answers.
    pebble_dns(box, "add-a", host=f"{HOST}.", addresses=["192.0.2.1"])
    load = HttpsLoad(box, "/root/root.pem")
    try:
        wait_until(
            lambda: "certificate renewal failing since" in status_text(box),
            timeout=VALIDITY + 40,
            what="the renewal failure in hello.service's StatusText",
        )
        failing = status_text(box)
        assert f"the CA could not validate {HOST}" in failing, failing
        assert failing.startswith("Serving hello on "), failing
        # The timer's job failed (its later runs wait out the backoff and succeed, so the
        # journal, not the unit's Result=, keeps the failure).
        journal = box.journal("hello-cert-renew.service")
        assert "Failed with result 'exit-code'" in journal, journal
        assert served_serial(box) == first  # the old certificate keeps serving
        # The name resolves again; the retry state's removal stands in for the hour of backoff.
        pebble_dns(box, "clear-a", host=f"{HOST}.")
        box.run(["rm", f"{TLS_DIR}/hello.crt.acme-retry"])
        wait_until(
            lambda: served_serial(box) != first,
            timeout=60,
            what="the timer's job to renew and restart the app",
        )
        wait_until(lambda: "failing" not in status_text(box), what="StatusText to clear")
    finally:
        counts = load.finish()
    journal = box.journal("hello-cert-renew.service")
    assert "restarted hello.service" in journal
    assert "due since" in journal
    second = served_serial(box)
    print(
        f"HTTPS load through the renewal: {counts['ok']} ok, {counts['failed']} failed; "
        f"serials {first:x} -> {second:x}; seen {counts['serials']}"
    )
    assert counts["failed"] == 0, counts["errors"]
    seen = [int(serial, 16) for serial in counts["serials"]]
    assert seen[0] == first, seen
    assert seen[-1] == second, seen  # (a third appears only if the test ran past the next due)
    assert box.run(["test", "-e", "/run/cpsysd/acme-status/hello/failure"], check=False).returncode
