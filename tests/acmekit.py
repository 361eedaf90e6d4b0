"""A real ACME CA for the tests: Debian's ``pebble`` (RFC 8555 test server) on loopback, with
real challenge validation (never PEBBLE_VA_ALWAYS_VALID), resolving every name through
``pebble-challtestsrv``'s DNS server to 127.0.0.1 (its default A answer; no AAAA), so the test
names reach the app on loopback and the machine's resolver is never touched. Both processes are
stopped by PID, also when a test fails."""

from __future__ import annotations

import contextlib
import json
import shutil
import ssl
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runtimekit import Proc, free_ports

from cpsysd.tls import certfiles
from cpsysd.tls.pki import KeyType


@dataclass(frozen=True)
class Pebble:
    directory: str  # the ACME directory URL
    management: str  # https://127.0.0.1:PORT: /roots/0, /intermediates/0
    ca_bundle: Path  # the CA of pebble's own HTTPS certificate
    http_port: int  # where pebble's VA sends http-01 requests: the app's plain listener
    log: Path
    pid: int  # pebble's own: a fault test kills the CA mid-order
    argv: tuple[str, ...]  # and starts it again on the same ports
    env: dict[str, str]

    def root_pem(self) -> bytes:
        """Pebble's issuing root, from its management interface (made afresh at each start)."""
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(f"{self.management}/roots/0", context=context) as response:
            return bytes(response.read())


def available() -> bool:
    return bool(shutil.which("pebble") and shutil.which("pebble-challtestsrv"))


def wait_directory(url: str, ca_bundle: Path, proc: Proc, timeout: float = 20) -> None:
    context = ssl.create_default_context(cafile=str(ca_bundle))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, context=context, timeout=2):
                return
        except OSError:
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pebble did not start:\n{proc.output()}") from None
            time.sleep(0.1)


@contextlib.contextmanager
def running_pebble(workdir: Path, tls_port: int | None = None) -> Iterator[Pebble]:
    """Pebble and its DNS server; ``tls_port``: where its VA sends tls-alpn-01 handshakes (the
    app's https listener; a free port otherwise)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = workdir / "pebble-https.pem", workdir / "pebble-https.key"
    certfiles.make_self_signed(cert, key, ["127.0.0.1", "localhost"], KeyType.EC_P256, 2)
    acme_port, management_port, dns_port, dns_management, http_port, free_tls = free_ports(6)
    tls_port = tls_port or free_tls
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{acme_port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (workdir / "pebble.json").write_text(json.dumps(config))
    with contextlib.ExitStack() as stack:
        dns = Proc(
            [
                "pebble-challtestsrv",
                "-dns01",
                f"127.0.0.1:{dns_port}",
                "-defaultIPv6",
                "",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                f"127.0.0.1:{dns_management}",
            ],
            workdir / "dns.log",
        )
        stack.callback(dns.stop)
        argv = (
            "pebble",
            "-config",
            str(workdir / "pebble.json"),
            "-dnsserver",
            f"127.0.0.1:{dns_port}",
        )
        # No random 0-15 s validation sleeps; no deliberately rejected nonces (the library
        # retries one, a second in a row would make a test flaky, not better).
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        pebble = Proc(argv, workdir / "pebble.log", env=env)
        stack.callback(pebble.stop)
        directory = f"https://127.0.0.1:{acme_port}/dir"
        wait_directory(directory, cert, pebble)
        yield Pebble(
            directory,
            f"https://127.0.0.1:{management_port}",
            cert,
            http_port,
            pebble.log,
            pebble.pid,
            argv,
            env,
        )
