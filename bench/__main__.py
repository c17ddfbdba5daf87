"""``python -m bench [--smoke] [NAME ...]``: run the benchmarks (all by default) and print a summary.

Exit status 0 when every benchmark ran (a missed bar is reported, not an error); ``--strict`` also fails on a
missed bar.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time

import structlog

from bench._common import Outcome

BENCHMARKS = (
    "throughput",
    "deadline",
    "coalescing",
    "etag_hits",
    "sse_fanout",
    "sse_load",
    "actions",
    "header_flood",
    "replay_flood",
    "slow_clients",
    "github_budget",
    "redis_engine",
    "real_adapters",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long pass with small numbers")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a bar is missed")
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], metavar="NAME")
    args = parser.parse_args(argv)
    # Only warnings: the in-process benchmarks would otherwise log every refresh and action.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    outcomes: list[Outcome] = []
    for name in args.names or BENCHMARKS:
        started = time.perf_counter()
        outcomes += importlib.import_module(f"bench.{name}").run(smoke=args.smoke)
        print(f"[{name}] took {time.perf_counter() - started:.1f}s", flush=True)
    missed = [o.name for o in outcomes if not o.ok]
    listed = f": {', '.join(missed)}" if missed else ""
    print(f"summary: {len(outcomes)} figures, {len(missed)} missed bars{listed}")
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
