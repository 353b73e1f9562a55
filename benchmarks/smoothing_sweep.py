#!/usr/bin/env python
"""Smoother sweep: which averaging window, detection threshold and minimum count turn the
per-hop results of the shipped model into the most correct detections in noise?

The listener's smoother (``RecognizeCommands``) was tuned on an older model. This script runs
the network once per hop of each stream (as ``gate_sweep.py`` does, whose recorder it uses)
and replays every smoother setting through the listener's own path (``StreamingDetector``
with the default gate), so its detections are exactly what ``kws listen --average-window-ms W
--threshold T --min-count N`` would give. Choose on the validation split, confirm on the test
split with ``kws bench-stream``:

    .venv/bin/python benchmarks/smoothing_sweep.py app/default_bundle \\
        --data ../shared/data/speech_commands_v2_test --split validation --minutes 15 \\
        --json /tmp/smoothing.json
"""
from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gate_sweep import RecordingDetector, build_streams, run_rule, stream_parser  # noqa: E402


def main(argv=None) -> int:
    ap = stream_parser(__doc__, 15.0)
    ap.add_argument("--windows", default="300,500,750,1000",
                    help="averaging windows in ms to try")
    ap.add_argument("--thresholds", default="0.4,0.45,0.5,0.55,0.6,0.7",
                    help="detection thresholds to try")
    ap.add_argument("--min-counts", default="2,3", help="minimum results in the window to try")
    ap.add_argument("--gate", default="energy+skip", help="the listener's --gate (default its own)")
    ap.add_argument("--json", help="write every row here")
    args = ap.parse_args(argv)

    from types import SimpleNamespace

    from bnnkws.app.commands.listen import gate_parts
    from bnnkws.app.listener import smoothing
    from bnnkws.deploy.runtime import Detector

    det = Detector(args.bundle, num_threads=1)
    base, streams = build_streams(det, args)

    rec = RecordingDetector(det)

    def replay(window, threshold, count, name, st):
        sm = smoothing.RecognizeCommands(det.labels, average_window_ms=window,
                                         detection_threshold=threshold, minimum_count=count)
        return run_rule(rec, sm, name, st, hop_ms=100.0,
                        **gate_parts(det, SimpleNamespace(), args.gate))

    t0 = time.perf_counter()
    for name, st in streams:  # the recording pass runs every stage of every hop once
        replay(smoothing.DEFAULT_AVERAGE_WINDOW_MS, smoothing.DEFAULT_THRESHOLD,
               smoothing.DEFAULT_MIN_COUNT, name, st)
        print(f"recorded {name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    rec.freeze()

    rows = []
    grid = itertools.product([float(x) for x in args.windows.split(",")],
                             [float(x) for x in args.thresholds.split(",")],
                             [int(x) for x in args.min_counts.split(",")])
    for w, t, c in grid:
        r = {name: replay(w, t, c, name, st) for name, st in streams}
        rows.append({"average_window_ms": w, "threshold": t, "min_count": c,
                     "default": (w, t, c) == (smoothing.DEFAULT_AVERAGE_WINDOW_MS,
                                              smoothing.DEFAULT_THRESHOLD,
                                              smoothing.DEFAULT_MIN_COUNT),
                     "streams": {n: {k: x[k] for k in ("correct_pct", "wrong_pct", "missed_pct",
                                                        "false_accepts_per_hour")}
                                 for n, x in r.items()}})
        cells = "  ".join(f"{n.split(' (')[0]}: "
                          + ("" if x["correct_pct"] is None else f"{x['correct_pct']:.1f}% ")
                          + f"{x['false_accepts_per_hour']:.0f}/h" for n, x in r.items())
        print(f"window {w:4.0f} threshold {t:.2f} count {c}{' *' if rows[-1]['default'] else ''}"
              f"  {cells}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"split": args.split, "minutes": args.minutes,
                                               "keywords": len(base.keywords), "rows": rows},
                                              indent=1))
        print("wrote", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
