"""`kws listen`: spot keywords live from a microphone (or a file) with the early-exit runtime."""
from __future__ import annotations

import sys
from pathlib import Path

from bnnkws.app.cli import CLIError, delta_arg

DEFAULT_BUNDLE_DIRNAME = "default_bundle"
# The command users typed: the Pi runner (deploy's run_pi.py) reuses this module under its own name.
COMMAND = "kws listen"


def file_hint() -> str:
    return f"To stream a recording through the same path instead: {COMMAND} --input clip.wav"


def default_bundle_path() -> Path:
    """The bundle shipped inside the installed package (``bnnkws/app/default_bundle``)."""
    from importlib.resources import files

    return Path(str(files("bnnkws.app") / DEFAULT_BUNDLE_DIRNAME))


def register(subparsers) -> None:
    from bnnkws.app.listener.sources import DEFAULT_BLOCK_MS

    p = subparsers.add_parser(
        "listen",
        help="spot keywords live from the microphone (or a file) and show the exit each used",
        description=(
            "Stream audio (default microphone, --device, or --input FILE) through the streaming "
            "log-mel frontend; every hop classify the last second with the early-exit runtime and "
            "turn the per-hop results into detections (average window, threshold, minimum count, "
            "suppression; _silence_ and _unknown_ never fire). On a terminal a live panel shows "
            "the input level, the current top label, the exit used and the per-hop latency."
        ),
    )
    p.add_argument("bundle", nargs="?", default=None, metavar="BUNDLE",
                   help="bundle directory from `kws export` (default: the bundle shipped with "
                        "the package)")
    src = p.add_argument_group("audio source")
    src.add_argument("--device", default=None,
                     help="input device: index or (part of) its name, see --list-devices "
                          "(default: the system's default input)")
    src.add_argument("--list-devices", action="store_true",
                     help="list audio devices and exit")
    src.add_argument("--input", metavar="FILE", default=None,
                     help="stream this sound file instead of the microphone (same detection path)")
    src.add_argument("--fast", action="store_true",
                     help="with --input: process the file as fast as possible instead of in real "
                          "time (same detections)")
    src.add_argument("--block-ms", type=float, default=DEFAULT_BLOCK_MS,
                     help="audio block size in milliseconds (default: %(default)s)")
    src.add_argument("--duration", type=float, default=None, metavar="S",
                     help="stop after S seconds of audio (default: until the file ends or Ctrl-C)")
    add_detection_args(p)
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true",
                     help="print one JSON object per detection on stdout (time_s, label, "
                          "probability, exit, latency_ms) and nothing else there; the summary "
                          "(mean ms per hop, share of hops gated / per exit) goes to stderr, "
                          "its last line one JSON object {\"summary\": {...}}")
    p.set_defaults(func=run)


def add_detection_args(p) -> None:
    """Options of the detection path, shared by `kws listen` and `kws bench-stream`."""
    from bnnkws.app.listener import smoothing
    from bnnkws.app.listener.listen import DEFAULT_HOP_MS

    det = p.add_argument_group("detection")
    det.add_argument("--delta", type=delta_arg, default=None,
                     help="exit threshold on the normalised entropy, one number or one per exit "
                          "(default: the bundle's); lower = later, more accurate exits")
    det.add_argument("--hop-ms", type=float, default=DEFAULT_HOP_MS,
                     help="classify the last second every this many ms, a multiple of 10 "
                          "(default: %(default)s)")
    det.add_argument("--average-window-ms", type=float, default=smoothing.DEFAULT_AVERAGE_WINDOW_MS,
                     help="average the per-hop probabilities over this window "
                          "(default: %(default)s)")
    det.add_argument("--threshold", type=float, default=smoothing.DEFAULT_THRESHOLD,
                     help="fire when the averaged top probability exceeds this; enrolled "
                          "words use their own calibrated threshold (`kws words` shows it, "
                          "`kws words --set` changes it) (default: %(default)s)")
    det.add_argument("--min-count", type=int, default=smoothing.DEFAULT_MIN_COUNT,
                     help="minimum number of results in the window before anything can "
                          "fire (default: %(default)s)")
    det.add_argument("--suppression-ms", type=float, default=smoothing.DEFAULT_SUPPRESSION_MS,
                     help="no new detection within this long after one "
                          "(default: %(default)s)")
    from bnnkws.app.listener import gates

    det.add_argument("--gate", choices=gates.GATES, default=gates.DEFAULT_GATE,
                     help="cheap hops beside the entropy rule: 'energy' skips the network for a "
                          "hop whose last second holds no frame louder than the tracked "
                          "background by --gate-margin-db; 'mass' leaves an early exit when "
                          "p(keyword) = 1 - p(_silence_) - p(_unknown_) < --mass-threshold; "
                          "'skip' interpolates a hop between two idle neighbours (keyword "
                          "probability below --skip-mass) instead of classifying it; components "
                          "combine with '+'; 'none' the entropy rule alone "
                          "(default: %(default)s, the best in `kws bench-stream --gates`)")
    det.add_argument("--gate-margin-db", type=float, default=gates.DEFAULT_MARGIN_DB,
                     help="energy gate: a frame is speech-like when its energy exceeds the "
                          "background floor by this many dB (default: %(default)s)")
    det.add_argument("--mass-threshold", type=float, default=gates.DEFAULT_MASS_THRESHOLD,
                     help="mass rule: leave an early exit when the keyword probability is "
                          "below this (default: %(default)s)")
    det.add_argument("--skip-mass", type=float, default=gates.DEFAULT_SKIP_MASS,
                     help="hop skip: a hop is idle when its keyword probability is below this; "
                          "a hop between two idle ones is interpolated (default: %(default)s)")
    det.add_argument("--skip-hops", type=int, default=gates.DEFAULT_MAX_SKIP,
                     help="hop skip: interpolate at most this many hops in a row between two "
                          "idle ones; each adds one hop of delay to the hops it waits for "
                          "(default: %(default)s)")
    det.add_argument("--threads", type=int, default=1, help="interpreter threads per stage (default: %(default)s)")
    det.add_argument("--backend", choices=["auto", "lce", "litert"], default="auto",
                     help="TFLite runtime: LCE (binary kernels), portable LiteRT, or auto "
                          "(LCE when installed; default: %(default)s)")


def list_devices_text() -> str:
    from bnnkws.app.listener.sources import audio_devices_report

    return audio_devices_report()


def resolve_bundle(path) -> Path:
    if path is not None:
        return Path(path)
    bundle = default_bundle_path()
    if not (bundle / "manifest.json").is_file():
        raise CLIError(
            f"no bundle given and the default bundle is not installed (looked in {bundle}).\n"
            f"  Give one explicitly: {COMMAND} path/to/bundle   (make one with `kws train` then "
            "`kws export`),\n  or reinstall bnn-kws from a checkout that ships app/default_bundle/.")
    return bundle


def run(args) -> int:
    from bnnkws.app.listener.sources import SourceError, open_source

    if args.list_devices:
        try:
            text = list_devices_text()
        except SourceError as e:
            raise CLIError(f"{e}\n{file_hint()}") from e
        print(text)
        if "no audio capture device found" in text or "no device can record" in text:
            print(file_hint())
            return 1
        return 0
    if args.fast and args.input is None:
        raise CLIError("--fast only applies to --input FILE (a microphone runs in real time)")
    if args.duration is not None and not args.duration > 0:
        raise CLIError(f"--duration must be > 0 seconds, got {args.duration}")

    if args.input is not None and not Path(args.input).is_file():
        raise CLIError(f"input file not found: {args.input}")
    bundle_path = resolve_bundle(args.bundle)
    detector, streamer = build_streamer(bundle_path, args)

    from bnnkws.app.listener.listen import run_stream
    from bnnkws.app.listener.view import TerminalView, make_view
    from bnnkws.kws.policy import format_delta

    try:
        source = open_source(args.input, device=args.device, fast=args.fast,
                             sample_rate=streamer.cfg.sample_rate, block_ms=args.block_ms)
    except SourceError as e:
        hint = "" if args.input else "\n" + file_hint()
        raise CLIError(f"{e}{hint}") from e
    except FileNotFoundError as e:
        raise CLIError(str(e)) from e
    except ValueError as e:  # unreadable file (AudioError names the file and the problem)
        raise CLIError(str(e)) from e

    view = make_view(args.json, overflows=lambda: source.overflows,
                     num_exits=len(getattr(detector, "exits", []) or []) or None,
                     threshold=args.threshold)
    try:
        with source:
            title = f"kws listen - {source.describe()}"
            info = [
                f"bundle {bundle_path} ({len(streamer.labels)} labels, backend "
                f"{getattr(detector, 'backend', '?')}, "
                f"delta {format_delta(_delta(detector, args))}, "
                f"gate {args.gate})",
                f"hop {args.hop_ms:g} ms, average {args.average_window_ms:g} ms, threshold "
                f"{args.threshold:g}, min count {args.min_count}, suppression "
                f"{args.suppression_ms:g} ms" + ("" if args.input else "; Ctrl-C to stop"),
            ]
            view.start(title, info)
            summary = run_stream(_announce_audio(source, view), streamer, on_hop=view.hop,
                                 duration_s=args.duration, overflows=lambda: source.overflows)
    except SourceError as e:
        if isinstance(view, TerminalView):
            view.out.write("\x1b[?25h")
        raise CLIError(f"{e}" + ("" if args.input else "\n" + file_hint())) from e
    view.finish(summary)
    return 130 if summary.interrupted else 0


LISTENING = "listening: audio is arriving (first result after one second)"


def _announce_audio(source, view):
    """Pass blocks through; say once when the first one arrives. A capture device starts
    delivering some time after it is opened (about 0.5 s through PulseAudio): this line marks
    stream time zero for anyone watching stderr."""
    first = True
    for block in source:
        if first:
            view.message(LISTENING)
            first = False
        yield block


def _delta(detector, args):
    """The delta in force: the option's, else the detector's (a number or one per exit)."""
    if args.delta is not None:
        return args.delta
    v = getattr(detector, "delta", None)
    if isinstance(v, (int, float, list)):
        return v
    policy = getattr(detector, "policy", None)
    return getattr(policy, "delta", float("nan"))


def build_streamer(bundle_path, args):
    """Detector + smoother + streaming path from the CLI options (shared with bench-stream)."""
    from bnnkws.app.listener.listen import StreamingDetector

    detector = load_detector(bundle_path, delta=args.delta, num_threads=args.threads,
                             backend=args.backend)
    try:
        smoother = make_smoother(detector.labels, args, word_thresholds(detector))
        streamer = StreamingDetector(detector, smoother, hop_ms=args.hop_ms,
                                     **gate_parts(detector, args, getattr(args, "gate", "none")))
    except ValueError as e:
        raise CLIError(str(e)) from e
    return detector, streamer


def make_smoother(labels, args, label_thresholds=None):
    """The listener's RecognizeCommands from the detection options (``add_detection_args``)."""
    from bnnkws.app.listener.smoothing import RecognizeCommands

    return RecognizeCommands(
        labels, average_window_ms=args.average_window_ms, detection_threshold=args.threshold,
        minimum_count=args.min_count, suppression_ms=args.suppression_ms,
        label_thresholds=label_thresholds)


def word_thresholds(detector) -> dict:
    """Enrolled words' own detection thresholds from the bundle (`kws words` shows them;
    `--threshold` applies to every other word)."""
    bundle = getattr(detector, "bundle", None)
    words = ((getattr(bundle, "manifest", None) or {}).get("words") or {})
    return {w: float(v["threshold"]) for w, v in words.items()
            if w in detector.labels and "threshold" in v}


def load_detector(bundle_path, delta=None, num_threads=1, backend="auto"):
    from bnnkws.deploy.bundle import Bundle, BundleError
    from bnnkws.deploy.runtime import Detector

    try:
        bundle = Bundle.load(bundle_path)
        return Detector(bundle, delta=delta, num_threads=num_threads, backend=backend)
    except (BundleError, FileNotFoundError) as e:
        raise CLIError(str(e)) from e
    except ValueError as e:
        raise CLIError(f"{bundle_path}: {e}") from e


def gate_parts(detector, args, gate: str) -> dict:
    """``StreamingDetector`` keyword arguments for ``--gate``: ``gate`` (EnergyGate or None),
    ``stop`` (KeywordMassRule or None), ``skip`` (HopSkip or None); see
    bnnkws.app.listener.gates."""
    from bnnkws.app.listener import gates
    from bnnkws.app.listener.listen import _frontend_config
    from bnnkws.kws.policy import KeywordMassRule

    gates.check_gate(gate)
    parts = {"gate": None, "stop": None, "skip": None}
    if gates.uses_energy(gate):
        parts["gate"] = gates.EnergyGate(
            detector.labels, _frontend_config(detector).num_frames,
            margin_db=getattr(args, "gate_margin_db", gates.DEFAULT_MARGIN_DB))
    if gates.uses_mass(gate):
        parts["stop"] = KeywordMassRule(
            detector.labels, getattr(args, "mass_threshold", gates.DEFAULT_MASS_THRESHOLD))
    if gates.uses_skip(gate):
        parts["skip"] = gates.HopSkip(detector.labels,
                                      getattr(args, "skip_mass", gates.DEFAULT_SKIP_MASS),
                                      getattr(args, "skip_hops", gates.DEFAULT_MAX_SKIP))
    return parts


if __name__ == "__main__":  # pragma: no cover
    from bnnkws.app.cli import main

    sys.exit(main(["listen", *sys.argv[1:]]))
