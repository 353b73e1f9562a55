"""`kws bench-transfer`: how well a bundle's frozen exit embeddings learn new words."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bnnkws.app.cli import CLIError

_EXAMPLES = """\
examples:
  kws bench-transfer app/default_bundle --fsdd ../shared/data/fsdd \\
      --v1 ../shared/data/speech_commands_v1_sample --out reports/transfer-default
  kws bench-transfer bundles/qn-wide-aux --fsdd ../shared/data/fsdd --words 10 --shots 5
"""


def _ints(text: str) -> list:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}")
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected numbers >= 1, got {text!r}")
    return out


def register(subparsers) -> None:
    from bnnkws.kws.data.vocab import TRANSFER_DIGITS, TRANSFER_V1_WORDS

    p = subparsers.add_parser(
        "bench-transfer",
        help="linear probe and CWR* on new words and speakers, per exit (embedding quality)",
        description=(
            "Measure how well each exit's frozen embedding learns words the model never "
            "heard. FSDD (--fsdd): the --fsdd-digits, trained on N clips per digit of one "
            "speaker and tested on every clip of another, over all ordered speaker pairs. "
            "Speech Commands v0.01 sample (--v1): the --v1-words, trained on N clips per word "
            "and tested on the clips of every other speaker. Per exit: a logistic-regression "
            "probe on sign(embedding) (a ceiling for any head rule) and CWR* enrolment of the "
            "new words onto the exported head (accuracy among the new words / among all "
            "classes). Writes transfer.json and transfer.md. The words must be held out of "
            "the bundle's training vocabulary (`kws train --aux-holdout`); a training run "
            "found beside the bundle is checked and an overlap is reported."),
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory from `kws export`")
    p.add_argument("--fsdd", metavar="DIR", default=None,
                   help="Free Spoken Digit Dataset folder (<digit>_<speaker>_<n>.wav)")
    p.add_argument("--v1", metavar="DIR", default=None,
                   help="Speech Commands layout (word folders) holding the --v1-words, e.g. "
                        "../shared/data/speech_commands_v1_sample")
    p.add_argument("--v1-words", default=",".join(TRANSFER_V1_WORDS), metavar="W1,W2,...",
                   help="words of --v1 to learn (default: %(default)s, words "
                        "`kws train --aux-vocab` holds out by default that no corpus in "
                        "../shared/data has beyond a few `_unknown_` clips)")
    p.add_argument("--fsdd-digits", default=",".join(TRANSFER_DIGITS), metavar="D1,D2,...",
                   help="FSDD digits to learn, as words (default: %(default)s: four, five and "
                        "eight are speech_commands_extra words a multi-corpus model trains "
                        "as `_unknown_`; all ten: zero,one,...,nine)")
    p.add_argument("--words", type=_ints, default=None, metavar="N1,N2",
                   help="FSDD: how many new digits per task; fewer than --fsdd-digits draws a "
                        "random subset per draw (default: 3 and all of them)")
    p.add_argument("--shots", type=_ints, default=[5, 50], metavar="N1,N2",
                   help="FSDD: training clips per digit of the one training speaker "
                        "(default: 5,50)")
    p.add_argument("--v1-shots", type=_ints, default=[5], metavar="N",
                   help="--v1: training clips per word (default: 5)")
    p.add_argument("--draws", type=int, default=5,
                   help="random draws of the training clips (and digit subsets) per speaker "
                        "pair (default: %(default)s)")
    p.add_argument("--C", type=float, default=1.0,
                   help="inverse L2 strength of the logistic-regression probe "
                        "(default: %(default)s)")
    p.add_argument("--no-cwr", action="store_true", help="probe only, no CWR* columns")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default: %(default)s)")
    p.add_argument("--channel-rate", type=int, default=None, metavar="HZ",
                   help="pass every clip through HZ (resampled down, then back up to 16 kHz) "
                        "before embedding it, to measure what a narrow-band channel costs "
                        "(e.g. 8000: nothing above 4 kHz, as in FSDD); default: the clips "
                        "as they are")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default: 1)")
    p.add_argument("--backend", choices=["auto", "lce", "litert"], default="auto",
                   help="TFLite runtime (default: auto)")
    p.add_argument("--out", default="reports/transfer", metavar="DIR",
                   help="folder for transfer.json and transfer.md (default: %(default)s)")
    p.set_defaults(func=run)


def _fsdd_clips(root: Path, digits):
    from bnnkws.kws.data.fsdd import fsdd_files
    from bnnkws.kws.data.vocab import DIGIT_WORDS

    unknown = sorted(set(digits) - set(DIGIT_WORDS))
    if unknown:
        raise CLIError(f"--fsdd-digits: {', '.join(unknown)} not a digit word "
                       f"({','.join(DIGIT_WORDS)})")
    files = [(p, m) for p, m in fsdd_files(root) if DIGIT_WORDS[int(m.group("digit"))] in digits]
    if not files:
        raise CLIError(f"--fsdd {root}: no FSDD files (<digit>_<speaker>_<n>.wav) of "
                       f"{','.join(digits)} there")
    return ([str(p) for p, _ in files], [DIGIT_WORDS[int(m.group("digit"))] for _, m in files],
            [m.group("speaker") for _, m in files])


def _v1_clips(root: Path, words):
    from bnnkws.kws.data.base import list_audio, speaker_from_name

    paths, ws, spk = [], [], []
    for w in words:
        found = list_audio(root / w)
        if not found:
            raise CLIError(f"--v1 {root}: no clips of {w!r} in {root / w}")
        for f in found:
            s = speaker_from_name(f)
            if s is None:
                raise CLIError(f"{f}: no <speaker>_nohash_ name; speakers must be known to keep "
                               f"training and test speakers apart")
            paths.append(str(f))
            ws.append(w)
            spk.append(s)
    return paths, ws, spk


def _embed(detector, paths, name, channel_rate=None):
    from tqdm import tqdm

    from bnnkws.frontend.audio import AudioError, load_audio, pad_or_crop, resample

    rows = []
    for p in tqdm(paths, desc=f"embedding {name}", unit="clip", file=sys.stderr):
        try:
            y = load_audio(p, sr=16000, length=16000, crop="center")
        except AudioError as e:
            raise CLIError(f"{p}: {e.problem}") from e
        if channel_rate:
            y = pad_or_crop(resample(resample(y, 16000, channel_rate), channel_rate, 16000),
                            16000, crop="center").astype(np.float32)
        rows.append([np.asarray(e, np.float32).reshape(-1) for e in detector.embeddings(audio=y)])
    return [np.stack([r[i] for r in rows]) for i in range(len(rows[0]))]


def _vocab_overlap(bundle, words) -> str | None:
    """Which of ``words`` the bundle's training run had auxiliary classes for (if it is here)."""
    run = (bundle.manifest.get("source") or {}).get("run")
    if not run:
        return None
    for base in (Path.cwd(), bundle.path.parent):
        f = Path(base) / run / "aux_vocab.json"
        if f.is_file():
            vocab = set(json.loads(f.read_text()).get("words", []))
            both = sorted(vocab & set(words))
            return (f"{f}: the auxiliary vocabulary includes {', '.join(both)}: these are not "
                    f"new words for this bundle") if both else ""
    return None


def run(args) -> int:
    from bnnkws.deploy.bundle import Bundle
    from bnnkws.deploy.heads import linear_head
    from bnnkws.deploy.runtime import Detector
    from bnnkws.kws.evaluation import transfer
    from bnnkws.kws.fileio import atomic_write_json, atomic_write_text

    if not args.fsdd and not args.v1:
        raise CLIError("give --fsdd DIR and/or --v1 DIR: the corpora of new words to learn")
    if args.draws < 1:
        raise CLIError(f"--draws must be >= 1, got {args.draws}")
    try:
        bundle = Bundle.load(args.bundle)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(f"{args.bundle}: {e}") from e
    detector = Detector(bundle, num_threads=args.threads, backend=args.backend)
    exits = list(bundle.exits)
    heads = None
    if not args.no_cwr:
        heads = {}
        for k in exits:
            heads[k] = linear_head(bundle.heads[k])  # (W, b, sign_input)
    results, notes = [], []
    corpora = []
    if args.fsdd:
        root = Path(args.fsdd)
        if not root.is_dir():
            raise CLIError(f"--fsdd {root}: not a folder")
        digits = [d.strip() for d in args.fsdd_digits.split(",") if d.strip()]
        fsdd = _fsdd_clips(root, digits)
        n_digits = len(set(fsdd[1]))
        corpora.append(("fsdd", *fsdd, True, args.words or sorted({min(3, n_digits), n_digits}),
                        args.shots))
    if args.v1:
        root = Path(args.v1)
        if not root.is_dir():
            raise CLIError(f"--v1 {root}: not a folder")
        words = [w.strip() for w in args.v1_words.split(",") if w.strip()]
        if len(words) < 2:
            raise CLIError(f"--v1-words needs at least 2 words, got {args.v1_words!r}")
        corpora.append(("v1", *_v1_clips(root, words), False, [len(words)], args.v1_shots))
    for name, paths, words, speakers, by_speaker, n_words, shots in corpora:
        overlap = _vocab_overlap(bundle, set(words))
        if overlap:
            notes.append(overlap)
            print(f"warning: {overlap}", file=sys.stderr)
        emb = _embed(detector, paths, name, args.channel_rate)
        corpus = transfer.Corpus(name, emb, words, speakers, exits)
        for nw in n_words:
            for sh in shots:
                try:
                    r = transfer.run(corpus, num_words=nw, shots=sh, draws=args.draws,
                                     seed=args.seed, heads=heads, C=args.C,
                                     by_speaker=by_speaker)
                except ValueError as e:
                    raise CLIError(str(e)) from e
                results.append(r)
                print(transfer.table_markdown([r]).splitlines()[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"bundle": str(args.bundle), "source": bundle.manifest.get("source"),
           "draws": args.draws, "seed": args.seed, "C": args.C,
           "channel_rate": args.channel_rate, "results": results, "notes": notes}
    atomic_write_json(out / "transfer.json", doc)
    md = (f"# Transfer to new words: {args.bundle}\n\nLinear probe on sign(embedding), "
          f"accuracy % per exit (in brackets: CWR* enrolment, % among the new words / among "
          f"all classes); train on one speaker, test on others; mean over speaker pairs and "
          f"{args.draws} draws"
          + (f"; every clip passed through {args.channel_rate} Hz" if args.channel_rate else "")
          + ".\n\n" + transfer.table_markdown(results)
          + "".join(f"\n- {n}" for n in notes))
    atomic_write_text(out / "transfer.md", md)
    print(md)
    print(f"wrote {out / 'transfer.json'} and {out / 'transfer.md'}")
    return 0
