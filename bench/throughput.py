"""Hello-world throughput and p99 latency, keep-alive, at 16 and 64 connections: ``cpsysd serve``
on a socket passed by systemd-socket-activate vs plain ``cherrypy.quickstart`` of the same app."""

from __future__ import annotations

from benchlib import Section, ratio_samples
from config import Config
from servers import PLAIN, PLAIN_ACTIVATED, compare, cpsysd_activated, cpu, p99, rps

CONNECTIONS = (16, 64)


def run(cfg: Config) -> Section:
    section = Section("Throughput")
    cpsysd = cpsysd_activated()
    results = compare([cpsysd, PLAIN, PLAIN_ACTIVATED], CONNECTIONS, cfg.reps, cfg.duration)
    for conns in CONNECTIONS:
        ours, theirs = results[(cpsysd.name, conns)], results[(PLAIN.name, conns)]
        ratio = ratio_samples(rps(ours), rps(theirs))
        section.row(
            f"req/s, keep-alive, {conns} conns: cpsysd serve / quickstart",
            f"{rps(ours).median:.0f} / {rps(theirs).median:.0f}",
            f"{ratio.median:.2f}x",
            ratio.spread(),
            "goal >= 1.0",
        )
        lat = ratio_samples(p99(theirs), p99(ours))
        section.row(
            f"p99 latency, {conns} conns: cpsysd serve / quickstart",
            f"{p99(ours).median:.1f} / {p99(theirs).median:.1f} ms",
            f"{lat.median:.2f}x",
            lat.spread(),
            "ratio = quickstart p99 / cpsysd p99 (higher is better)",
        )
        cost = ratio_samples(cpu(theirs), cpu(ours))
        section.row(
            f"server CPU per request, {conns} conns: cpsysd serve / quickstart",
            f"{cpu(ours).median:.0f} / {cpu(theirs).median:.0f} us",
            f"{cost.median:.2f}x",
            cost.spread(),
            "ratio = quickstart CPU / cpsysd CPU (higher is better)",
        )
        activated = results[(PLAIN_ACTIVATED.name, conns)]
        vs_activated = ratio_samples(rps(ours), rps(activated))
        section.row(
            f"req/s, {conns} conns: cpsysd serve / quickstart under systemd-socket-activate",
            f"{rps(ours).median:.0f} / {rps(activated).median:.0f}",
            f"{vs_activated.median:.2f}x",
            vs_activated.spread(),
            f"CherryPy's own activation path: no TCP_NODELAY; p99 {p99(activated).median:.0f} ms",
        )
        if conns == 64:
            section.headline.append(
                f"`cpsysd serve` (socket-activated) serves the hello app at "
                f"**{ratio.median:.2f}x** the requests/s of plain `cherrypy.quickstart` "
                f"(64 keep-alive connections; {rps(ours).median:.0f} vs "
                f"{rps(theirs).median:.0f} req/s), p99 {p99(ours).median:.0f} ms vs "
                f"{p99(theirs).median:.0f} ms."
            )
    section.details.append(
        "Both serve `examples/hello` (`hello:Root`, `app.conf`) on 127.0.0.1. `cpsysd serve` "
        "gets its socket from `systemd-socket-activate` (its access log goes to stderr, "
        "here /dev/null; under systemd to journald); `cherrypy.quickstart` binds its port "
        "itself with CherryPy's defaults (access and error log on the screen, here /dev/null). "
        "Each round runs wrk once per server and connection count, back to back, in a rotated "
        "order; the ratio is the median of the per-round ratios, the spread the min/max of "
        "those ratios around it. The third server is the same quickstart started by "
        "systemd-socket-activate, i.e. CherryPy's own socket-activation support (cheroot takes "
        "fd 3 when LISTEN_PID is set, without TCP_NODELAY, and calls listen(5) on it). "
        "CPU per request is the server's user+system time "
        "(/proc/PID/stat) during the wrk run divided by the requests wrk completed."
    )
    return section
