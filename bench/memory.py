"""Memory: RSS and PSS (/proc/PID/smaps_rollup) of idle servers after a few requests:
``cpsysd serve`` vs plain CherryPy; N instances vs gunicorn's master + workers and uWSGI."""

from __future__ import annotations

import time

from benchlib import Procs, Samples, Section, free_port, http_get, tree_memory_kib
from config import Config
from scaling import CPSYSD_1, CPSYSD_2, GUNICORN_GTHREAD, GUNICORN_SYNC, PLAIN_1, UWSGI
from servers import PLAIN, Contender, cpsysd_activated

CONTENDERS: tuple[Contender, ...] = (
    cpsysd_activated(),
    PLAIN,
    CPSYSD_1,
    CPSYSD_2,
    PLAIN_1,
    GUNICORN_SYNC,
    GUNICORN_GTHREAD,
    UWSGI,
)


def idle_memory(contender: Contender) -> tuple[int, int, int]:
    """(RSS, PSS, processes) in KiB of the server after 50 requests and a second of rest."""
    with Procs() as procs:
        port = free_port()
        roots = contender.start(procs, port)
        for _ in range(50):
            http_get(port)
        time.sleep(1.0)
        rss = pss = count = 0
        for root in roots:
            r, p, c = tree_memory_kib(root)
            rss, pss, count = rss + r, pss + p, count + c
        return rss, pss, count


def run(cfg: Config) -> Section:
    section = Section("Memory")
    rounds = 1 if cfg.quick else 2
    rss: dict[str, Samples] = {c.name: Samples() for c in CONTENDERS}
    pss: dict[str, Samples] = {c.name: Samples() for c in CONTENDERS}
    counts: dict[str, int] = {}
    for _ in range(rounds):
        for contender in CONTENDERS:
            r, p, counts[contender.name] = idle_memory(contender)
            rss[contender.name].add(r / 1024)
            pss[contender.name].add(p / 1024)
    for contender in CONTENDERS:
        name = contender.name
        section.row(
            f"idle memory: {name}",
            f"RSS {rss[name].median:.1f} MiB, PSS {pss[name].median:.1f} MiB",
            "",
            "",
            f"{counts[name]} process(es)",
        )
    ours, theirs = CONTENDERS[0].name, PLAIN.name
    section.row(
        f"RSS {ours} / {theirs}",
        "",
        f"{rss[ours].median / rss[theirs].median:.2f}x",
    )
    two, gunicorn = CPSYSD_2.name, GUNICORN_SYNC.name
    section.row(
        f"PSS {two} / {gunicorn} (master + 2 workers)",
        "",
        f"{pss[two].median / pss[gunicorn].median:.2f}x",
    )
    section.headline.append(
        f"Memory (idle, after 50 requests): `cpsysd serve` RSS {rss[ours].median:.1f} MiB vs "
        f"{rss[theirs].median:.1f} MiB for plain CherryPy; 2 instances PSS "
        f"{pss[two].median:.1f} MiB vs {pss[gunicorn].median:.1f} MiB for gunicorn "
        "(master + 2 sync workers)."
    )
    section.details.append(
        "Each server is started alone, sent 50 requests, left idle for a second; then the "
        "RSS and PSS of every process of it (children included) are summed from "
        "/proc/PID/smaps_rollup. PSS divides pages shared between processes (gunicorn's and "
        "uWSGI's forked workers share the master's pages; separate `cpsysd serve` instances "
        "share only the interpreter's and libraries' file pages), so it is the fairer sum "
        "for several processes. The socket-activated `cpsysd serve` and quickstart figures "
        "are of the server process only (systemd-socket-activate execs it)."
    )
    return section
