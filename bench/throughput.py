"""Hello-world throughput and p99 latency, keep-alive, at 16 and 64 connections: ``cpsysd serve``
on a socket passed by systemd-socket-activate vs plain ``cherrypy.quickstart`` of the same app."""

from __future__ import annotations

from benchlib import Section, ratio_samples
from config import Config
from servers import PLAIN, compare, cpsysd_activated, cpu, p99, rps

CONNECTIONS = (16, 64)


def run(cfg: Config) -> Section:
    section = Section("Throughput")
    cpsysd = cpsysd_activated()
    results = compare([cpsysd, PLAIN], CONNECTIONS, cfg.reps, cfg.duration)
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
        "those ratios around it. CPU per request is the server's user+system time "
        "(/proc/PID/stat) during the wrk run divided by the requests wrk completed."
    )
    return section
