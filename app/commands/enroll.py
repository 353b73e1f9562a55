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
    p.add_argument("--synth", type=int, default=0, metavar="N",
                   help="also enrol N takes of the typed word spoken by espeak-ng and flite "
                        "voices (needs `espeak-ng` and `flite` installed): extra positives in "
                        "voices your own takes do not have (default 0: none)")
    p.add_argument("--negatives", metavar="DIR", default=None,
                   help="folder of recordings that must NOT trigger the word (a TV, a "
                        "similar-sounding name); trained as _unknown_ and kept in the memory")
    p.add_argument("--ratio", type=float, default=None,
                   help="replayed memory samples per new sample in each minibatch "
                        "(default 4, the thesis' 1:4)")
    p.add_argument("--augment", type=int, default=None,
                   help="augmented copies per take (speed/pitch, shift, gain, memory noise; "
                        "default 8)")
    p.add_argument("--target-fa", type=float, default=None, metavar="PER_HOUR",
                   help="false accepts per hour the word's threshold is calibrated for "
                        "(default 2)")
    p.add_argument("--threshold", type=float, default=None,
                   help="set the word's detection threshold instead of calibrating it")
    p.add_argument("--min-exit", type=int, default=None,
                   help="set the word's minimum exit instead of calibrating it")
    add_rule_options(p)
    p.add_argument("--seed", type=int, default=0,
                   help="seed of augmentation and replay draws (default 0)")
    p.set_defaults(func=run_enroll)

    f = subparsers.add_parser("forget", help="remove a word from a bundle",
                              description="Remove a word's unit from every exit head (atomic; "
                                          "recorded in the manifest's enrolment history).")
    f.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    f.add_argument("word", metavar="WORD", help="the word to remove")
    f.set_defaults(func=run_forget)

    m = subparsers.add_parser(
        "memory", help="add, rebuild or inspect a bundle's replay memory",
        description="The replay memory holds the 1-bit head inputs of every exit for a "
                    "class-balanced sample of the model's training split (every class, "
                    "_silence_ and _unknown_ with their source words included) plus a few "
                    "background-noise windows. Enrolment replays it so old words are not "
                    "forgotten, and calibrates each new word's threshold on it. `build` embeds "
                    "the training split (recorded in the manifest: data, task, split seed) "
                    "with the bundle's own stages and swaps the memory in atomically; every "
                    "other file of the bundle stays byte-identical.")
    msub = m.add_subparsers(dest="memory_command", required=True, metavar="ACTION")
    mb = msub.add_parser("build", help="build (or rebuild) the memory from the training data",
                         description="Embed the bundle's training split into its replay memory.")
    mb.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    mb.add_argument("--data", default=None, metavar="DIR",
                    help="the data the model trained on (default: the folder the manifest "
                         "records, if it exists here)")
    mb.add_argument("--capacity", type=int, default=None,
                    help="samples kept, shared equally by the classes (default 1536: ~290 KiB "
                         "for the shipped model's 1472 bits per sample)")
    mb.add_argument("--noise-windows", type=int, default=None,
                    help="one-second background-noise windows kept for enrolment's "
                         "augmentation, 32 KiB each (default 6)")
    mb.add_argument("--noise", default=None, metavar="DIR",
                    help="folder of background-noise WAVs for those windows (default: the "
                         "training split's noise / _silence_ recordings)")
    mb.add_argument("--max-kib", type=float, default=None,
                    help="byte budget: without --capacity, the capacity is the largest that "
                         "fits (at most the default); a memory still larger is refused "
                         "(default: no limit; the shipped bundle uses 512)")
    mb.add_argument("--max-clips", type=int, default=None,
                    help="offer only this many training clips (a random subset) to the "
                         "reservoir: quicker, for tests and trials (default: all)")
    mb.add_argument("--seed", type=int, default=0, help="reservoir and noise-window seed "
                                                        "(default 0)")
    mb.add_argument("--backend", default="auto", choices=["auto", "lce", "litert"],
                    help="interpreter for the stages (default: LCE when available)")
    mb.set_defaults(func=run_memory_build)
    ms = msub.add_parser("show", help="what the memory holds",
                         description="Print the memory's size and per-class counts.")
    ms.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    ms.add_argument("--json", action="store_true", help="print machine-readable JSON")
    ms.set_defaults(func=run_memory_show)

    w = subparsers.add_parser("words", help="list the words a bundle knows and its enrolments",
                              description="List a bundle's words, which ones were enrolled, "
                                          "and the enrolment history.")
    w.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    w.add_argument("--json", action="store_true", help="print machine-readable JSON")
    w.add_argument("--set", metavar="WORD", default=None,
                   help="override WORD's operating point with --threshold and/or --min-exit")
    w.add_argument("--threshold", type=float, default=None,
                   help="with --set: the word's detection threshold (0-1) for `kws listen`")
    w.add_argument("--min-exit", type=int, default=None,
                   help="with --set: the earliest exit allowed to decide for the word")
    w.set_defaults(func=run_words)


def add_rule_options(p) -> None:
    """The enrolment rule's options, shared by `kws enroll` and `kws bench-enroll` so the
    benchmark measures exactly what a user can set."""
    p.add_argument("--rule", default=None,
                   help="how the word's column is learnt: cwr (CWR* against the replay "
                        "memory), cwr+align (its norm set to the old words'), cwr+bic (a "
                        "scale and bias fitted on held-out memory), imprint (the takes' class "
                        "mean, no SGD), imprint+cwr, imprint+cwr+bic (default: the bundle's "
                        "enrolment settings, else cwr)")
    p.add_argument("--warp", default=None, metavar="LO,HI",
                   help="also warp the augmented takes' spectra by a factor in [LO, HI] "
                        "(vocal-tract length: other voices), e.g. 0.87,1.15; 'none' for no "
                        "warp (default: the bundle's enrolment settings, else none)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="L2 on the heads' weights while the word is learnt: fewer false "
                        "accepts, less cost to the old words (default: the bundle's enrolment "
                        "settings, else 0 (plain CWR*); 0.01 measured fewer false accepts)")
    p.add_argument("--margin", type=float, default=None,
                   help="train the word to win by this many logits on its takes (LDAM), which "
                        "moves its boundary out towards other voices (default: the bundle's "
                        "enrolment settings, else 0)")
    p.add_argument("--margin-against", default=None, choices=["all", "unknown"],
                   help="whom the margin is taken against: every other label (all) or only "
                        "_unknown_ and _silence_ (unknown), the rivals that pull other voices "
                        "away (default: the bundle's enrolment settings, else all)")


def rule_options(args) -> dict:
    """The rule options a user gave (None = the bundle's enrolment settings)."""
    given = (("rule", args.rule), ("warp", parse_warp(args.warp)),
             ("weight_decay", args.weight_decay), ("margin", args.margin),
             ("margin_against", args.margin_against))
    return {k: v for k, v in given if v is not None}


def parse_warp(text):
    """``"LO,HI"`` -> ``(lo, hi)``; ``"none"`` -> ``(1.0, 1.0)`` (no warp); None -> None."""
    from bnnkws.app.cli import CLIError

    if text is None:
        return None
    if str(text).strip().lower() in ("none", "off", "0"):
        return (1.0, 1.0)
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise CLIError(f"--warp must be LO,HI (e.g. 0.87,1.15) or none, got {text!r}") from None
    return (lo, hi)


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
    from bnnkws.kws.continual.cwr import parse_bits

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
        if args.synth:
            clips, names, source = with_synth_takes(args.word, args.synth, args.seed, clips,
                                                    names, source)
        negatives = None
        if args.negatives:
            nfiles = list_clips(args.negatives)
            if not nfiles:
                raise EnrolmentError(f"{args.negatives}: no recordings (wav/flac/ogg) found")
            negatives = load_clips(nfiles, fe.sample_rate, fe.clip_samples, min_examples=1)
        import warnings

        from bnnkws.deploy import enroll as E

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = enroll(args.bundle, args.word, clips, update=args.update, names=names,
                         source=source, lr=args.lr, epochs=args.epochs, lp=lp, hp=hp,
                         progress=False, seed=args.seed, negatives=negatives,
                         ratio=E.DEFAULT_RATIO if args.ratio is None else args.ratio,
                         augment=E.DEFAULT_AUGMENT if args.augment is None else args.augment,
                         target_fa_per_hour=args.target_fa, threshold=args.threshold,
                         min_exit=args.min_exit, **rule_options(args))
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
    except (EnrolmentError, BundleError, AudioError, ValueError, FileNotFoundError) as e:
        raise _cli_error(e) from e
    lines, warns = enrol_report(res, args.bundle)
    for line in lines:
        print(line)
    for w in warns:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def with_synth_takes(word: str, n: int, seed: int, clips, names, source,
                     engines=None) -> tuple:
    """The user's takes plus ``n`` synthetic takes of ``word`` (``kws.data.synth.takes``)."""
    import numpy as np

    from bnnkws.deploy.enroll import EnrolmentError
    from bnnkws.kws.data import synth

    if n < 0:
        raise EnrolmentError(f"--synth must be 0 or more, got {n}")
    try:
        extra, voices = synth.takes(word, n, seed=seed, engines=engines or synth.ENGINES)
    except synth.SynthError as e:
        raise EnrolmentError(f"--synth: {e}") from e
    return (np.concatenate([clips, extra[:, :clips.shape[1]]]),
            list(names) + [f"synth:{v}" for v in voices], f"{source}+synth")


def enrol_report(res, bundle=None) -> tuple:
    """``(lines, warnings)`` that report an enrolment (``EnrolResult``): what `kws enroll`
    prints, and the web console shows (``bnnkws.app.serve``)."""
    verb = "updated" if res.updated else "enrolled"
    where = f" in {bundle}" if bundle is not None else ""
    lines = [f"{verb} {res.word!r} from {res.examples} examples{where} "
             f"(embedding {res.seconds_embed:.2f} s, CWR* {res.seconds_update * 1e3:.0f} ms, "
             f"{res.seconds_total:.2f} s in all; training accuracy {res.train_accuracy:.0%})"]
    if res.replayed:
        lines.append(f"replayed {res.replayed} memory samples"
                     + (f"; {res.moved} memory samples of _unknown_ were {res.word!r} and moved "
                        f"to it" if res.moved else "")
                     + (f"; {res.negatives} negatives" if res.negatives else ""))
    op = res.operating_point
    cal = op.get("calibration", {})
    lines.append(f"operating point: threshold {op['threshold']:.3f} ({op['threshold_source']}), "
                 f"min exit {op['min_exit']} ({op['min_exit_source']})"
                 + (f"; on calibration takes {cal['recall']:.0%} recall, "
                    f"{cal['negative_rate']:.2%} of {cal['negatives']} negatives above it"
                    if cal else ""))
    heard = op.get("takes_heard_as")
    if heard:
        lines.append("before learning it, the model heard the takes as: "
                     + ", ".join(f"{k} {v}" for k, v in heard.items()))
    warns = [f"{res.word!r} may be confused with {other!r} ({heard[other]} of {res.examples} "
             f"takes were heard as {other!r} before enrolment): expect each to fire on the "
             f"other; a more distinct word keeps them apart (`kws forget {res.word}`, then "
             f"enrol another)" for other in op.get("confusable_with", [])]
    lines.append(f"words ({len(res.labels)}): {', '.join(res.labels)}")
    return lines, warns


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
    from bnnkws.deploy.enroll import EnrolmentError, set_operating_point, words

    try:
        if args.set is not None:
            if args.threshold is None and args.min_exit is None:
                raise EnrolmentError("--set WORD needs --threshold and/or --min-exit")
            set_operating_point(args.bundle, args.set, args.threshold, args.min_exit)
        elif args.threshold is not None or args.min_exit is not None:
            raise EnrolmentError("--threshold/--min-exit need --set WORD")
        info = words(args.bundle)
    except (EnrolmentError, BundleError, FileNotFoundError) as e:
        raise _cli_error(e) from e
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for lab in info["labels"]:
        e = info["enrolled"].get(lab)
        note = (f"  enrolled {e.get('time', '?')} from {e.get('examples', '?')} examples"
                if e else "")
        op = info["operating_points"].get(lab)
        if op:
            note += (f"; threshold {op['threshold']:.3f} ({op.get('threshold_source', '?')}), "
                     f"min exit {op['min_exit']} ({op.get('min_exit_source', '?')})")
            if op.get("confusable_with"):
                note += "; may be confused with " + ", ".join(op["confusable_with"])
        print(f"{lab}{note}")
    mem = info.get("memory")
    print("\nreplay memory: " + (f"{mem['samples']} samples, {mem['bytes'] / 1024:.0f} KiB"
                                 if mem else "none (enrolment cannot protect old words; "
                                             "`kws memory build` adds one)"))
    if info["history"]:
        print(f"\nhistory ({len(info['history'])}):")
        for e in info["history"]:
            print(f"  {e.get('time', '?')}  {e.get('action', '?'):7s} {e.get('word', '')}"
                  + (f"  ({e['examples']} examples, {e.get('source', '')})" if "examples" in e else ""))
    return 0


def run_memory_build(args) -> int:
    from bnnkws.deploy.bundle import BundleError
    from bnnkws.deploy.memory import (DEFAULT_CAPACITY, DEFAULT_NOISE_WINDOWS, MemoryBuildError,
                                      build_memory, install_memory)

    nw = DEFAULT_NOISE_WINDOWS if args.noise_windows is None else args.noise_windows
    cap = args.capacity
    if cap is None and args.max_kib is not None:
        cap = capacity_for_budget(args.bundle, int(args.max_kib * 1024), nw)
    cap = DEFAULT_CAPACITY if cap is None else cap
    if cap < 1:
        raise _cli_error(ValueError(f"--capacity must be >= 1, got {cap}"))
    if nw < 0:
        raise _cli_error(ValueError(f"--noise-windows must be >= 0, got {nw}"))
    t = time.perf_counter()
    try:
        mem, built = build_memory(args.bundle, args.data, capacity=cap, noise_windows=nw,
                                  noise_dir=args.noise, seed=args.seed, progress=True,
                                  backend=args.backend, max_clips=args.max_clips)
        max_bytes = None if args.max_kib is None else int(args.max_kib * 1024)
        b = install_memory(args.bundle, mem, built, max_bytes=max_bytes)
    except (MemoryBuildError, BundleError, FileNotFoundError, ValueError) as e:
        raise _cli_error(e) from e
    info = b.manifest["memory"]
    print(f"memory: {info['samples']} samples ({info['bits_per_sample']} bits each) + "
          f"{info['noise_windows']} noise windows, {info['bytes'] / 1024:.0f} KiB, in "
          f"{args.bundle} ({time.perf_counter() - t:.0f} s)")
    print("per class: " + ", ".join(f"{k} {v}" for k, v in info["classes"].items()))
    return 0


def capacity_for_budget(bundle_path, max_bytes: int, noise_windows: int) -> int:
    """The largest capacity (at most the default) whose memory file fits ``max_bytes``:
    packed bits of every exit + 5 bytes of label/source/kind per sample, 2 bytes per noise
    sample, and 8 KiB for the file's headers and name tables."""
    import math

    from bnnkws.deploy.bundle import Bundle
    from bnnkws.deploy.memory import DEFAULT_CAPACITY

    b = Bundle.load(bundle_path)
    bits = sum(int(b.heads[k]["kernel"].shape[0]) for k in b.exits)
    per = math.ceil(bits / 8) + 5
    room = max_bytes - 8 * 1024 - noise_windows * 2 * b.frontend.clip_samples
    return max(1, min(DEFAULT_CAPACITY, room // per))


def run_memory_show(args) -> int:
    import json

    from bnnkws.deploy.bundle import Bundle, BundleError

    try:
        info = Bundle.load(args.bundle).manifest.get("memory")
    except (BundleError, FileNotFoundError) as e:
        raise _cli_error(e) from e
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    if not info:
        print(f"{args.bundle}: no replay memory (add one with `kws memory build "
              f"{args.bundle} --data DIR`)")
        return 1
    print(f"{info['file']}: {info['samples']}/{info['capacity']} samples, "
          f"{info['bits_per_sample']} bits each, {info['noise_windows']} noise windows, "
          f"{info['bytes'] / 1024:.0f} KiB")
    print("per class: " + ", ".join(f"{k} {v}" for k, v in info["classes"].items()))
    print("kinds: " + ", ".join(f"{k} {v}" for k, v in info.get("kinds", {}).items()))
    return 0
