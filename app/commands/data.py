"""`kws data summary SPEC`: what a dataset holds, how it splits, and which files are broken;
`kws data words SPEC --out DIR`: a word corpus cut from transcribed speech."""
from __future__ import annotations

import argparse
import json

from bnnkws.app.cli import CLIError

SPEC_HELP = ("dataset folder, auto-detected (Speech Commands archive, prepared 12-class test "
             "layout with _silence_/_unknown_, FSDD, an MSWC language, or one folder per "
             "class); prefix sc:, fsdd:, mswc: or folder: to force the reader. A transcribed "
             "corpus (Kaldi, LibriSpeech, Common Voice) is cut into words by `kws data words` "
             "first, then read as mswc:")


def add_dataset_args(p: argparse.ArgumentParser, spec: bool = True) -> None:
    """The dataset options shared by commands that read a SPEC."""
    if spec:
        p.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    p.add_argument("--task", default=None,
                   help="12 (10 words + _silence_ + _unknown_; default for Speech Commands), "
                        "35/all (every word or class folder; default for FSDD and folders), or "
                        "a comma list of words such as yes,no,marvin")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the speaker split and of the _unknown_/_silence_ draw")
    p.add_argument("--val-frac", type=float, default=0.1,
                   help="share of clips for validation where the dataset has no official split")
    p.add_argument("--test-frac", type=float, default=0.1,
                   help="share of clips for testing where the dataset has no official split")
    p.add_argument("--unknown-pct", type=float, default=10.0,
                   help="_unknown_ clips drawn from other words, in percent of each split's "
                        "keyword clips (Speech Commands archives, MSWC)")
    p.add_argument("--silence-pct", type=float, default=10.0,
                   help="_silence_ clips cut from background noise, in percent of each split's "
                        "keyword clips (Speech Commands archives, MSWC)")


def load_from_args(args):
    """``load_dataset`` with the options of :func:`add_dataset_args`; user errors -> CLIError."""
    import warnings

    from bnnkws.kws.data import load_dataset

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the notes carry the same message
            return load_dataset(args.spec, task=args.task, seed=args.seed,
                                val_frac=args.val_frac, test_frac=args.test_frac,
                                unknown_pct=args.unknown_pct, silence_pct=args.silence_pct)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "data", help="inspect datasets: classes, splits, speakers, durations, broken files",
        description="Inspect speech datasets the way training will read them, and cut "
                    "transcribed speech into a word corpus (`kws data words`).")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    s = sub.add_parser(
        "summary",
        help="classes, clips and speakers per split, durations, problems found",
        description=(
            "Read SPEC as training would and print its classes, clip counts per split and "
            "class, speakers per split (and any speaker found in two splits), clip durations "
            "and sample rates, and every file that cannot be read (those are skipped by "
            "training, never fatal). Decoding all files also fills the waveform cache that "
            "training uses."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataset_args(s)
    s.add_argument("--no-check", action="store_true",
                   help="do not decode every file (faster; broken files are then not found)")
    s.add_argument("--cache-dir", default=None,
                   help="waveform cache folder (default $KWS_CACHE_DIR or ~/.cache/bnn-kws)")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.add_argument("--show-problems", type=int, default=20, metavar="N",
                   help="list at most N broken files")
    s.set_defaults(func=run_summary)
    h = sub.add_parser(
        "shards",
        help="write the TFRecord waveform shards `kws train --pipeline shards` streams",
        description=(
            "Decode every clip of SPEC's splits once into TFRecord shards (int16 waveforms "
            "with label and clip number, ~2,048 clips each) in the cache, in parallel worker "
            "processes. Interrupted builds keep their finished shards and continue where they "
            "stopped; a complete set is reused by `kws train --pipeline shards` with the same "
            "SPEC, --task and --seed (the key is the clip list, the labels and the sample "
            "rate: the log-mel is computed while training, so frontend changes need no new "
            "shards). Runs with --aux-vocab or --max-train-clips write their own."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataset_args(h)
    h.add_argument("--split", type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
                   default="train,validation,testing",
                   help="comma-separated splits to write")
    h.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default: one per core; for 16-kHz WAV one is "
                        "often as fast, since decoding costs less than moving the samples)")
    h.add_argument("--clips-per-shard", type=int, default=2048, help="records per shard file")
    h.add_argument("--cache-dir", default=None,
                   help="cache folder (default $KWS_CACHE_DIR or ~/.cache/bnn-kws)")
    h.add_argument("--quiet", action="store_true", help="no progress bar")
    h.set_defaults(func=run_shards)

    b = sub.add_parser(
        "bench",
        help="feature extraction and augmentation throughput (clips/s, cold and cached)",
        description=(
            "Time reading + log-mel of the training split with an empty cache (cold), again "
            "from the cache, and one pass of augmented training batches (time shift, gain, "
            "noise, SpecAugment, log-mel) twice: the numpy generator (BatchMaker) and the "
            "batched TensorFlow ops in tf.data (kws.augment_tf, timed after one warm-up "
            "batch). Prints wall-clock and CPU clips/s; on a shared machine the CPU figure is "
            "the steadier one."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataset_args(b)
    b.add_argument("--clips", type=int, default=2000,
                   help="use at most this many training clips")
    b.add_argument("--batch-size", type=int, default=64, help="augmented batch size")
    b.add_argument("--noise-dir", action="append", default=None, metavar="PATH",
                   help="background noise folder or file (repeatable) for the augmented rows "
                        "when the dataset has no noise files of its own, e.g. "
                        "../shared/data/speech_commands_background_noise; without it such a "
                        "dataset is augmented with generated white/pink noise")
    b.add_argument("--dft", default=None, choices=("fourstep", "rfft", "matmul"),
                   help="LogMel DFT mode of the tf.data row (default: the augmenter's)")
    b.set_defaults(func=run_bench)
    w = sub.add_parser(
        "words",
        help="cut a transcribed corpus into one 1-s clip per spoken word (MSWC's layout)",
        description=(
            "Cut every word of a transcribed speech corpus into its own clip, the way MSWC "
            "was made: each utterance is aligned with its transcript by PocketSphinx's en-us "
            "model (offline; pip install 'bnn-kws[words]'), each word is cut with a little "
            "context, faded, and centred in a zero-padded 1-s 16-kHz clip. Words neither "
            "CMUdict nor the corpus lexicon knows make their utterance unalignable, and "
            "implausible segments (too short, too long, silent) are rejected: all are counted "
            "by reason. The result, OUT/<lang>/clips/<word>/*.opus and <lang>_splits.csv with "
            "the corpus' speaker-disjoint split, is read by mswc:OUT (kws data summary, kws "
            "train --data/--aux-data/--aux-only). An interrupted run resumes where it "
            "stopped when started again with the same options; a summary is printed and "
            "written to OUT/words_summary.json."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    w.add_argument("spec", metavar="SPEC",
                   help="transcribed corpus folder, auto-detected: a Kaldi data folder (wav.scp, "
                        "text, utt2spk; or train/, dev/, test/ holding them, as speechocean762), "
                        "LibriSpeech (<speaker>/<chapter>/*.trans.txt) or one Common Voice "
                        "language (validated.tsv, clips/); prefix kaldi:, librispeech: or "
                        "commonvoice: to force the reader")
    w.add_argument("--out", required=True, help="output folder (created; resumed if it holds "
                                                 "an unfinished run of the same options)")
    w.add_argument("--lang", default=None,
                   help="language folder name in OUT (default: the corpus' locale, else en)")
    w.add_argument("--lexicon", default=None, metavar="FILE",
                   help="pronunciations for words CMUdict lacks (WORD PH PH ..., CMU/Kaldi "
                        "phones, stress marks allowed); default: the corpus' lexicon.txt "
                        "(resource/, local/dict/) when it has one")
    w.add_argument("--format", choices=("opus", "wav"), default="opus",
                   help="clip files: Opus (about 4 KB a clip) or 16-bit WAV (32 KB)")
    w.add_argument("--context-ms", type=float, default=75.0,
                   help="audio kept on each side of the aligned word")
    w.add_argument("--min-word-ms", type=float, default=100.0,
                   help="aligned words shorter than this (or than 30 ms per phone, the model's "
                        "minimum) are rejected as misaligned")
    w.add_argument("--max-word-ms", type=float, default=1000.0,
                   help="aligned words longer than this are rejected (at most the 1-s clip)")
    w.add_argument("--silence-db", type=float, default=12.0,
                   help="a word whose loudest 25 ms is less than this many dB above its "
                        "utterance's noise floor (10th percentile) is rejected as silent")
    w.add_argument("--workers", type=int, default=None,
                   help="aligning processes (default: one per core)")
    w.add_argument("--seed", type=int, default=0,
                   help="seed of the speaker split where the corpus lacks a side")
    w.add_argument("--val-frac", type=float, default=0.1,
                   help="share of training clips whose speakers form the validation side when "
                        "the corpus has none (and of all clips where it has no split at all)")
    w.add_argument("--test-frac", type=float, default=0.1,
                   help="likewise for the test side")
    w.add_argument("--quiet", action="store_true", help="no progress bar")
    w.add_argument("--json", action="store_true", help="print the summary as JSON")
    w.set_defaults(func=run_words)
    p.set_defaults(func=lambda args: p.print_help())


def run_words(args) -> int:
    """`kws data words`: see its --help."""
    import sys

    from bnnkws.kws.data.transcripts import load_corpus
    from bnnkws.kws.data.words import CutConfig, build_words, format_summary

    try:
        cfg = CutConfig(context=args.context_ms / 1000, min_word=args.min_word_ms / 1000,
                        max_word=args.max_word_ms / 1000, silence_db=args.silence_db,
                        format=args.format)
        corpus = load_corpus(args.spec, seed=args.seed, val_frac=args.val_frac,
                             test_frac=args.test_frac, lexicon=args.lexicon,
                             language=args.lang)
        if not args.json:
            for n in corpus.notes:
                print(f"note     {n}")
        summary = build_words(corpus, args.out, lang=args.lang, cfg=cfg, workers=args.workers,
                              progress=not args.quiet)
    except (ValueError, FileNotFoundError) as exc:  # includes a missing pocketsphinx
        raise CLIError(str(exc)) from exc
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to resume (finished utterances are "
              f"kept in {args.out})", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0


def run_shards(args) -> int:
    import time
    from pathlib import Path

    from bnnkws.kws.features.shards import build_shards

    ds = load_from_args(args)
    rows = []
    for split in args.split:
        clips = ds.split(split)
        if not clips:
            print(f"{split}: no clips, nothing to write")
            continue
        t, started = time.perf_counter(), time.time()
        ss = build_shards(clips, ds.labels, cache_dir=args.cache_dir, workers=args.workers,
                          clips_per_shard=args.clips_per_shard, progress=not args.quiet)
        dt = time.perf_counter() - t
        reused = (Path(ss.path) / "index.json").stat().st_mtime < started
        rows.append((split, ss, dt, reused))
    for split, ss, dt, reused in rows:
        skipped = len(ss.problems)
        took = ("already built" if reused else
                f"{dt:.1f} s ({ss.num_clips / max(dt, 1e-9):,.0f} clips/s)")
        print(f"{split:<11}{ss.num_clips:>8} clips in {len(ss.files):>4} shards  {took}"
              f"{f'  {skipped} unreadable, skipped' if skipped else ''}  {ss.path}")
    return 0


def run_bench(args) -> int:
    import tempfile
    import time

    from bnnkws.kws.features.augment import AugmentConfig
    from bnnkws.kws.features.augment import noise_files as listed_noise
    from bnnkws.kws.features.cache import extract
    from bnnkws.kws.features.pipeline import BatchMaker

    ds = load_from_args(args)
    clips = ds.split("train")[: args.clips]
    if not clips:
        raise CLIError(f"{args.spec}: the training split is empty")
    noise = list(ds.noise_paths)
    if not noise and args.noise_dir:
        try:
            noise = listed_noise(args.noise_dir)
        except FileNotFoundError as e:
            raise CLIError(f"--noise-dir {e}") from e
    from bnnkws.frontend.reference import mel_matrix

    mel_matrix()  # librosa's import and the filterbank are one-off costs, not throughput
    with tempfile.TemporaryDirectory(prefix="kws-bench-") as tmp:
        rows = []
        for name in ("cold", "cached"):
            t, c = time.perf_counter(), time.process_time()
            X = extract(clips, cache_dir=tmp, progress=False)
            rows.append((f"log-mel {name}", len(clips), time.perf_counter() - t,
                         time.process_time() - c))
        maker = BatchMaker(clips, augment=AugmentConfig(), noise_paths=noise, cache_dir=tmp,
                           progress=False)
        t, c = time.perf_counter(), time.process_time()
        n = sum(len(y) for _, y in maker.epoch(args.batch_size, epoch=0))
        rows.append(("augmented batches", n, time.perf_counter() - t, time.process_time() - c))
        rows.append(_bench_tf(maker, args.batch_size, args.dft))
    print(f"dataset {ds.name}: {len(clips)} training clips, features {tuple(X.shape[1:])}, "
          f"noise: {len(maker.noise.arrays)} recordings"
          + (" (generated white/pink)" if maker.noise.generated else ""))
    print(f"{'stage':<27}{'clips':>7}{'wall s':>9}{'clips/s':>10}{'cpu clips/s':>13}")
    for name, n, wall, cpu in rows:
        print(f"{name:<27}{n:>7}{wall:>9.2f}{n / max(wall, 1e-9):>10.0f}"
              f"{n / max(cpu, 1e-9):>13.0f}")
    return 0


def _bench_tf(maker, batch_size: int, dft: str | None) -> tuple:
    """One pass of :func:`kws.augment_tf.make_train_pipeline` over the maker's clips, timed
    after one warm-up batch (graph tracing and thread start-up are one-off costs):
    ``(name, clips, wall s, cpu s)``."""
    import time

    import numpy as np

    from bnnkws.kws.features import augment_tf

    kw = {"dft": dft} if dft else {}
    aug = augment_tf.TFAugmenter(maker.augment, maker.cfg, maker.labels, maker.noise,
                                 seed=maker.seed, **kw)
    # the epoch's clip order, shuffled as ``BatchMaker.epoch(epoch=0)`` does
    order = maker.keep[np.random.default_rng([maker.seed, 0]).permutation(len(maker.keep))]
    ds = augment_tf.make_train_pipeline(
        augment_tf.elements_from_waveforms(maker.waves, maker.y, order=order), aug, batch_size)
    it = iter(ds)
    next(it)
    t, c = time.perf_counter(), time.process_time()
    n = sum(int(y.shape[0]) for _, y, _ in it)
    return ("tf.data augmented batches", n, time.perf_counter() - t, time.process_time() - c)


def summarize(ds, check: bool = True, cache_dir=None, progress: bool = True) -> dict:
    """The facts `kws data summary` prints, as a dict (also used by tests)."""
    import numpy as np
    import soundfile as sf

    from bnnkws.kws.data import SPLITS

    counts = ds.counts()
    problems = list(ds.problems)
    if check:
        from bnnkws.kws.features.cache import load_waveforms

        # One call per split: the same clip lists (and so the same cache entries) training reads.
        for split in SPLITS:
            clips = ds.split(split)
            if clips:
                problems += load_waveforms(clips, cache_dir=cache_dir, progress=progress).problems
    durations, rates = [], {}
    bad = {p for p, _ in problems}
    for c in ds.clips:
        if c.is_segment or c.path in bad:
            continue
        try:
            info = sf.info(c.path)
        except Exception:
            continue
        durations.append(info.frames / info.samplerate)
        rates[info.samplerate] = rates.get(info.samplerate, 0) + 1
    d = np.array(durations) if durations else np.zeros(1)
    return {
        "name": ds.name, "kind": ds.kind, "root": ds.root, "labels": ds.labels,
        "clips": {s: sum(counts[s].values()) for s in SPLITS},
        "clips_per_label": counts,
        "speakers": {s: len(ds.speakers(s)) for s in SPLITS},
        "no_speaker": {s: sum(1 for c in ds.clips if c.split == s and c.speaker is None)
                       for s in SPLITS},
        "speaker_overlap": sorted(ds.speaker_overlap()),
        "noise_files": len(ds.noise_paths),
        "duration_s": {"min": float(d.min()), "median": float(np.median(d)),
                       "max": float(d.max()), "total_h": float(d.sum() / 3600),
                       "under_1s": int((d < 0.999).sum()), "files": len(durations)},
        "sample_rates": {str(k): v for k, v in sorted(rates.items())},
        "notes": ds.notes,
        "problems": [{"path": p, "problem": m} for p, m in problems],
        "checked": check,
    }


def run_summary(args) -> int:
    ds = load_from_args(args)
    info = summarize(ds, check=not args.no_check, cache_dir=args.cache_dir)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    splits = list(info["clips"])
    print(f"dataset  {info['name']} ({info['kind']}) at {info['root']}")
    print(f"classes  {len(info['labels'])}: {', '.join(info['labels'])}")
    for n in info["notes"]:
        print(f"note     {n}")
    w = max(10, *(len(lab) for lab in info["labels"]))
    print()
    print(f"{'label':<{w}} " + " ".join(f"{s:>10}" for s in splits) + f" {'total':>8}")
    for lab in info["labels"]:
        row = [info["clips_per_label"][s][lab] for s in splits]
        print(f"{lab:<{w}} " + " ".join(f"{v:>10}" for v in row) + f" {sum(row):>8}")
    tot = [info["clips"][s] for s in splits]
    print(f"{'clips':<{w}} " + " ".join(f"{v:>10}" for v in tot) + f" {sum(tot):>8}")
    spk = [info["speakers"][s] for s in splits]
    print(f"{'speakers':<{w}} " + " ".join(f"{v:>10}" for v in spk))
    if any(info["no_speaker"].values()):
        ns = [info["no_speaker"][s] for s in splits]
        print(f"{'no speaker':<{w}} " + " ".join(f"{v:>10}" for v in ns)
              + "   (silence windows or unnamed files)")
    print()
    ov = info["speaker_overlap"]
    print("speakers in two splits: " + ("none (speaker-disjoint)" if not ov else
                                        f"{len(ov)}: {', '.join(ov[:10])}"))
    d = info["duration_s"]
    print(f"durations  min {d['min']:.2f} s, median {d['median']:.2f} s, max {d['max']:.2f} s, "
          f"{d['under_1s']} of {d['files']} files under 1 s, total {d['total_h']:.2f} h")
    print("rates      " + ", ".join(f"{k} Hz: {v}" for k, v in info["sample_rates"].items()))
    print(f"noise      {info['noise_files']} background noise files"
          + ("" if info["noise_files"] else " (noise augmentation uses generated white/pink)"))
    probs = info["problems"]
    if not info["checked"]:
        print("problems   not checked (--no-check)")
    elif not probs:
        print("problems   none: every file decodes")
    else:
        print(f"problems   {len(probs)} unreadable files (skipped by training):")
        for p in probs[:args.show_problems]:
            print(f"  {p['path']}: {p['problem']}")
        if len(probs) > args.show_problems:
            print(f"  ... and {len(probs) - args.show_problems} more (--show-problems N)")
    return 0
