"""Latency and size of a bundle, binary vs float-32 twin, per exit (the paper's Table 1).

Measured on this machine with the LCE interpreter (numpy + interpreter only, no TensorFlow):

* kernel options: every LCE option set is timed on the stages and checked against the reference
  kernels; the fastest correct one is used for the table (:func:`interpreters.tune`);
* per exit k the cumulative latency of stages 1..k (stage 1 from raw audio, frontend included),
  median and p90 over ``runs`` chained runs after ``warmup``, for the LCE stages and for the
  float-32 twin's stages (with XNNPACK if that is faster for it);
* sizes (MiB) cumulative per exit, with and without the frontend constants (the DFT and mel
  matrices inside stage1.tflite are float and the same in both);
* the frontend's share of stage 1: stage1 (audio in) minus stage1_features (log-mel in);
* with data: per delta of the sweep, accuracy and mean measured latency per clip (each clip's
  own stage times up to the exit the policy chose for it).
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from .bundle import Bundle, atomic_write_bytes
from .interpreters import interleaved_times, kernel_options, open_file, tune

MIB = 1024 * 1024
# The same grid as `kws eval`'s between 0.1 and 0.4, where the within-1-point delta usually is;
# the bundle's own delta is added to the sweep too.
DEFAULT_DELTAS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def speechlike_clip(fcfg, seed=0):
    """A deterministic speech-like clip (harmonic chirp, envelope, noise) for timing/checks."""
    rng = np.random.default_rng(seed)
    t = np.arange(fcfg.clip_samples) / fcfg.sample_rate
    f0 = 120 + 80 * t
    y = sum(np.sin(2 * np.pi * h * np.cumsum(f0) / fcfg.sample_rate) / h for h in range(1, 12))
    y = 0.1 * np.exp(-((t - 0.5) ** 2) / 0.04) * y + 0.005 * rng.standard_normal(t.shape)
    return y.astype(np.float32)


def _stats(a):
    a = np.asarray(a)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "mean": float(np.mean(a))}


def chained_times(runners, first_input, runs, warmup):
    """(runs, stages) ms: each run chains the stages on real intermediate tensors."""
    return interleaved_times([(runners, first_input)], runs, warmup)[0]


def _twin_runners(b, files, clip, runs: int, threads: int):
    """``(runners, {"use_xnnpack": bool})`` for a twin's stage files with XNNPACK on or off,
    whichever was faster in a short interleaved run; ``(None, None)`` when the bundle lacks
    any of them (a lean bundle, or one that predates the twin)."""
    if not all(f and f in b.manifest["files"] for f in files):
        return None, None
    on, off = ([open_file(b, f, "lce", threads, use_xnnpack=x) for f in files]
               for x in (True, False))
    t_on, t_off = interleaved_times([(on, clip[None, :]), (off, clip[None, :])],
                                    max(10, runs // 5), 3)
    faster_on = bool(np.median(t_on.sum(1)) <= np.median(t_off.sum(1)))
    return (on if faster_on else off), {"use_xnnpack": faster_on}


def run_bench(bundle, runs: int = 100, warmup: int = 10, threads: int = 1, data=None,
              split: str = "testing", limit: int | None = 300, deltas=None, progress: bool = True,
              tune_runs: int = 20, split_seed: int | None = None) -> dict:
    """``split_seed``: speaker-split seed for ``data`` (default: the bundle's training seed)."""
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    fcfg = b.frontend
    stages = b.stages
    clip = speechlike_clip(fcfg)
    lce_rest = [s.file for s in stages[1:]]
    s1 = stages[0]

    # 1. kernel options, on the log-mel-in stages (the binary part)
    tune_files = [s1.features_file] + lce_rest
    feats_in = {}
    x = open_file(b, s1.file, "lce", threads).run(clip[None, :])
    from bnnkws.frontend.reference import log_mel

    feats_in[s1.features_file] = log_mel(clip, fcfg)[None]
    x = x.get("fmap")
    for name in lce_rest:
        feats_in[name] = x
        x = open_file(b, name, "lce", threads).run(x).get("fmap")
    tuning = tune(b, tune_files, feats_in, runs=tune_runs, warmup=3, num_threads=threads)
    best = tuning[0]["options"]

    # 2. the float-32 and int8 twins (the int8 one only in a full `kws export`), each with
    # XNNPACK on or off, whichever is faster for it
    float_files, int8_files = [s.float32 for s in stages], [s.int8 for s in stages]
    float_runners, float_opts = _twin_runners(b, float_files, clip, runs, threads)
    int8_runners, int8_opts = _twin_runners(b, int8_files, clip, runs, threads)
    have_float, have_int8 = float_runners is not None, int8_runners is not None
    t_float = t_int8 = None

    # 3. LCE stages chained (stage 1 from audio), stage1_features alone and the float and int8
    # twins, taking turns so that they see the same machine
    lce_runners = [open_file(b, s1.file, "lce", threads, **best)] + \
        [open_file(b, n, "lce", threads, **best) for n in lce_rest]
    r_feat = open_file(b, s1.features_file, "lce", threads, **best)
    chains = [(lce_runners, clip[None, :]), ([r_feat], feats_in[s1.features_file])]
    if have_float:
        chains.append((float_runners, clip[None, :]))
    if have_int8:
        chains.append((int8_runners, clip[None, :]))
    times = interleaved_times(chains, runs, warmup)
    t_lce, t_feat = times[0], times[1][:, 0]
    if have_float:
        t_float = times[2]
    if have_int8:
        t_int8 = times[-1]

    # 4. table
    files = b.manifest["files"]
    size = lambda names: sum(files[n]["bytes"] for n in names) / MIB  # noqa: E731
    rows = []
    cum_lce = np.cumsum(t_lce, axis=1)
    cum_float = np.cumsum(t_float, axis=1) if t_float is not None else None
    cum_int8 = np.cumsum(t_int8, axis=1) if t_int8 is not None else None
    for i, s in enumerate(stages):
        if s.exit is None:
            continue
        lce_files = [s1.file] + lce_rest[:i]
        lce_model_files = [s1.features_file] + lce_rest[:i]
        row = {"exit": s.exit, "lce_ms": _stats(cum_lce[:, i]),
               "lce_mib": size(lce_files), "lce_model_mib": size(lce_model_files)}
        if cum_float is not None:
            fl = float_files[: i + 1]
            row.update(float_ms=_stats(cum_float[:, i]), float_mib=size(fl),
                       float_model_mib=size(fl) - (size([s1.file]) - size([s1.features_file])))
            row["speedup"] = row["float_ms"]["median"] / row["lce_ms"]["median"]
            row["size_ratio"] = row["float_model_mib"] / row["lce_model_mib"]
        if cum_int8 is not None:
            il = int8_files[: i + 1]
            row.update(int8_ms=_stats(cum_int8[:, i]), int8_mib=size(il),
                       int8_model_mib=size([s1.int8_features] + int8_files[1 : i + 1]))
            row["lce_vs_int8"] = row["int8_ms"]["median"] / row["lce_ms"]["median"]
            row["int8_size_ratio"] = row["int8_model_mib"] / row["lce_model_mib"]
        rows.append(row)
    stage1_ms = float(np.median(t_lce[:, 0]))
    feat_ms = float(np.median(t_feat))
    result = {
        "bundle": str(b.path),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "threads": threads,
        "runs": runs,
        "warmup": warmup,
        "kernel_options": best,
        "default_kernel_options_here": kernel_options(),
        "tuning": tuning,
        "float_options": float_opts,
        "int8_options": int8_opts,
        "int8": b.manifest.get("int8"),
        "exits": rows,
        "speedup": rows[-1].get("speedup") if rows else None,
        "lce_vs_int8": rows[-1].get("lce_vs_int8") if rows else None,
        "size_ratio": rows[-1].get("size_ratio") if rows else None,
        "frontend": {"stage1_audio_ms": stage1_ms, "stage1_features_ms": feat_ms,
                     "frontend_ms": stage1_ms - feat_ms,
                     "frontend_share_of_stage1": (stage1_ms - feat_ms) / stage1_ms},
        "sizes_mib": {"bundle_lce_stages": size([s1.file] + lce_rest),
                      "lce_model": size([s1.features_file] + lce_rest),
                      "float32_tflite": size([b.manifest["float32"]])
                      if b.manifest.get("float32") in files else None,
                      "full_tflite": size([b.manifest["full"]])
                      if b.manifest.get("full") in files else None},
        "sweep": None,
    }
    if data is not None:
        result["sweep"] = delta_sweep(b, data, split=split, limit=limit, deltas=deltas,
                                      threads=threads, options=best, progress=progress,
                                      exit_medians={r["exit"]: r["lce_ms"]["median"] for r in rows},
                                      split_seed=split_seed,
                                      int8_medians=({r["exit"]: r["int8_ms"]["median"] for r in rows}
                                                    if have_int8 else None))
    return result


def load_clips(spec, labels, split="testing", limit=None, seed=0, split_seed=0):
    """(audio (n, samples), label indices (n,)) of a dataset split, labels mapped to the bundle's.

    ``split_seed``: the speaker split's seed (the model's training seed); ``seed`` draws the
    ``limit`` subset."""
    from bnnkws.frontend.audio import load_audio
    from bnnkws.kws.data import load_dataset

    ds = load_dataset(spec, seed=split_seed)
    clips = list(ds.clips) if split == "all" else [c for c in ds.clips if c.split == split]
    clips = [c for c in clips if c.label in labels]
    if not clips:
        raise ValueError(f"{spec}: no {split} clips with labels in the bundle's {labels}")
    if limit and len(clips) > limit:
        rng = np.random.default_rng(seed)
        clips = [clips[i] for i in sorted(rng.choice(len(clips), limit, replace=False))]
    audio = np.stack([load_audio(c.path, sr=16000, length=16000) for c in clips])
    y = np.array([labels.index(c.label) for c in clips])
    return audio, y


def delta_sweep(b: Bundle, data, split="testing", limit=300, deltas=None, threads=1, options=None,
                progress=True, exit_medians=None, split_seed=None, int8_medians=None) -> dict:
    """Accuracy and latency per delta. ``mean_ms``: mean over clips of each clip's own measured
    stage times up to its exit (a mean, so a busy machine's preemptions show up in it);
    ``mean_ms_est``: mean over clips of the benchmark's median cumulative latency at the clip's
    exit (``exit_medians``), robust to load."""
    from bnnkws.kws.policy import decide_batch, delta_value, same_delta

    from .runtime import Detector

    det = Detector(b, num_threads=threads, backend="lce", kernel_options=options)
    split_seed = b.split_seed if split_seed is None else int(split_seed)
    if isinstance(data, tuple):
        audio, y = data
        name = "arrays"
    else:
        audio, y = load_clips(data, b.labels, split, limit, split_seed=split_seed)
        name = str(data)
    it = range(len(audio))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="sweep clips", unit="clip")
    for _ in range(3):  # warm the interpreters up (first invocations allocate and pack weights)
        det.run_all(audio=audio[0])
    logits, times = [], []
    for i in it:
        r = det.run_all(audio=audio[i])
        logits.append(r["logits"])
        times.append(r["stage_ms"])
    logits, times = np.stack(logits), np.asarray(times)
    exit_stage = {s.exit: i for i, s in enumerate(b.stages) if s.exit is not None}
    cum = np.cumsum(times, axis=1)
    rows = []
    if deltas is None:
        if np.ndim(b.delta) == 0:
            deltas = sorted(set(DEFAULT_DELTAS) | {round(b.delta, 6)})
        else:  # one delta per exit: its own row, after the global ones
            deltas = sorted(DEFAULT_DELTAS) + [b.delta]
    for d in deltas:
        exits, pred, _ = decide_batch(logits, det.make_policy(d))
        # decide_batch numbers exits 1..E in the order of the logits = the bundle's exits
        ex_num = np.asarray(b.exits)[exits - 1]
        lat = cum[np.arange(len(y)), [exit_stage[e] for e in ex_num]]
        row = {"delta": delta_value(d), "accuracy": float(np.mean(pred == y)),
               "mean_ms": float(lat.mean()), "mean_exit": float(ex_num.mean())}
        if exit_medians:
            row["mean_ms_est"] = float(np.mean([exit_medians[e] for e in ex_num]))
        if int8_medians:
            # the int8 twin leaving where the LCE model left (same graph, same exits)
            row["int8_mean_ms_est"] = float(np.mean([int8_medians[e] for e in ex_num]))
        rows.append(row)
    last = cum[:, -1].mean()
    per_exit_acc = [float(np.mean(logits[:, j].argmax(1) == y)) for j in range(logits.shape[1])]
    last_acc = per_exit_acc[-1]
    ok = [r for r in rows if r["accuracy"] >= last_acc - 0.01 and np.ndim(r["delta"]) == 0]
    key = "mean_ms_est" if exit_medians else "mean_ms"
    last_ref = exit_medians[b.exits[-1]] if exit_medians else float(last)
    pick = min(ok, key=lambda r: r[key]) if ok else None
    at_bundle = next((r for r in rows if same_delta(r["delta"], b.delta)), None)
    return {"data": name, "split": split, "split_seed": split_seed, "clips": int(len(y)),
            "rows": rows,
            "per_exit_accuracy": per_exit_acc, "last_exit_mean_ms": float(last),
            "last_exit_median_ms": last_ref, "latency_key": key,
            "within_1pt": ({**pick, "latency_vs_last": pick[key] / last_ref} if pick else None),
            "bundle_delta": ({**at_bundle, "latency_vs_last": at_bundle[key] / last_ref}
                             if at_bundle else None)}


# ------------------------------------------------------------------------------------------------
# reporting
# ------------------------------------------------------------------------------------------------
LEAN_NOTE = ("No float-32 twin to compare with: this is a lean bundle (`kws export --lean`, "
             "the LCE stages only, as shipped in the package). Export the training run without "
             "`--lean` (`kws export RUN --out DIR`) for the float-32 and int8 twins, then run "
             "`kws bench DIR`.")


def to_markdown(res: dict) -> str:
    from bnnkws.kws.policy import format_delta

    L = []
    L.append(f"# Benchmark: {res['bundle']}\n")
    L.append(f"Measured on this machine: {res['platform']} ({res['machine']}), "
             f"{res['threads']} thread(s), {res['runs']} runs after {res['warmup']} warm-up. "
             f"LCE kernel options used: `{res['kernel_options']}`; float-32 twin: "
             f"`{res['float_options']}`.\n")
    have_float = any("float_ms" in r for r in res["exits"])
    if have_float:
        L.append("| exit | LCE median ms | LCE p90 ms | float32 median ms | float32 p90 ms | "
                 "speedup | LCE MiB (model) | float32 MiB (model) | size ratio |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in res["exits"]:
            f = r["float_ms"]
            L.append(f"| {r['exit']} | {r['lce_ms']['median']:.3f} | {r['lce_ms']['p90']:.3f} | "
                     f"{f['median']:.3f} | {f['p90']:.3f} | {r['speedup']:.2f}x | "
                     f"{r['lce_model_mib']:.4f} | {r['float_model_mib']:.4f} | "
                     f"{r['size_ratio']:.1f}x |")
    else:
        L.append("| exit | LCE median ms | LCE p90 ms | LCE MiB (model) |")
        L.append("|---:|---:|---:|---:|")
        for r in res["exits"]:
            L.append(f"| {r['exit']} | {r['lce_ms']['median']:.3f} | {r['lce_ms']['p90']:.3f} | "
                     f"{r['lce_model_mib']:.4f} |")
        L.append("")
        L.append(LEAN_NOTE)
    if any("int8_ms" in r for r in res["exits"]):
        L.append("")
        L.append(f"int8 twin (full-integer post-training quantization of the float-32 twin; "
                 f"{(res.get('int8') or {}).get('calibration', 'calibration unknown')}; "
                 f"options `{res.get('int8_options')}`), in the same interleaved runs:\n")
        L.append("| exit | LCE median ms | int8 median ms | int8 p90 ms | LCE vs int8 | "
                 "int8 MiB (model) | int8 / LCE size |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|")
        for r in res["exits"]:
            if "int8_ms" in r:
                L.append(f"| {r['exit']} | {r['lce_ms']['median']:.3f} | "
                         f"{r['int8_ms']['median']:.3f} | {r['int8_ms']['p90']:.3f} | "
                         f"{r['lce_vs_int8']:.2f}x | {r['int8_model_mib']:.4f} | "
                         f"{r['int8_size_ratio']:.1f}x |")
        L.append("\nThe float twin of a binary run carries its latent binary weights, so this "
                 "int8 twin stands in for the architecture's int8 latency and size only; for the "
                 "accuracy int8 would give, export a `kws train --real-valued` run in full.")
    fe = res["frontend"]
    L.append("")
    L.append("Latency is cumulative (stages 1..k, stage 1 from raw audio, frontend included). "
             "Sizes are cumulative model bytes with log-mel input; the frontend's constant "
             "matrices (the same in both) add "
             f"{res['exits'][0]['lce_mib'] - res['exits'][0]['lce_model_mib']:.3f} MiB.\n")
    L.append(f"Frontend share of stage 1: {fe['frontend_ms']:.3f} ms of {fe['stage1_audio_ms']:.3f} ms "
             f"({100 * fe['frontend_share_of_stage1']:.0f}%; stage1 audio-in minus log-mel-in).\n")
    L.append("Kernel options (LCE interpreter, stages with log-mel input, summed medians):\n")
    L.append("| use_indirect_bgemm | use_xnnpack | ms | max rel err vs reference | correct |")
    L.append("|---|---|---:|---:|---|")
    for t in res["tuning"]:
        o = t["options"]
        L.append(f"| {o['use_indirect_bgemm']} | {o['use_xnnpack']} | {t['ms']:.3f} | "
                 f"{t['max_rel_err']:.2e} | {t['correct']} |")
    sw = res.get("sweep")
    if sw:
        L.append("")
        L.append(f"Delta sweep on {sw['data']} ({sw['split']} split of seed "
                 f"{sw.get('split_seed', 0)}, {sw['clips']} clips); per-exit "
                 "accuracy " + ", ".join(f"{a:.3f}" for a in sw["per_exit_accuracy"]) +
                 f"; last exit mean {sw['last_exit_mean_ms']:.3f} ms/clip.\n")
        L.append("| delta | accuracy | mean exit | mean ms/clip (from per-exit medians) "
                 "| mean ms/clip (measured per clip) |")
        L.append("|---:|---:|---:|---:|---:|")
        for r in sw["rows"]:
            L.append(f"| {format_delta(r['delta'])} | {r['accuracy']:.3f} | {r['mean_exit']:.2f} | "
                     f"{r.get('mean_ms_est', float('nan')):.3f} | {r['mean_ms']:.3f} |")
        w = sw.get("within_1pt")
        if w:
            L.append(f"\nCheapest delta within 1 point of the last exit's accuracy: "
                     f"{format_delta(w['delta'])} ({w['accuracy']:.3f}), "
                     f"{w[sw['latency_key']]:.3f} ms/clip "
                     f"= {100 * w['latency_vs_last']:.0f}% of the last exit's.")
        w = sw.get("bundle_delta")
        if w:
            L.append(f"\nAt the bundle's own delta {format_delta(w['delta'])}: accuracy "
                     f"{w['accuracy']:.3f}, "
                     f"{w[sw['latency_key']]:.3f} ms/clip = {100 * w['latency_vs_last']:.0f}% of "
                     f"the last exit's.")
            if "int8_mean_ms_est" in w and w.get("mean_ms_est"):
                L.append(f" The int8 twin leaving at the same exits: {w['int8_mean_ms_est']:.3f} "
                         f"ms/clip, LCE {w['int8_mean_ms_est'] / w['mean_ms_est']:.2f}x faster.")
    return "\n".join(L) + "\n"


def write_report(res: dict, out_dir) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    md, js = out_dir / "bench.md", out_dir / "bench.json"
    atomic_write_bytes(js, (json.dumps(res, indent=2) + "\n").encode())
    atomic_write_bytes(md, to_markdown(res).encode())
    return md, js


def runtime_latency(bundle, runs: int = 100, warmup: int = 10, threads: int = 1,
                    backend: str = "auto") -> list:
    """Markdown lines: per-exit cumulative latency of the Detector's own runners (any backend).

    What the device's Python runtime costs (e.g. ai-edge-litert on portable stages on a Pi).
    """
    from .runtime import Detector

    det = Detector(bundle, num_threads=threads, backend=backend)
    clip = speechlike_clip(det.bundle.frontend)
    runners = [det._stage1_audio] + det._rest
    t = chained_times(runners, clip[None, :], runs, warmup)
    cum = np.cumsum(t, axis=1)
    lines = [f"backend {det.backend}, {threads} thread(s), {runs} runs, options "
             f"{det.kernel_options}",
             "| exit | median ms | p90 ms |", "|---:|---:|---:|"]
    for i, s in enumerate(det.stages):
        if s.exit is not None:
            st = _stats(cum[:, i])
            lines.append(f"| {s.exit} | {st['median']:.3f} | {st['p90']:.3f} |")
    return lines
