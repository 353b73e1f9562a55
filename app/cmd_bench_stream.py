"""`kws bench-stream`: streaming accuracy of a bundle on a long stream with ground truth."""
from __future__ import annotations

import time
from pathlib import Path

from bnnkws.app.cli import CLIError


def register(subparsers) -> None:
    from bnnkws.app.cmd_listen import add_detection_args

    p = subparsers.add_parser(
        "bench-stream",
        help="streaming accuracy: matched/missed/wrong/false detections on a long stream",
        description=(
            "Build a long stream of real keyword clips from the dataset's test split (plus "
            "_unknown_ distractors), separated by random gaps over background noise, run it "
            "through the same detection path as `kws listen` and score the detections against "
            "the ground truth like TensorFlow's test_streaming_accuracy: matched, correct, wrong, "
            "missed and false-detection rates, false accepts per hour, real-time factor and mean "
            "per-hop latency. Writes bench_stream.json and bench_stream.md."
        ),
    )
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory from `kws export`")
    p.add_argument("--data", required=True, metavar="SPEC",
                   help="dataset whose test split supplies the clips (path, sc:PATH, fsdd:PATH, "
                        "folder:PATH); must be split like the bundle's training run")
    p.add_argument("--task", default=None,
                   help="dataset task as in `kws train` (default: the dataset's default)")
    p.add_argument("--split", default="testing", choices=["testing", "validation", "train"],
                   help="which split to draw clips from (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=5.0, help="stream length in minutes (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for the split, clip order, gaps and distractors "
                        "(default: %(default)s)")
    p.add_argument("--gap", type=float, nargs=2, default=[1.0, 2.5], metavar=("MIN", "MAX"),
                   help="seconds of background between clips, drawn uniformly "
                        "(default: 1.0 2.5)")
    p.add_argument("--unknown-fraction", type=float, default=0.15,
                   help="fraction of the clips that are _unknown_ words (distractors; "
                        "default: %(default)s)")
    p.add_argument("--noise-gain", type=float, default=1.0,
                   help="gain on the background noise bed (0 = digital silence between "
                        "words; default: %(default)s)")
    p.add_argument("--tolerance-ms", type=float, default=750.0,
                   help="a detection matches a clip whose end lies within this many ms "
                        "(default: %(default)s, as TensorFlow)")
    add_detection_args(p)
    p.add_argument("--out", default="reports/bench_stream", metavar="DIR",
                   help="folder for bench_stream.json and bench_stream.md "
                        "(default: %(default)s)")
    p.add_argument("--save-wav", action="store_true",
                   help="also write the stream (stream.wav) and its ground truth (labels.txt, "
                        "TensorFlow's format) so `kws listen --input` can replay it")
    p.set_defaults(func=run)


def run(args) -> int:
    from bnnkws.app import stream_bench
    from bnnkws.app.cmd_listen import build_streamer
    from bnnkws.kws.data import DatasetError, load_dataset

    if not args.minutes > 0:
        raise CLIError(f"--minutes must be > 0, got {args.minutes}")
    if not 0 <= args.gap[0] <= args.gap[1]:
        raise CLIError(f"--gap MIN MAX needs 0 <= MIN <= MAX, got {args.gap}")
    detector, streamer = build_streamer(Path(args.bundle), args)
    try:
        kwargs = {"seed": args.seed}
        if args.task is not None:
            kwargs["task"] = args.task
        ds = load_dataset(args.data, **kwargs)
    except (DatasetError, FileNotFoundError) as e:
        raise CLIError(str(e)) from e
    clips = ds.split(args.split)
    missing = sorted(set(c.label for c in clips) - set(streamer.labels))
    if missing:
        raise CLIError(f"{args.data}: labels {missing} are not in the bundle's labels "
                       f"{streamer.labels}; use the dataset and task the bundle was trained on")
    t0 = time.perf_counter()
    try:
        stream = stream_bench.build_stream(
            clips, minutes=args.minutes, seed=args.seed, sample_rate=streamer.cfg.sample_rate,
            clip_samples=streamer.cfg.clip_samples, gap_s=tuple(args.gap),
            unknown_fraction=args.unknown_fraction, bed_gain=args.noise_gain)
    except ValueError as e:
        raise CLIError(f"{args.data}: {e}") from e
    build_s = time.perf_counter() - t0
    print(f"stream: {stream.duration_s / 60:.1f} min, {len(stream.keywords)} keywords, "
          f"{len(stream.events) - len(stream.keywords)} distractors "
          f"({len(clips)} {args.split} clips; built in {build_s:.1f} s)")
    out = Path(args.out)
    if args.save_wav:
        import soundfile as sf

        from bnnkws.kws.fileio import atomic_path, atomic_write_text

        with atomic_path(out / "stream.wav", suffix=".tmp.wav") as tmp:
            sf.write(tmp, stream.audio, stream.sample_rate, subtype="PCM_16", format="WAV")
        atomic_write_text(out / "labels.txt", stream.labels_text())

    try:
        stats, summary = stream_bench.run_benchmark(streamer, stream, args.tolerance_ms)
    except KeyboardInterrupt:
        raise CLIError("interrupted; no report written") from None
    settings = {
        "bundle": str(args.bundle), "data": str(args.data), "split": args.split,
        "minutes": args.minutes, "seed": args.seed, "gap_s": list(args.gap),
        "unknown_fraction": args.unknown_fraction, "noise_gain": args.noise_gain,
        "hop_ms": args.hop_ms, "average_window_ms": args.average_window_ms,
        "threshold": args.threshold, "min_count": args.min_count,
        "suppression_ms": args.suppression_ms, "tolerance_ms": args.tolerance_ms,
        "delta": args.delta if args.delta is not None else getattr(detector, "delta", None),
        "backend": getattr(detector, "backend", None), "threads": args.threads,
    }
    rep = stream_bench.report_dict(stats, summary, settings)
    jpath, mpath = stream_bench.write_reports(rep, out)
    print(stream_bench.report_markdown(rep))
    print(f"wrote {jpath} and {mpath}")
    return 0
