#!/usr/bin/env python
"""Accuracy of a bundle as its one-second window slides off where the clip put the word.

The listener classifies the last second every 100 ms and averages about five results, so a
keyword is seen at the clip's own position and at +-100, +-200 ms around it. This script scores
the test split's keywords (not `_silence_`/`_unknown_`) with the window moved by each shift,
both ways (the clip sits in a longer stretch of zeros, or of the stream's noise at ``--snr``
relative to the RMS over all keyword samples, as in ``kws bench-stream``), through the deployed runtime
at the bundle's delta; in brackets, the accuracy over the keywords whose word (its energy extent,
as ``kws train --offset-prob`` measures it) is still whole inside the moved window, which
separates a model that needs the word where its clip had it from words that were cut:

    .venv/bin/python benchmarks/shift_curve.py app/default_bundle \\
        --data ../shared/data/speech_commands_v2_test --shifts 0,100,200,300 --snr 10
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", help="bundle directory from `kws export`")
    ap.add_argument("--data", required=True, help="dataset the bundle was trained on")
    ap.add_argument("--split", default="testing", choices=["validation", "testing"])
    ap.add_argument("--shifts", default="0,100,200,300", help="window shifts in ms, each applied "
                    "both earlier and later")
    ap.add_argument("--snr", default="", help="also with noise at these SNRs (dB, comma list)")
    args = ap.parse_args(argv)

    from bnnkws.app.bench.stream import default_noise_dir, load_noise, noise_track
    from bnnkws.deploy.runtime import Detector
    from bnnkws.kws.features.augment import speech_extent
    from bnnkws.frontend.audio import load_audio
    from bnnkws.kws.data import load_dataset
    from bnnkws.kws.evaluation.evaluate import match_labels
    from bnnkws.kws.policy import decide_batch

    det = Detector(args.bundle, num_threads=1)
    sr, n = det.bundle.frontend.sample_rate, det.bundle.frontend.clip_samples
    ds = load_dataset(args.data, seed=det.bundle.split_seed)
    clips = [c for c in ds.split(args.split) if c.label not in ("_silence_", "_unknown_")]
    y = np.asarray(match_labels(clips, det.labels)[0])
    x = np.stack([load_audio(c.path, sr=sr, length=n) for c in clips])
    shifts = [int(s) for s in args.shifts.split(",") if s.strip()]
    pad = int(max(shifts) * sr / 1000) + 1
    ext = speech_extent(x)  # (clips, 2): the word's first and last sample in its clip
    # the SNR's reference as `kws bench-stream` takes it: the RMS over every keyword sample (the
    # mean of the clips' own RMS levels is 1.6 dB lower on the test split, a quieter noise)
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    noise = noise_track(load_noise(default_noise_dir(ds.root), sr), len(x) * (n + 2 * pad),
                        seed=0).reshape(len(x), -1)
    print(f"{len(clips)} keywords of the {args.split} split; accuracy at delta "
          f"{det.delta} with the window moved earlier / later by:")
    for snr in [None] + [float(s) for s in args.snr.split(",") if s.strip()]:
        bed = np.zeros((len(x), n + 2 * pad), np.float32)
        bed[:, pad:pad + n] = x
        if snr is not None:
            bed += noise * rms / 10 ** (snr / 20)
        cells = []
        for s in shifts:
            accs = []
            for sign in (-1, 1) if s else (1,):
                d = sign * int(s * sr / 1000)
                z = np.stack([det.exit_logits(audio=w[pad + d:pad + d + n]) for w in bed])
                ok = decide_batch(z, det.policy)[1] == y
                whole = (ext[:, 0] - d >= 0) & (ext[:, 1] - d <= n)
                accs.append(f"{100 * np.mean(ok):.1f} ({100 * np.mean(ok[whole]):.1f} of "
                            f"{int(whole.sum())})")
            cells.append(f"{s} ms " + " / ".join(accs))
        print(("zeros around" if snr is None else f"{snr:g} dB noise") + ": " + "; ".join(cells),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
