"""`kws bench-stream`: streaming accuracy of a bundle on a long stream with ground truth."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bnnkws.app.cli import CLIError


def register(subparsers) -> None:
    from bnnkws.app.commands.listen import add_detection_args

    p = subparsers.add_parser(
        "bench-stream",
        help="streaming accuracy: matched/missed/wrong/false detections on a long stream",
        description=(
            "Build a long stream of real keyword clips from the dataset's test split (plus "
            "_unknown_ distractors), separated by random gaps over background noise, run it "
            "through the same detection path as `kws listen` and score the detections against "
            "the ground truth like TensorFlow's test_streaming_accuracy: matched, correct, wrong, "
            "missed and false-detection rates, false accepts per hour, real-time factor and mean "
            "per-hop latency; beside each row, the same keywords cut out of that stream as "
            "one-second clips and classified alone ('as clips': the model without the hop grid "
            "and the smoother). Writes bench_stream.json and bench_stream.md."
        ),
    )
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory from `kws export`")
    p.add_argument("--data", required=True, metavar="SPEC",
                   help="dataset whose test split supplies the clips (path, sc:PATH, fsdd:PATH, "
                        "mswc:PATH, folder:PATH); must be split like the bundle's training run")
    p.add_argument("--task", default=None,
                   help="dataset task as in `kws train` (default: the dataset's default)")
    p.add_argument("--split", default="testing", choices=["testing", "validation", "train"],
                   help="which split to draw clips from (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=5.0, help="stream length in minutes (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for the clip order, gaps and distractors (default: %(default)s)")
    p.add_argument("--split-seed", type=int, default=None, metavar="N",
                   help="speaker-split seed of --data (default: the seed the bundle's model "
                        "trained with, so the test split holds only speakers it never heard)")
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
    nz = p.add_argument_group("noise and gates (issue 19)")
    nz.add_argument("--noise", default=None, metavar="DIR",
                    help="folder of noise recordings to mix under the stream (default: the "
                         "dataset's _background_noise_, else a speech_commands_background_noise "
                         "folder beside the dataset)")
    nz.add_argument("--snr", default="", metavar="DB,...",
                    help="also score the same keywords with the noise mixed at each of these "
                         "SNRs (dB, relative to the keywords' RMS level) in place of the bed, "
                         "e.g. 20,10,5,0; one table row each (default: clean stream only)")
    nz.add_argument("--noise-only-minutes", type=float, default=0.0, metavar="MIN",
                    help="also run a noise-only stream this long (no words: every detection "
                         "is a false accept; e.g. 30 for false accepts per hour; default: none)")
    nz.add_argument("--noise-only-snr", type=float, default=10.0, metavar="DB",
                    help="level of the noise-only stream, as the SNR it would have under the "
                         "keywords (default: %(default)s)")
    nz.add_argument("--gates", default=None, metavar="G,...",
                    help="A/B: run every stream under each of these gates (none = the entropy "
                         "rule alone, energy, mass, energy+mass) with the same --delta; one "
                         "table row per stream and gate (default: only --gate)")
    add_detection_args(p)
    p.add_argument("--out", default="reports/bench_stream", metavar="DIR",
                   help="folder for bench_stream.json and bench_stream.md "
                        "(default: %(default)s)")
    p.add_argument("--save-wav", action="store_true",
                   help="also write the stream (stream.wav) and its ground truth (labels.txt, "
                        "TensorFlow's format) so `kws listen --input` can replay it")
    p.set_defaults(func=run)


def run(args) -> int:
    from bnnkws.app.listener import gates as gatemod
    from bnnkws.app.bench import stream as stream_bench
    from bnnkws.app.commands.listen import build_streamer, gate_parts
    from bnnkws.app.listener.listen import StreamingDetector
    from bnnkws.kws.data import DatasetError, load_dataset

    if not args.minutes > 0:
        raise CLIError(f"--minutes must be > 0, got {args.minutes}")
    if not 0 <= args.gap[0] <= args.gap[1]:
        raise CLIError(f"--gap MIN MAX needs 0 <= MIN <= MAX, got {args.gap}")
    try:
        snrs = [float(x) for x in args.snr.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"--snr {args.snr!r}: not a comma list of numbers (dB)") from None
    if args.noise_only_minutes < 0:
        raise CLIError(f"--noise-only-minutes must be >= 0, got {args.noise_only_minutes}")
    gate_list = ([g.strip() for g in args.gates.split(",") if g.strip()] if args.gates
                 else [args.gate])
    bad = [g for g in gate_list if g not in gatemod.GATES]
    if bad or not gate_list:
        raise CLIError(f"--gates {args.gates!r}: {bad or 'empty'}; choose from {list(gatemod.GATES)}")
    detector, streamer = build_streamer(Path(args.bundle), args)
    try:
        split_seed = (detector.bundle.split_seed if args.split_seed is None
                      else args.split_seed)
        kwargs = {"seed": split_seed}
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
    bed = stream.bed_snr_db
    bed = None if bed is None else round(bed, 2)
    print(f"stream: {stream.duration_s / 60:.1f} min, {len(stream.keywords)} keywords, "
          f"{len(stream.events) - len(stream.keywords)} distractors "
          f"({len(clips)} {args.split} clips; built in {build_s:.1f} s); "
          + (f"the clean row's bed (the dataset's _silence_ clips) is at {bed:.1f} dB SNR"
             if bed is not None else "digital silence between words"))
    out = Path(args.out)
    if args.save_wav:
        import soundfile as sf

        from bnnkws.kws.fileio import atomic_path, atomic_write_text

        with atomic_path(out / "stream.wav", suffix=".tmp.wav") as tmp:
            sf.write(tmp, stream.audio, stream.sample_rate, subtype="PCM_16", format="WAV")
        atomic_write_text(out / "labels.txt", stream.labels_text())

    streams = [("clean", stream)]
    noise_info = None
    if snrs or args.noise_only_minutes > 0:
        folder = Path(args.noise) if args.noise else stream_bench.default_noise_dir(ds.root)
        if folder is None:
            raise CLIError(f"{args.data}: the dataset has no _background_noise_ folder (nor a "
                           "speech_commands_background_noise folder beside it); give --noise DIR")
        try:
            noises = stream_bench.load_noise(folder, streamer.cfg.sample_rate)
        except (FileNotFoundError, ValueError) as e:
            raise CLIError(str(e)) from e
        streams += stream_bench.noisy_streams(
            stream, noises, snrs, noise_only_minutes=args.noise_only_minutes,
            noise_only_snr=args.noise_only_snr, seed=args.seed)
        noise_info = {
            "folder": str(folder), "files": [name for name, _ in noises],
            "keyword_rms_dbfs": round(20 * np.log10(stream.keyword_rms), 2),
            "snr_db": snrs, "noise_only_minutes": args.noise_only_minutes,
            "noise_only_snr_db": args.noise_only_snr,
            "caveat": noise_caveat(ds, folder),
        }
        print(f"noise: {len(noises)} recordings from {folder}; {noise_info['caveat']}")

    rows = []
    try:
        for name, st in streams:
            as_clips = stream_bench.clip_accuracy(detector, st, args.delta)
            for g in gate_list:
                sd = StreamingDetector(detector, streamer.smoother, hop_ms=args.hop_ms,
                                       **gate_parts(detector, args, g))
                st_stats, st_summary = stream_bench.run_benchmark(sd, st, args.tolerance_ms)
                row = stream_bench.report_dict(st_stats, st_summary, {})
                row.pop("settings")
                row["clips_correct_pct"] = as_clips
                rows.append({"stream": name, "gate": g, **row})
                print(f"{name:>28s}  gate {g:<11s} correct {row['correct_pct']}% (as clips "
                      f"{as_clips}%)  false/h "
                      f"{row['false_accepts_per_hour']}  {row['mean_hop_latency_ms']} ms/hop  "
                      f"gated {100 * row['shares'].get('gated', 0):.1f}%")
                if name == "clean" and g == gate_list[0]:
                    stats, summary, clean_clips = st_stats, st_summary, as_clips
    except KeyboardInterrupt:
        raise CLIError("interrupted; no report written") from None
    settings = {
        "bundle": str(args.bundle), "data": str(args.data), "split": args.split,
        "minutes": args.minutes, "seed": args.seed, "split_seed": split_seed,
        "gap_s": list(args.gap),
        "unknown_fraction": args.unknown_fraction, "noise_gain": args.noise_gain,
        "hop_ms": args.hop_ms, "average_window_ms": args.average_window_ms,
        "threshold": args.threshold, "min_count": args.min_count,
        "suppression_ms": args.suppression_ms, "tolerance_ms": args.tolerance_ms,
        "delta": args.delta if args.delta is not None else getattr(detector, "delta", None),
        "backend": getattr(detector, "backend", None), "threads": args.threads,
        "gate": gate_list[0], "gates": gate_list,
        "bed_snr_db": bed,
    }
    rep = stream_bench.report_dict(stats, summary, settings)
    rep["clips_correct_pct"] = clean_clips
    if len(rows) > 1:
        rep["rows"] = rows
        rep["noise"] = noise_info
    jpath, mpath = stream_bench.write_reports(rep, out)
    print(stream_bench.report_markdown(rep))
    print(f"wrote {jpath} and {mpath}")
    return 0


def noise_caveat(ds, folder) -> str:
    """How honest the noise is for this model: the shipped recipe's `_silence_` class and noise
    augmentation come from the dataset's own noise recordings."""
    from bnnkws.app.bench import stream as stream_bench

    own = stream_bench.default_noise_dir(ds.root)
    if own is not None and Path(folder).resolve() == own.resolve():
        return ("caveat: these are the dataset's own noise recordings; the model's _silence_ "
                "class (and its noise augmentation) was trained on 1 s cuts of the same files, "
                "so this noise is familiar to it, not unseen")
    return "noise from a folder that is not the dataset's own noise"
