"""``kws bench``: per-exit latency and size of a bundle vs its float-32 twin (Table 1)."""
from __future__ import annotations

import argparse
from pathlib import Path

from bnnkws.app.cli import CLIError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="benchmark a bundle: per-exit latency, LCE vs float-32, sizes, delta sweep",
        description=(
            "Measure a bundle on this machine with the LCE interpreter: every kernel option set "
            "(checked against the reference kernels; the fastest correct one is used), then per "
            "exit the cumulative latency (median, p90) of the LCE stages and of the float-32 "
            "twin, sizes in MiB, the speed-up, and the frontend's share of stage 1. With --data, "
            "also accuracy and mean measured latency per clip for each delta of the sweep. "
            "Writes bench.md and bench.json (key 'speedup' = float32/LCE at the last exit)."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory (from `kws export`)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for bench.md/bench.json")
    p.add_argument("--runs", type=int, default=200, help="timed runs per measurement")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs first")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads")
    p.add_argument("--data", default=None, metavar="SPEC",
                   help="dataset for the delta sweep (path or sc:/fsdd:/folder: spec)")
    p.add_argument("--split", default="testing", choices=("train", "validation", "testing", "all"),
                   help="split of --data to use")
    p.add_argument("--seed", type=int, default=None,
                   help="speaker-split seed of --data (default: the seed the bundle's model was "
                        "trained with, from its manifest, so its test split stays unseen)")
    p.add_argument("--limit", type=int, default=500,
                   help="at most this many clips for the sweep (random, fixed seed); 0 = all")
    p.add_argument("--deltas", default=None,
                   help="comma list of deltas to sweep (default: 0 to 1 in steps of 0.05 to 0.1, "
                        "plus the bundle's own delta)")
    p.set_defaults(func=run)


def run(args) -> int:
    from bnnkws.deploy.bench import run_bench, to_markdown, write_report
    from bnnkws.deploy.bundle import BundleError

    if args.runs < 1 or args.warmup < 0:
        raise CLIError("--runs must be >= 1 and --warmup >= 0")
    deltas = None
    if args.deltas:
        try:
            deltas = [float(x) for x in args.deltas.split(",")]
        except ValueError as e:
            raise CLIError(f"--deltas {args.deltas!r}: not a comma list of numbers") from e
    try:
        res = run_bench(args.bundle, runs=args.runs, warmup=args.warmup, threads=args.threads,
                        data=args.data, split=args.split, limit=args.limit or None, deltas=deltas,
                        split_seed=args.seed)
    except (BundleError, FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from e
    md, js = write_report(res, Path(args.out))
    print(to_markdown(res))
    print(f"written: {md}, {js}")
    return 0
