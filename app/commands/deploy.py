"""``kws deploy``: package a bundle (or a run) for a Raspberry Pi or an Android phone."""
from __future__ import annotations

import argparse

from bnnkws.app.cli import CLIError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "deploy", help="package a bundle for a Raspberry Pi (aarch64) or an Android phone",
        description=(
            "Make a folder to copy to the device. pi: the bundle, bnn-kws's numpy-side code, "
            "run_pi.py (live detection with the app's listen command), a pip-only install "
            "(ai-edge-litert on the portable stages), bench_device.sh "
            "(lce_benchmark_model_aarch64 per stage) and a README. android: the bundle and "
            "android_bench.sh, which pushes the stages and lce_benchmark_model_android_arm64 "
            "with adb and prints per-exit latency. A training run is exported first."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("source", metavar="RUN_OR_BUNDLE", help="bundle directory or training run")
    p.add_argument("--target", required=True, choices=("pi", "android"), help="device kind")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to create")
    p.add_argument("--which", default="best", choices=("best", "last"),
                   help="weights when exporting a run")
    p.add_argument("--bench", default=None, metavar="BENCH_MD",
                   help="bench.md from `kws bench` to include (figures measured on this machine)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def run(args) -> int:
    from bnnkws.deploy.bundle import BundleError
    from bnnkws.deploy.targets import TargetError, deploy

    try:
        out = deploy(args.source, args.target, args.out, overwrite=args.overwrite,
                     which=args.which, bench_md=args.bench)
    except (TargetError, BundleError, FileExistsError, FileNotFoundError) as e:
        raise CLIError(str(e)) from e
    print(f"{args.target} folder written: {out}")
    for p in sorted(out.iterdir()):
        print(f"  {p.name}{'/' if p.is_dir() else ''}")
    print(f"next: see {out / 'README.md'}")
    return 0
