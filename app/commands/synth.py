"""`kws synth`: a folder-per-class keyword dataset spoken by espeak-ng and flite voices."""
from __future__ import annotations

import argparse
import time

from bnnkws.app.cli import CLIError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate a keyword dataset with espeak-ng/flite (bootstrap words no dataset has)",
        description=(
            "Speak each word with many synthetic speakers (espeak-ng voices and variants; "
            "with --engine flite also CMU Flite's voices at five vocal-tract lengths) at "
            "random rates and pitches, resample to 16 kHz, place it at a random position in one second at a "
            "random level with a little white/pink noise, and write OUT/<word>/"
            "<speaker>_nohash_<n>.wav. The result is a folder-per-class dataset that "
            "`kws data summary` and `kws train` read and split by speaker (voice)."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--words", required=True,
                   help="comma-separated words or short phrases, e.g. \"yes,no,marvin\"")
    p.add_argument("--out", required=True, help="output folder (created; same-named clips are "
                                                "overwritten)")
    p.add_argument("--per-word", type=int, default=100, help="clips per word")
    p.add_argument("--speakers", type=int, default=None,
                   help="voice+variant pairs to draw from (default max(12, per-word/2))")
    p.add_argument("--seed", type=int, default=0, help="seed: same seed, same clips")
    p.add_argument("--engine", default="espeak-ng",
                   help="comma-separated synthesizers sharing the speaker pool equally: "
                        "espeak-ng (formant voices), flite (kal16 and three voices built from "
                        "CMU ARCTIC speakers' recordings; `apt-get install flite`)")
    p.add_argument("--jobs", type=int, default=2, help="espeak-ng processes run in parallel")
    p.set_defaults(func=run)


def run(args) -> int:
    from bnnkws.kws.data.synth import SynthError, synthesize

    words = [w.strip() for w in args.words.split(",") if w.strip()]
    if not words:
        raise CLIError(f"--words {args.words!r} names no word")
    engines = [e.strip() for e in args.engine.split(",") if e.strip()]
    t0 = time.time()
    try:
        counts = synthesize(words, args.out, per_word=args.per_word, seed=args.seed,
                            speakers=args.speakers, jobs=args.jobs, engines=engines)
    except (SynthError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    total = sum(counts.values())
    print(f"wrote {total} clips ({', '.join(f'{w}: {n}' for w, n in counts.items())}) to "
          f"{args.out} in {time.time() - t0:.1f} s")
    print(f"next: kws data summary {args.out}")
    return 0
