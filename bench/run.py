"""cpsysd's benchmarks: ``just bench`` (``.venv/bin/python bench/run.py``).

Runs every section (or those named with ``--only``), prints the table as it goes and writes
``bench/RESULTS.md``: a headline, the table, each section's details, the machine and the exact
commands. Load tests run on loopback with wrk, bounded in time; every process started is ended
by PID when its section finishes, also on errors. Not part of the test suite: no timing is
asserted anywhere.

It measures the cpsysd the venv imports (the checkout, installed in editable mode). To measure
another tree, e.g. the last commit while the checkout has work in progress:
``git archive HEAD cpsysd units | tar -x -C DIR; PYTHONPATH=DIR just bench`` (every server and CLI
run is started outside the checkout, so PYTHONPATH wins).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import BENCH, Section, say
from config import Config
from report import write_results

SECTIONS = (
    "throughput", "scaling", "overload", "coldstart", "clilatency", "tlsbench", "memory",
    "perrequest", "prodshape", "idlemem", "deploywait",
)  # fmt: skip


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--reps", type=int, default=3, help="rounds per load comparison (3)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (5)")
    parser.add_argument("--cold-runs", type=int, default=12, help="cold starts per server (12)")
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 2 s runs: checks the bench itself"
    )
    parser.add_argument(
        "-o", "--output", default=str(BENCH / "RESULTS.md"), help="where to write the results"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    cfg = Config(args.reps, args.duration, args.cold_runs, args.quick)
    if args.quick:
        cfg = Config(reps=1, duration=2.0, cold_runs=3, quick=True)
    started = time.time()
    sections: list[Section] = []
    failed = []
    for name in args.only or SECTIONS:
        say(f"== {name}")
        module = importlib.import_module(name)
        try:
            sections.append(module.run(cfg))
        except Exception:  # one broken section must not lose the others' results
            traceback.print_exc()
            failed.append(name)
    write_results(Path(args.output), sections, cfg, argv, time.time() - started, failed)
    say(f"wrote {args.output} in {time.time() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
