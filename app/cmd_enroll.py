"""`kws enroll`, `kws forget`, `kws words`: teach a deployed bundle new words with CWR*.

Enrolment needs only numpy and the bundle's interpreter (no TensorFlow): the backbone is frozen
and only the numpy heads learn. The bundle is replaced atomically, so `kws listen` on the same
bundle picks the new word up at its next start, and an interrupted enrolment changes nothing.
"""
from __future__ import annotations

import argparse
import sys
import time


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "enroll", help="teach a bundle a new word (CWR*) from recordings or the microphone",
        description="Add a word to a bundle from a few examples with CWR*: the binary backbone "
                    "stays frozen, each exit head gets a new unit. The bundle is updated "
                    "atomically and its manifest records the enrolment history.")
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory (from `kws export`)")
    p.add_argument("--word", required=True, help="the word to add (or update with --update)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="from_dir", metavar="DIR",
                     help="folder of recordings of the word (wav/flac/ogg, any rate; the "
                          "loudest second of each file is used)")
    src.add_argument("--record", type=int, metavar="N",
                     help="record N examples from the microphone, with prompts and a level meter")
    p.add_argument("--update", action="store_true",
                   help="the word already exists: add these examples to it instead of failing")
    p.add_argument("--device", default=None,
                   help="microphone for --record: index or name substring (default: system input)")
    p.add_argument("--seconds", type=float, default=1.5,
                   help="length of each --record take in seconds (default 1.5)")
    p.add_argument("--save-dir", default=None, metavar="DIR",
                   help="also save --record takes as WAV files here (to re-enrol later)")
    p.add_argument("--epochs", type=int, default=30, help="SGD epochs over the examples (default 30)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default 0.05)")
    p.add_argument("--lp-bits", default="float",
                   help="forward-pass precision of the head: 8, 16, 32 or float (default float)")
    p.add_argument("--hp-bits", default="float",
                   help="weight-update precision of the head: 8, 16, 32 or float (default float)")
    p.add_argument("--backend", default="auto", choices=["auto", "lce", "litert"],
                   help="interpreter for the frozen stages (default: LCE when available)")
    p.set_defaults(func=run_enroll)

    f = subparsers.add_parser("forget", help="remove a word from a bundle",
                              description="Remove a word's unit from every exit head (atomic; "
                                          "recorded in the manifest's enrolment history).")
    f.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    f.add_argument("word", metavar="WORD", help="the word to remove")
    f.set_defaults(func=run_forget)

    w = subparsers.add_parser("words", help="list the words a bundle knows and its enrolments",
                              description="List a bundle's words, which ones were enrolled, "
                                          "and the enrolment history.")
    w.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    w.add_argument("--json", action="store_true", help="print machine-readable JSON")
    w.set_defaults(func=run_words)


def _cli_error(exc):
    from bnnkws.app.cli import CLIError

    return CLIError(str(exc))


def record_takes(n: int, seconds: float, device=None, sample_rate: int = 16000,
                 out=sys.stderr):
    """Prompt and record ``n`` takes; a level meter shows the input while recording."""
    import numpy as np

    from bnnkws.frontend.microphone import MicrophoneStream, level_db

    takes = []
    with MicrophoneStream(sample_rate=sample_rate, device=device) as mic:
        for i in range(n):
            print(f"take {i + 1}/{n}: say the word after the beep...", file=out, flush=True)
            # drain what was buffered while the user read the prompt
            t_end = time.monotonic() + 0.3
            while time.monotonic() < t_end:
                mic.read(timeout=0.05)
            print("\a", end="", file=out, flush=True)
            need = int(seconds * sample_rate)
            blocks, got = [], 0
            while got < need:
                b = mic.read(timeout=1.0)
                if b.size == 0:
                    continue
                blocks.append(b)
                got += b.size
                db = level_db(b)
                bar = "#" * int(max(0, min(40, (db + 60) * 40 / 60)))
                print(f"\r  level {db:6.1f} dBFS |{bar:<40s}|", end="", file=out, flush=True)
            print("", file=out)
            takes.append(np.concatenate(blocks)[:need])
    return takes


def run_enroll(args) -> int:
    import numpy as np

    from bnnkws.deploy.bundle import BundleError
    from bnnkws.deploy.enroll import (EnrolmentError, check_enrolment_support, enroll,
                                      list_clips, load_clips, loudest_window)
    from bnnkws.frontend.audio import AudioError
    from bnnkws.kws.cwr import parse_bits

    try:
        lp, hp = parse_bits(args.lp_bits), parse_bits(args.hp_bits)
        bundle = check_enrolment_support(args.bundle)
        fe = bundle.frontend
        if args.from_dir:
            files = list_clips(args.from_dir)
            if not files:
                raise EnrolmentError(f"{args.from_dir}: no recordings (wav/flac/ogg) found")
            clips = load_clips(files, fe.sample_rate, fe.clip_samples)
            names, source = [str(f) for f in files], str(args.from_dir)
        else:
            if args.record < 1:
                raise EnrolmentError(f"--record needs a positive number of takes, got {args.record}")
            from bnnkws.frontend.microphone import MicrophoneError

            try:
                takes = record_takes(args.record, args.seconds, args.device, fe.sample_rate)
            except MicrophoneError as e:
                raise EnrolmentError(str(e)) from e
            names = [f"take {i + 1}" for i in range(len(takes))]
            if args.save_dir:
                import soundfile as sf
                from pathlib import Path

                d = Path(args.save_dir)
                d.mkdir(parents=True, exist_ok=True)
                for i, t in enumerate(takes):
                    sf.write(d / f"{args.word}_{i + 1:02d}.wav", t, fe.sample_rate)
                names = [str(d / f"{args.word}_{i + 1:02d}.wav") for i in range(len(takes))]
            clips = np.stack([loudest_window(t, fe.clip_samples) for t in takes])
            source = "microphone"
        res = enroll(args.bundle, args.word, clips, update=args.update, names=names,
                     source=source, lr=args.lr, epochs=args.epochs, lp=lp, hp=hp,
                     progress=True)
    except (EnrolmentError, BundleError, AudioError, ValueError, FileNotFoundError) as e:
        raise _cli_error(e) from e
    verb = "updated" if res.updated else "enrolled"
    print(f"{verb} {res.word!r} from {res.examples} examples in {args.bundle} "
          f"(embedding {res.seconds_embed:.2f} s, CWR* {res.seconds_update * 1e3:.0f} ms, "
          f"training accuracy {res.train_accuracy:.0%})")
    print(f"words ({len(res.labels)}): {', '.join(res.labels)}")
    return 0


def run_forget(args) -> int:
    from bnnkws.deploy.bundle import BundleError
    from bnnkws.deploy.enroll import EnrolmentError, forget

    try:
        b = forget(args.bundle, args.word)
    except (EnrolmentError, BundleError, FileNotFoundError) as e:
        raise _cli_error(e) from e
    print(f"forgot {args.word!r}; words ({len(b.labels)}): {', '.join(b.labels)}")
    return 0


def run_words(args) -> int:
    import json

    from bnnkws.deploy.bundle import BundleError
    from bnnkws.deploy.enroll import words

    try:
        info = words(args.bundle)
    except (BundleError, FileNotFoundError) as e:
        raise _cli_error(e) from e
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for lab in info["labels"]:
        e = info["enrolled"].get(lab)
        note = (f"  enrolled {e.get('time', '?')} from {e.get('examples', '?')} examples"
                if e else "")
        print(f"{lab}{note}")
    if info["history"]:
        print(f"\nhistory ({len(info['history'])}):")
        for e in info["history"]:
            print(f"  {e.get('time', '?')}  {e.get('action', '?'):7s} {e.get('word', '')}"
                  + (f"  ({e['examples']} examples, {e.get('source', '')})" if "examples" in e else ""))
    return 0
