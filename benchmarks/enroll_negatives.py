#!/usr/bin/env python
"""What do the user's negatives buy at enrolment? (issue #17)

Runs ``kws bench-enroll`` for every seed and every ``--user-negatives`` count and prints one
table: per run the old words' change after 3 and after 10 new words (last exit / the bundle's
delta), the new words' accuracy on their other speakers' clips at delta, and on the stream the
median recall, the false accepts per hour (summed over the enrolled words, and their median)
and the words at >= 80 % recall with <= 5 false accepts per hour at their calibrated
thresholds. The seed draws the enrolment speakers, the test clips and the stream; within a
seed the stream is the same for every count, so the counts are a paired comparison.

Each run's ``results.json`` stays in ``OUT/s<seed>-n<count>/``; a run already there is read,
not repeated, so an interrupted sweep resumes.

    .venv/bin/python benchmarks/enroll_negatives.py --out /tmp/negs --seeds 0,1,2 \\
        --negatives 0,10,20 --json /tmp/negs.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def summarise(res: dict) -> dict:
    from bnnkws.app.bench.enroll import at_target

    m = res["methods"]["replay"]
    rows = {r["words"]: r for r in m["rows"]}
    first, last = rows[0], rows[max(rows)]
    after3 = rows.get(3, last)
    st = m["stream"]
    recall = [s["recall"] for s in st.values()]
    fa = [s["fa_per_hour"] for s in st.values()]
    return {
        "old_last_exit": first["old_last_exit"], "old_delta": first["old_delta"],
        "old_change_3": [after3["old_last_exit"] - first["old_last_exit"],
                         after3["old_delta"] - first["old_delta"]],
        "old_change_all": [last["old_last_exit"] - first["old_last_exit"],
                           last["old_delta"] - first["old_delta"]],
        "new_delta_3": after3["new_delta"], "new_delta_all": last["new_delta"],
        "words": len(st), "recall_median": float(np.median(recall)),
        "fa_per_hour_sum": float(np.sum(fa)), "fa_per_hour_median": float(np.median(fa)),
        "at_target": at_target(st),
        "enrol_wall_median_s": float(np.median([e["wall_s"] for e in m["enrolments"]])),
    }


def table(summaries: dict) -> str:
    lines = ["| seed | negatives per word | old words after 3, last / δ | after all | new words "
             "at δ after 3 / all | stream recall, median | false accepts / h, sum (median) "
             "| words at >= 80 % with <= 5 FA/h |", "|---|---|---|---|---|---|---|---|"]
    pts = lambda v: f"{100 * v[0]:+.1f} / {100 * v[1]:+.1f}"  # noqa: E731
    for (seed, n), s in sorted(summaries.items()):
        lines.append(f"| {seed} | {n} | {pts(s['old_change_3'])} | {pts(s['old_change_all'])} "
                     f"| {100 * s['new_delta_3']:.1f} / {100 * s['new_delta_all']:.1f} "
                     f"| {100 * s['recall_median']:.1f} % | {s['fa_per_hour_sum']:.0f} "
                     f"({s['fa_per_hour_median']:.1f}) | {len(s['at_target'])} of {s['words']}"
                     f"{' (' + ', '.join(s['at_target']) + ')' if s['at_target'] else ''} |")
    by_n: dict = {}
    for (seed, n), s in summaries.items():
        by_n.setdefault(n, []).append(s)
    lines += ["", "| negatives per word | runs | false accepts / h, sum, mean | stream recall, "
                  "median of the runs' medians | new words at δ after 3, mean | words at target, "
                  "total |", "|---|---|---|---|---|---|"]
    for n, ss in sorted(by_n.items()):
        lines.append(f"| {n} | {len(ss)} | {np.mean([s['fa_per_hour_sum'] for s in ss]):.0f} "
                     f"| {100 * np.median([s['recall_median'] for s in ss]):.1f} % "
                     f"| {100 * np.mean([s['new_delta_3'] for s in ss]):.1f} % "
                     f"| {sum(len(s['at_target']) for s in ss)} of "
                     f"{sum(s['words'] for s in ss)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", nargs="?", default=str(ROOT / "app" / "default_bundle"),
                   help="bundle to enrol into (copied, never modified; default the shipped one)")
    p.add_argument("--out", required=True, help="folder for the runs (resumed when present)")
    p.add_argument("--seeds", default="0,1,2", help="bench-enroll seeds (default %(default)s)")
    p.add_argument("--negatives", default="0,10,20",
                   help="--user-negatives counts to compare (default %(default)s)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"),
                   help="the shared data folder (default %(default)s)")
    p.add_argument("--json", default=None, help="also write every summary here")
    args = p.parse_args(argv)

    from bnnkws.app.bench.enroll import BenchConfig, run

    data = Path(args.data)
    out = Path(args.out)
    summaries = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for n in [int(s) for s in args.negatives.split(",")]:
            folder = out / f"s{seed}-n{n}"
            done = folder / "results.json"
            if not done.is_file():
                print(f"seed {seed}, {n} negatives per word ...", file=sys.stderr, flush=True)
                run(BenchConfig(bundle=args.bundle,
                                old_data=str(data / "speech_commands_v2_test"),
                                fsdd=str(data / "fsdd"),
                                sc_v1=str(data / "speech_commands_v1_sample"),
                                noise=str(data / "speech_commands_background_noise"),
                                seed=seed, user_negatives=n, openwakeword=False,
                                synth_dir=str(out / f"espeak-s{seed}")),
                    folder, progress=False)
            summaries[(seed, n)] = summarise(json.loads(done.read_text()))
    print(table(summaries), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"seed": k[0], "negatives": k[1], **v} for k, v in sorted(summaries.items())],
            indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
