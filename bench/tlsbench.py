"""TLS: key + certificate creation in-process (cpsysd.tls.pki) vs the openssl commands of CherryPy's
deployment guide; HTTPS throughput and new-handshake rate of ``cpsysd serve`` vs plain HTTP."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from benchlib import COMMANDS, HELLO_DIR, PYTHON, Procs, Samples, Section, ratio_samples
from config import Config
from servers import CPSYSD_SERVE, Contender, compare, cpu, p99, rps, start_activated

TIMER = """
import sys, time
from cpsysd.tls.pki import KeyType, self_signed_cert
kind = KeyType(sys.argv[1])
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    leaf = self_signed_cert("localhost", "127.0.0.1", key_type=kind)
    leaf.private_key_pem().bytes(); leaf.cert_pem.bytes()
    times.append(time.perf_counter() - start)
print(*times)
"""


def inprocess_seconds(key_type: str, runs: int) -> Samples:
    """Per-run seconds of ``self_signed_cert`` (key + cert + PEM) in one warm process."""
    argv = [PYTHON, "-c", TIMER, key_type, str(runs)]
    COMMANDS.add([PYTHON, "-c", "<bench/tlsbench.py TIMER>", key_type, str(runs)])
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300).stdout
    return Samples([float(x) for x in out.split()])


def openssl_seconds(runs: int, tmp: Path) -> Samples:
    """The deployment guide's two commands (RSA 2048, self-signed for 365 days), per run."""
    key, cert = tmp / "privkey.pem", tmp / "cert.pem"
    commands = [
        ["openssl", "genrsa", "-out", str(key), "2048"],
        ["openssl", "req", "-new", "-x509", "-days", "365", "-key", str(key), "-out", str(cert),
         "-subj", "/CN=localhost"],
    ]  # fmt: skip
    for argv in commands:
        COMMANDS.add(argv)
    samples = Samples()
    for _ in range(runs):
        start = time.perf_counter()
        for argv in commands:
            subprocess.run(argv, check=True, capture_output=True, timeout=60)
        samples.add(time.perf_counter() - start)
    return samples


def cli_seconds(runs: int, tmp: Path, key_type: str) -> Samples:
    """``cpsysd cert selfsigned`` end to end (new process, writes key 0600 and cert)."""
    samples = Samples()
    for i in range(runs):
        argv = [PYTHON, "-m", "cpsysd", "cert", "selfsigned", "localhost", "--key-type", key_type,
                "--cert", str(tmp / f"c{i}.pem"), "--key", str(tmp / f"k{i}.pem")]  # fmt: skip
        if i == 0:
            COMMANDS.add(argv)
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, timeout=60, cwd="/")
        samples.add(time.perf_counter() - start)
    return samples


def tls_description(tmp: Path, cert: Path, key: Path) -> Path:
    """The example app with one HTTPS listener (the socket name ``https`` means TLS)."""
    path = tmp / "tls.toml"
    path.write_text(
        f'name = "hello-tls"\nentry = "hello:Root"\nworking_directory = "{HELLO_DIR}"\n'
        f'config = "{HELLO_DIR / "app.conf"}"\nlisten = ["8443=https"]\n'
        f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'
    )
    return path


def activated(name: str, argv: list[str], fdname: str) -> Contender:
    def start(procs: Procs, port: int) -> list[int]:
        return [start_activated(procs, port, argv, fdname=fdname).pid]

    return Contender(name, start, "https" if fdname == "https" else "http")


def run(cfg: Config) -> Section:
    section = Section("TLS")
    runs = 3 if cfg.quick else 10
    with tempfile.TemporaryDirectory(prefix="cpsysd-bench-tls-") as name:
        tmp = Path(name)
        openssl_label = "openssl genrsa 2048 + openssl req -x509 (2 processes)"
        creation: dict[str, Samples] = {
            "cpsysd.tls.pki in-process, EC P-256 (the default)": inprocess_seconds("ec-p256", runs),
            "cpsysd.tls.pki in-process, RSA 2048": inprocess_seconds("rsa-2048", runs),
            openssl_label: openssl_seconds(runs, tmp),
            "cpsysd cert selfsigned (new process, EC P-256)": cli_seconds(runs, tmp, "ec-p256"),
        }
        subprocess.run(
            [PYTHON, "-m", "cpsysd", "cert", "selfsigned", "localhost", "127.0.0.1",
             "--cert", str(tmp / "srv.pem"), "--key", str(tmp / "srv.key")],
            check=True, capture_output=True, timeout=60, cwd="/",
        )  # fmt: skip
        toml = tls_description(tmp, tmp / "srv.pem", tmp / "srv.key")
        https = activated("HTTPS", [PYTHON, "-m", "cpsysd", "serve", "-c", str(toml)], "https")
        http = activated("HTTP", CPSYSD_SERVE, "http")
        keep = compare([http, https], [16], cfg.reps, cfg.duration)
        close = compare([http, https], [16], cfg.reps, cfg.duration, ["Connection: close"])
    openssl = creation[openssl_label]
    for label, samples in creation.items():
        ratio = ratio_samples(openssl, samples)
        section.row(
            f"create key + self-signed cert: {label}",
            f"{samples.median * 1000:.1f} ms",
            f"{ratio.median:.1f}x" if label != openssl_label else "",
            samples.spread(),
            "ratio = openssl's time / this" if label != openssl_label else "",
        )
    fast = creation["cpsysd.tls.pki in-process, EC P-256 (the default)"]
    for title, results in (("keep-alive", keep), ("new connection per request", close)):
        ours, plain = results[("HTTPS", 16)], results[("HTTP", 16)]
        ratio = ratio_samples(rps(ours), rps(plain))
        section.row(
            f"cpsysd serve HTTPS / HTTP req/s, {title}, 16 conns",
            f"{rps(ours).median:.0f} / {rps(plain).median:.0f}",
            f"{ratio.median:.2f}x",
            ratio.spread(),
            f"p99 {p99(ours).median:.1f} / {p99(plain).median:.1f} ms, "
            f"CPU {cpu(ours).median:.0f} / {cpu(plain).median:.0f} us/req",
        )
    handshakes = rps(close[("HTTPS", 16)]).median
    section.headline.append(
        f"TLS: a key and self-signed certificate in-process take "
        f"{fast.median * 1000:.1f} ms (EC P-256) vs {openssl.median * 1000:.0f} ms for the "
        f"deployment guide's two openssl commands; HTTPS keeps "
        f"{ratio_samples(rps(keep[('HTTPS', 16)]), rps(keep[('HTTP', 16)])).median:.2f}x of "
        f"plain HTTP's keep-alive throughput and does {handshakes:.0f} new handshakes/s."
    )
    section.details.append(
        'Creation: `self_signed_cert("localhost", "127.0.0.1")` timed in one warm process '
        "(key, certificate, both PEM-encoded), vs `openssl genrsa -out privkey.pem 2048` plus "
        "`openssl req -new -x509 -days 365 -key privkey.pem -out cert.pem` as in CherryPy's "
        "deployment guide (RSA 2048; the subject given with -subj instead of typed in), and "
        "the whole `cpsysd cert selfsigned` command (interpreter start, writes both files). "
        "Serving: two `cpsysd serve` under systemd-socket-activate, one with a socket named "
        "`https` (TLS with the EC P-256 certificate; Mozilla intermediate settings, TLS 1.3 "
        "negotiated by wrk), one plain; `Connection: close` makes wrk open a new connection, "
        "so a new TLS handshake, for every request."
    )
    return section
