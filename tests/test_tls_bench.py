"""How long a key plus a self-signed certificate takes: in-process (cpsysd.tls.pki), as the
``cpsysd cert selfsigned`` command, and with the two openssl commands of CherryPy's deployment
guide (``openssl genrsa -out privkey.pem 2048``, ``openssl req -new -x509 -days 365 -key
privkey.pem -out cert.pem``). Printed for the benchmark notes, never asserted (timings vary).

``python tests/test_tls_bench.py`` prints the same table."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cpsysd.tls import pki as tls

ROUNDS = 3


def _median_ms(action: Callable[[int], object], rounds: int = ROUNDS) -> float:
    times = []
    for index in range(rounds):
        start = time.perf_counter()
        action(index)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _run(argv: list[str], cwd: Path) -> None:
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True)


def measure_creation_times(directory: Path) -> list[tuple[str, float]]:
    """(what, median milliseconds) for each way of making a key and a self-signed cert."""
    results = []
    for key_type in (tls.KeyType.EC_P256, tls.KeyType.RSA_2048):
        results.append(
            (
                f"in-process, {key_type.value}",
                _median_ms(lambda _i, kt=key_type: tls.self_signed_cert("localhost", key_type=kt)),
            )
        )
    for key_type in (tls.KeyType.EC_P256, tls.KeyType.RSA_2048):

        def command(index: int, kt: tls.KeyType = key_type) -> None:
            _run(
                [
                    sys.executable,
                    "-m",
                    "cpsysd",
                    "cert",
                    "selfsigned",
                    "--cert",
                    f"c-{kt}-{index}.pem",
                    "--key",
                    f"k-{kt}-{index}.pem",
                    "--key-type",
                    kt.value,
                    "localhost",
                ],
                directory,
            )

        results.append((f"cpsysd cert selfsigned, {key_type.value} (process)", _median_ms(command)))

    def guide(index: int) -> None:
        _run(["openssl", "genrsa", "-out", f"privkey-{index}.pem", "2048"], directory)
        _run(
            [
                "openssl",
                "req",
                "-new",
                "-x509",
                "-days",
                "365",
                "-key",
                f"privkey-{index}.pem",
                "-out",
                f"cert-{index}.pem",
                "-subj",
                "/CN=localhost",
            ],
            directory,
        )

    results.append(("openssl genrsa 2048 + req -new -x509 (guide)", _median_ms(guide)))
    return results


def format_table(results: list[tuple[str, float]]) -> str:
    lines = [f"key + self-signed certificate, median of {ROUNDS}:"]
    lines += [f"  {what:<52} {ms:8.1f} ms" for what, ms in results]
    return "\n".join(lines)


@pytest.mark.slow
def test_print_creation_times(tmp_path: Path) -> None:
    results = measure_creation_times(tmp_path)
    assert len(results) == 5
    print("\n" + format_table(results))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        print(format_table(measure_creation_times(Path(scratch))))
