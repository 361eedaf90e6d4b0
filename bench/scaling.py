"""Scaling on this machine's cores: N processes on one port (SO_REUSEPORT, as the NAME@i.socket
units of ``worker_mode = "reuseport"`` make them) vs one, and vs gunicorn (sync, gthread) and
uWSGI with 2 processes serving the same app as WSGI."""

from __future__ import annotations

from functools import partial

from benchlib import Load, Section, ratio_samples
from config import Config
from servers import (
    CPSYSD_PRODUCTION,
    PLAIN_CHERRYPY,
    compare,
    cpu,
    gunicorn_argv,
    p99,
    reuseport_contender,
    rps,
    uwsgi_argv,
    wsgi_contender,
)

CONNS = 64
GTHREADS = 4

CPSYSD_1 = reuseport_contender("cpsysd serve x1", CPSYSD_PRODUCTION, 1)
CPSYSD_2 = reuseport_contender("cpsysd serve x2", CPSYSD_PRODUCTION, 2)
PLAIN_1 = reuseport_contender("cherrypy.quickstart x1", PLAIN_CHERRYPY, 1)
PLAIN_2 = reuseport_contender("cherrypy.quickstart x2", PLAIN_CHERRYPY, 2)
GUNICORN_SYNC = wsgi_contender("gunicorn sync -w2", partial(gunicorn_argv, worker_class="sync"))
GUNICORN_GTHREAD = wsgi_contender(
    f"gunicorn gthread -w2 --threads {GTHREADS}",
    partial(gunicorn_argv, worker_class="gthread", threads=GTHREADS),
)
UWSGI = wsgi_contender("uWSGI --processes 2", uwsgi_argv)
ALL = (CPSYSD_1, CPSYSD_2, PLAIN_1, PLAIN_2, GUNICORN_SYNC, GUNICORN_GTHREAD, UWSGI)


def run(cfg: Config) -> Section:
    section = Section("Scaling")
    results = compare(ALL, [CONNS], cfg.reps, cfg.duration)

    def of(name: str) -> list[Load]:
        return results[(name, CONNS)]

    for contender in ALL:
        loads = of(contender.name)
        section.row(
            f"{contender.name}, {CONNS} conns",
            f"{rps(loads).median:.0f} req/s",
            "",
            rps(loads).spread(),
            f"p99 {p99(loads).median:.1f} ms, {cpu(loads).median:.0f} us CPU/req",
        )
    pairs = (
        (CPSYSD_2, CPSYSD_1, "goal >= 1.9"),
        (PLAIN_2, PLAIN_1, "baseline measured before: 2.1"),
        (CPSYSD_2, GUNICORN_SYNC, "goal >= 1.1"),
        (CPSYSD_2, GUNICORN_GTHREAD, ""),
        (CPSYSD_2, UWSGI, "goal >= 1.0"),
        (CPSYSD_2, PLAIN_2, ""),
    )
    ratios = {}
    for num, den, goal in pairs:
        ratio = ratio_samples(rps(of(num.name)), rps(of(den.name)))
        ratios[(num, den)] = ratio
        section.row(
            f"req/s: {num.name} / {den.name}", "", f"{ratio.median:.2f}x", ratio.spread(), goal
        )
    cost = ratio_samples(cpu(of(CPSYSD_2.name)), cpu(of(UWSGI.name)))
    section.row(
        f"server CPU per request: {CPSYSD_2.name} / {UWSGI.name}",
        f"{cpu(of(CPSYSD_2.name)).median:.0f} / {cpu(of(UWSGI.name)).median:.0f} us",
        f"{cost.median:.2f}x",
        cost.spread(),
        "goal <= 1.10",
    )
    section.headline.append(
        f"Two `cpsysd serve` instances on one port (ReusePort) serve "
        f"**{ratios[(CPSYSD_2, CPSYSD_1)].median:.2f}x** one instance, "
        f"**{ratios[(CPSYSD_2, GUNICORN_SYNC)].median:.2f}x** gunicorn (sync, 2 workers), "
        f"**{ratios[(CPSYSD_2, GUNICORN_GTHREAD)].median:.2f}x** gunicorn "
        f"(gthread, 2x{GTHREADS}) and "
        f"**{ratios[(CPSYSD_2, UWSGI)].median:.2f}x** uWSGI (2 processes), same app, 2 cores."
    )
    section.details.append(
        f"All serve `examples/hello` at {CONNS} keep-alive connections (gunicorn's sync worker "
        "closes every connection; wrk reconnects). `xN`: N processes, each passed its own "
        "SO_REUSEPORT + TCP_NODELAY socket on the same port as fd 3 with LISTEN_FDS/LISTEN_PID/"
        "LISTEN_FDNAMES (`bench/apps/exec_with_fd3.py`), as systemd does for the `NAME@i.socket` "
        "units with `ReusePort=yes`; the kernel spreads connections by hash. gunicorn and uWSGI "
        "run `bench/apps/wsgi_hello.py`: the same CherryPy app as a WSGI callable. cpsysd serve, "
        "gunicorn and uWSGI (Debian's 2.0.21) run it with the same config "
        '(`bench/apps/production/app.conf`, `environment = "production"`) and each writes '
        "its own access log, one line per request (cpsysd serve and uWSGI to stderr, gunicorn "
        "`--access-logfile -`; /dev/null here): access logs on, because a service without "
        "one is not what anyone deploys, and cpsysd serve always has one (journald under "
        "systemd). quickstart runs CherryPy's defaults with its screen log (/dev/null). wrk "
        "itself runs on the same 2 cores (1 thread)."
    )
    return section
