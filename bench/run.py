"""`make bench`: run the benches listed in BENCHES (or those named by `--only`)
and update their sections of `bench/RESULTS.md`.

A bench is a module of this package with `run(results, options) -> Outcome`
(see `bench/items_get.py`). To add one, write the module and append its name
here.

Exit status: 0 when every bench ran without failed calls; 1 when a bench
crashed or saw failed calls; with `--strict`, also 1 when a target was missed.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
import traceback
from types import FrameType

from bench.harness import RUNS, Options, Outcome
from bench.results import RESULTS_PATH, Results

BENCHES = ["items_get", "jobs", "batches", "clip", "analytics", "mosaic", "http_ranges", "tiles", "webhooks"]


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so each bench's cleanup (`finally`) runs.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        choices=BENCHES,
        help=f"run only this bench (repeatable): {', '.join(BENCHES)}",
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, metavar="SECONDS", help="measured seconds per point (default 5)"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, metavar="SECONDS", help="warm-up seconds per point (default 1)"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=RUNS,
        metavar="N",
        help=f"runs per measured point, the same for the server and every peer; figures "
        f"are median [min–max] (default {RUNS})",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the server with py-spy (installed by hand) at the most loaded point; "
        "writes bench/out/ and slows that point down",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a bench misses its target")
    parser.add_argument("--list", action="store_true", help="list the benches and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(BENCHES))
        return 0
    if not (0 < args.duration <= 60) or not (0 <= args.warmup <= 30):
        parser.error("--duration must be in (0, 60] and --warmup in [0, 30] seconds")
    if not 1 <= args.runs <= 9:
        parser.error("--runs must be in [1, 9]")
    signal.signal(signal.SIGTERM, _terminate)

    options = Options(duration=args.duration, warmup=args.warmup, profile=args.profile, runs=args.runs)
    results = Results()
    outcomes: list[Outcome] = []
    crashed: list[str] = []
    for name in args.only or BENCHES:
        started = time.monotonic()
        print(f"== bench {name}", flush=True)
        try:
            module = importlib.import_module(f"bench.{name}")
            outcomes.append(module.run(results, options))
        except Exception:
            traceback.print_exc()
            crashed.append(name)
        print(f"== bench {name} took {time.monotonic() - started:.0f} s", flush=True)

    print(f"\nResults written to {RESULTS_PATH}")
    for outcome in outcomes:
        print(f"  {outcome.summary}")
    for name in crashed:
        print(f"  {name}: CRASHED (see the traceback above)")
    if crashed or any(not o.valid for o in outcomes):
        return 1
    if args.strict and any(o.target_met is False for o in outcomes):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
