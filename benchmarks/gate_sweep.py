#!/usr/bin/env python
"""Exit-rule sweep for issue #19: which cheap-stream rule keeps the detections and cuts the cost?

``kws bench-stream --gates`` runs the network once per rule and stream, so comparing more than a
handful of rules is slow and every row carries this VM's speed drift. This script runs the
network **once** per hop of each stream, with every stage, and records each stage's outputs and
wall time. Every rule is then *replayed* on the recordings through the listener's own code
(:class:`bnnkws.app.listener.listen.StreamingDetector`, the energy gate, the smoother,
:meth:`bnnkws.deploy.runtime.Detector.decide` with the same policy and stop rules), so its
detections are exactly what ``kws listen`` would produce, and its cost is

    cost per hop = measured frontend + gate + policy time of the replay
                   + sum over the stages the rule ran of that stage's median recorded time

(one stage-time table for all rules, so rules differ only by the stages they run, not by drift).
Rules: gate none/energy at several margins, x keyword-mass stop rule at several thresholds and
last exits (``KeywordMassRule(threshold, max_exit)``), x hop skipping at several idle
thresholds (``HopSkip``).

Pick a rule on the validation split (``--split validation``), then confirm it on the test split
with ``kws bench-stream`` (real runs); this script's costs are a model, its detections are not.

    .venv/bin/python benchmarks/gate_sweep.py app/default_bundle \\
        --data ../shared/data/speech_commands_v2_test --split validation --json /tmp/sweep.json
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np


class RecordingDetector:
    """A :class:`Detector` stand-in whose stages come from a per-hop recording.

    A hop is named by its stream and a hash of its log-mel window (the hop skipper classifies
    some windows late, so the hop count would not do). On a miss every stage runs (real
    interpreters) and its outputs and ms are stored; ``classify`` then replays the stored
    outputs through ``Detector.decide`` and charges each stage it consumed its median time.
    The hashing time is kept apart (``hash_ms``) so that it is not charged to the rule.
    """

    def __init__(self, detector):
        self.detector = detector
        self.labels = detector.labels
        self.bundle = detector.bundle
        self.cache: dict = {}
        self.key = None
        self.stage_times: list = [[] for _ in detector.stages]
        self.stage_median = None
        self.charged_ms = 0.0  # modelled stage time of the hops replayed since the last reset
        self.hash_ms = 0.0
        self.stream = None

    def _record(self, features):
        d = self.detector
        runner, x = d._first(None, features)
        outs = []
        for i, (out, ms) in enumerate(d._stage_outputs(runner, x)):
            self.stage_times[i].append(ms)
            outs.append({"embedding": np.array(out["embedding"])} if "embedding" in out else {})
        return outs

    def classify(self, features=None, stop=None, audio=None):
        t = time.perf_counter()
        k = (self.stream, hashlib.blake2b(np.ascontiguousarray(features).tobytes(),
                                          digest_size=16).digest())
        self.hash_ms += (time.perf_counter() - t) * 1000.0
        outs = self.cache.get(k)
        if outs is None:
            outs = self.cache[k] = self._record(features)
        med = self.stage_median

        def replay():
            for i, out in enumerate(outs):
                self.charged_ms += 0.0 if med is None else med[i]
                yield out, 0.0

        return self.detector.decide(replay(), stop=stop)

    def freeze(self):
        self.stage_median = [float(np.median(t)) for t in self.stage_times]


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1f}%"


def run_rule(rec, smoother, stream_name, stream, gate, stop, hop_ms, skip=None):
    from bnnkws.app.bench import stream as stream_bench
    from bnnkws.app.listener.listen import StreamingDetector

    sd = StreamingDetector(rec, smoother, hop_ms=hop_ms, gate=gate, stop=stop, skip=skip,
                           warmup=False)
    rec.stream = stream_name
    rec.charged_ms = rec.hash_ms = 0.0
    stats, summary = stream_bench.run_benchmark(sd, stream, progress=False)
    row = stream_bench.report_dict(stats, summary, {})
    hops = max(1, summary.hops)
    row["overhead_ms_per_hop"] = (sum(summary.latencies_ms) - rec.hash_ms) / hops
    row["stage_ms_per_hop"] = rec.charged_ms / hops
    row["model_ms_per_hop"] = row["overhead_ms_per_hop"] + row["stage_ms_per_hop"]
    return row


def build_streams(det, args):
    """``(keyword stream, [(name, stream)])``: the clean stream of ``args.split``'s clips, the
    same keywords at each ``args.snr`` and the noise-only stream, as ``kws bench-stream`` builds
    them (``args`` from :func:`stream_parser`)."""
    from bnnkws.app.bench import stream as stream_bench
    from bnnkws.kws.data import load_dataset

    cfg = det.bundle.frontend
    ds = load_dataset(args.data, seed=det.bundle.split_seed if args.split_seed is None
                      else args.split_seed)
    base = stream_bench.build_stream(ds.split(args.split), minutes=args.minutes, seed=args.seed,
                                     sample_rate=cfg.sample_rate, clip_samples=cfg.clip_samples)
    noises = stream_bench.load_noise(stream_bench.default_noise_dir(ds.root), cfg.sample_rate)
    snrs = [float(x) for x in args.snr.split(",") if x.strip()]
    streams = [("clean", base)] + stream_bench.noisy_streams(
        base, noises, snrs, noise_only_minutes=args.noise_only_minutes, seed=args.seed)
    print(f"{args.split}: {len(base.keywords)} keywords, {len(streams)} streams", flush=True)
    return base, streams


def stream_parser(doc: str, minutes: float) -> argparse.ArgumentParser:
    """The options every replay sweep shares: the bundle and the streams :func:`build_streams`
    makes (``minutes`` long by default)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", help="bundle directory from `kws export`")
    ap.add_argument("--data", required=True, help="dataset the bundle was trained on (its splits)")
    ap.add_argument("--split", default="validation", choices=["validation", "testing"],
                    help="clips for the streams; tune on validation (default), confirm on testing")
    ap.add_argument("--minutes", type=float, default=minutes,
                    help=f"keyword stream length (default {minutes:g})")
    ap.add_argument("--snr", default="20,10,5,0", help="SNR rows in dB (default 20,10,5,0)")
    ap.add_argument("--noise-only-minutes", type=float, default=10.0,
                    help="noise-only stream at the 10 dB level, for false accepts (default 10)")
    ap.add_argument("--seed", type=int, default=0, help="stream seed (default 0)")
    ap.add_argument("--split-seed", type=int, default=None,
                    help="speaker-split seed of --data (default: the bundle's training seed)")
    return ap


def main(argv=None) -> int:
    ap = stream_parser(__doc__, 5.0)
    ap.add_argument("--margins", default="6,9,12", help="energy-gate margins in dB to try")
    ap.add_argument("--mass", default="0,0.05,0.1,0.2,0.3,0.5",
                    help="keyword-mass thresholds to try (0 = no mass rule)")
    ap.add_argument("--mass-max-exit", default="1,2,3,4",
                    help="last exit at which the mass rule may stop, values to try")
    ap.add_argument("--skip", default="0,0.1",
                    help="hop-skip idle thresholds to try (0 = no hop skipping)")
    ap.add_argument("--skip-hops", default="1", help="hop-skip run lengths to try (default 1)")
    ap.add_argument("--json", help="write every row here")
    args = ap.parse_args(argv)

    from bnnkws.app.listener import gates
    from bnnkws.app.listener.smoothing import RecognizeCommands
    from bnnkws.deploy.runtime import Detector
    from bnnkws.kws.policy import KeywordMassRule

    det = Detector(args.bundle, num_threads=1)
    cfg = det.bundle.frontend
    _, streams = build_streams(det, args)

    rec = RecordingDetector(det)
    smoother = RecognizeCommands(det.labels)
    t0 = time.perf_counter()
    # Recording pass: every hop of every stream, all stages (gate none records every window).
    for name, st in streams:
        run_rule(rec, smoother, name, st, None, None, 100.0)
        print(f"recorded {name}: {len(rec.cache)} hops so far ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    rec.freeze()
    print("median stage ms:", [round(x, 3) for x in rec.stage_median], flush=True)

    margins = [None] + [float(x) for x in args.margins.split(",") if x.strip()]
    masses = [float(x) for x in args.mass.split(",") if x.strip()]
    max_exits = [int(x) for x in args.mass_max_exit.split(",") if x.strip()]
    skips = [float(x) for x in args.skip.split(",") if x.strip()]
    runs = [int(x) for x in args.skip_hops.split(",") if x.strip()]
    rules = []
    for m, t, sk in itertools.product(margins, masses, skips):
        for me in (max_exits if t > 0 else [None]):
            for run in (runs if sk > 0 else [None]):
                rules.append((m, t, me, sk, run))
    rows = []
    for m, t, me, sk, run in rules:
        r_rows = {}
        for name, st in streams:
            gate = None if m is None else gates.EnergyGate(det.labels, cfg.num_frames, margin_db=m)
            stop = KeywordMassRule(det.labels, t, max_exit=me) if t > 0 else None
            skip = gates.HopSkip(det.labels, sk, run) if sk > 0 else None
            r_rows[name] = run_rule(rec, smoother, name, st, gate, stop, 100.0, skip)
        rule = {"margin_db": m, "mass": t, "mass_max_exit": me, "skip_mass": sk, "skip_hops": run}
        rows.append({"rule": rule, "streams": r_rows})
        cells = "  ".join(f"{n.split(' (')[0]}: {_pct(r['correct_pct'])} "
                          f"{r['false_accepts_per_hour']:.0f}/h {r['model_ms_per_hop']:.2f}ms"
                          for n, r in r_rows.items())
        print(f"gate {'none' if m is None else f'energy {m:g}dB':<12s} mass {t:<4g} <=exit "
              f"{me if me else '-'} skip {sk:<4g} x{run or 0} {cells}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"stage_median_ms": rec.stage_median,
                                               "split": args.split, "rows": rows}, indent=1))
        print("wrote", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
