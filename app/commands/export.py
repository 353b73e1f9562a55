"""``kws export``: convert a training run into a deployable bundle (LCE stages + twins)."""
from __future__ import annotations

import argparse
from pathlib import Path

from bnnkws.app.cli import CLIError, delta_arg


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="convert a trained run into a bundle (staged LCE TFLite + manifest)",
        description=(
            "Convert a training run with Larq Compute Engine into a bundle directory: "
            "stage1.tflite (raw 16 kHz audio in, log-mel frontend inside), "
            "stage1_features.tflite (log-mel in, for streaming), stage2..N.tflite, portable/ "
            "twins without LCE ops (for ai-edge-litert), float32/ twins, full.tflite, "
            "float32.tflite, heads.npz and manifest.json (hashes, labels, frontend, "
            "temperatures, delta, tool versions). The bundle is checked after writing."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run", metavar="RUN", help="training run directory (with config.json)")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="bundle directory to create")
    p.add_argument("--which", default="best", choices=("best", "last"),
                   help="weights to export: best validation accuracy, or the last epoch")
    p.add_argument("--delta", type=delta_arg, default=None,
                   help="exit threshold stored in the bundle: a number, or one per exit "
                        "(0.05,0.2,0.6,0.65,0; `kws eval --per-exit` chooses them) (default: the "
                        "run's delta)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    p.add_argument("--lean", action="store_true",
                   help="LCE stages and heads only: no portable/ or float32/ twins and no "
                        "full-graph files (small enough to ship; needs the LCE interpreter, and "
                        "`kws bench` then has no float-32 comparison)")
    mem = p.add_argument_group("replay memory (for enrolment)")
    mem.add_argument("--memory-data", default=None, metavar="DIR",
                     help="data the run trained on, embedded into the bundle's replay memory "
                          "(default: the run's recorded data folder, if it exists here)")
    mem.add_argument("--memory-capacity", type=int, default=None,
                     help="replay memory samples, shared equally by the classes (default: "
                          "deploy.memory.DEFAULT_CAPACITY, 1536)")
    mem.add_argument("--no-memory", action="store_true",
                     help="write no replay memory (enrolment then warns that it cannot "
                          "protect the old words; `kws memory build` adds one later)")
    p.set_defaults(func=run)


def run(args) -> int:
    run_dir = Path(args.run)
    if not (run_dir / "config.json").is_file():
        raise CLIError(f"{run_dir}: not a training run (no config.json)")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; pass --overwrite to replace it")
    from bnnkws.deploy.bundle import Bundle, BundleError
    from bnnkws.deploy.export import ExportError, export_bundle
    from bnnkws.kws.policy import format_delta

    try:
        path = export_bundle(out, run_dir=run_dir, which=args.which, delta=args.delta,
                             overwrite=args.overwrite, twins=not args.lean)
    except (ExportError, BundleError, FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from e
    if not args.no_memory:
        add_memory(path, args)
    b = Bundle.load(path)
    m = b.manifest
    print(f"bundle written: {path}")
    print(f"  labels ({len(b.labels)}): {', '.join(b.labels)}")
    print(f"  exits: {b.exits}, delta {format_delta(b.delta)}, temperatures {b.temperatures}")
    for name, info in m["files"].items():
        print(f"  {name:36s} {info['bytes'] / 1024:10.1f} KiB")
    for k, v in m.get("checks", {}).items():
        print(f"  check {k}: {v}")
    return 0


def add_memory(path, args) -> None:
    """Embed the training split into the new bundle's replay memory (kws memory build)."""
    import sys

    from bnnkws.deploy.bundle import Bundle, BundleError
    from bnnkws.deploy.memory import (DEFAULT_CAPACITY, MemoryBuildError, build_memory,
                                      install_memory)

    cap = DEFAULT_CAPACITY if args.memory_capacity is None else args.memory_capacity
    try:
        mem, built = build_memory(Bundle.load(path), args.memory_data, capacity=cap)
        install_memory(path, mem, built)
    except MemoryBuildError as e:
        if args.memory_data is not None:
            raise CLIError(str(e)) from e
        print(f"warning: no replay memory written ({e}); add one with `kws memory build {path} "
              f"--data DIR`", file=sys.stderr)
    except (BundleError, ValueError) as e:
        raise CLIError(str(e)) from e
