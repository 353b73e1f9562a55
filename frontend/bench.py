"""Timing helpers for the frontends (numpy only: importable without TensorFlow)."""
from __future__ import annotations

import os
import time

import numpy as np

from .quiet import quiet_native_output

__all__ = ["median_ms"]


def median_ms(fn, runs: int = 100, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``runs`` calls, after ``warmup`` calls
    (caches, lazy imports, interpreter allocation). The median resists the outliers a shared
    machine produces."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _real_clips(data_root, per_folder: int, sr: int, length: int):
    """(names, (n, length) float32) from every Speech Commands v2 test folder (incl. all of
    `_silence_`'s quietest clips first), FSDD (8 kHz, resampled) and the v1 sample."""
    from pathlib import Path

    from .audio import load_audio

    root = Path(data_root)
    paths = []
    sc = root / "speech_commands_v2_test"
    for folder in sorted(p for p in sc.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.wav"))
        if folder.name == "_silence_":  # the quietest background clips are the hard case
            import soundfile as sf

            files.sort(key=lambda p: float(np.mean(np.square(sf.read(p)[0]))))
        paths += files[:per_folder]
    paths += sorted((root / "fsdd").glob("*.wav"))[:: max(1, 2000 // (4 * per_folder))][: 4 * per_folder]
    paths += sorted((root / "speech_commands_v1_sample").rglob("*.wav"))[::10][:per_folder]
    Y = np.stack([load_audio(p, sr=sr, length=length) for p in paths])
    return [str(p.relative_to(root)) for p in paths], Y


def parity_report(data_root, per_folder: int = 20, chunkings=(1, 160, 1000, 4096), seed: int = 0):
    """Print reference vs TFLite (both converters, both DFTs, LCE interpreter) and streaming vs
    reference max abs differences on real clips."""
    from .config import DEFAULT_FRONTEND as cfg
    from .reference import log_mel_batch
    from .streaming import StreamingLogMel

    names, Y = _real_clips(data_root, per_folder, cfg.sample_rate, cfg.clip_samples)
    ref = log_mel_batch(Y, cfg)
    print(f"{len(Y)} real one-second clips from {data_root}")
    with quiet_native_output():
        from larq_compute_engine.tflite.python.interpreter import Interpreter

        from .config import DFT_MODES
        from .keras_layer import convert, frontend_model

        models = {(d, c): convert(frontend_model(cfg, d), c)
                  for d in DFT_MODES for c in ("lce", "tflite")}
    for (dft, conv), fb in models.items():
        out = Interpreter(fb, num_threads=1).predict(Y)
        worst = np.abs(out - ref).max(axis=(1, 2))
        i = int(worst.argmax())
        print(f"TFLite ({conv} converter, dft={dft:<8}) vs reference: max |diff| {worst.max():.2e} "
              f"(worst clip {names[i]}), model {len(fb) / 1024:.0f} KB")
    rng = np.random.default_rng(seed)
    s = StreamingLogMel(cfg)
    for chunk in list(chunkings) + ["random 1..5000"]:
        worst = 0.0
        # one sample per push costs a Python call per sample: 20 clips make the point
        clips = list(zip(Y, ref))[: 20 if chunk == 1 else None]
        for y, r in clips:
            s.reset()
            if chunk == "random 1..5000":
                cuts = np.cumsum(rng.integers(1, 5001, size=len(y)))
                pieces = np.split(y, cuts[cuts < len(y)])
            else:
                pieces = [y[i : i + chunk] for i in range(0, len(y), chunk)]
            got = np.concatenate([s.push(p) for p in pieces])
            worst = max(worst, float(np.abs(got - r).max()))
        print(f"streaming ({chunk} samples per push, {len(clips)} clips) vs reference: "
              f"max |diff| {worst:.2e}, "
              f"max buffer {s.max_buffered} samples")


if __name__ == "__main__":
    import argparse
    import os

    ap = argparse.ArgumentParser(description="Frontend agreement on real clips.")
    ap.add_argument("--data", default=os.environ.get("KWS_SHARED_DATA", "../shared/data"),
                    help="shared speech data folder")
    ap.add_argument("--per-folder", type=int, default=20, help="clips per dataset folder")
    a = ap.parse_args()
    parity_report(a.data, a.per_folder)
