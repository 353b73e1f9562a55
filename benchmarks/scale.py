#!/usr/bin/env python
"""Scale benchmark of issue #20: does training from streamed shards keep its speed and its
memory as the corpus grows from 10k to 100k clips?

For each corpus size N (ascending) this script

1. grows a synthetic Speech-Commands-style corpus to N clips: augmented copies (random gain, a
   small time shift, low-level background noise) of the 3,518 real clips of
   ``speech_commands_v2_test``, written as 1-s 16-kHz int16 WAVs by 2 processes, in the same
   12-class layout (``_silence_``, ``_unknown_`` and ten word folders) so that
   ``bnnkws.kws.data.load_dataset`` reads it as it reads the source;
2. builds the TFRecord waveform shards of all N clips (``kws.shards.build_shards``): clips/s;
3. streams them through the batched TF augmentation (``kws.augment_tf``) for a fixed number of
   batches: input-pipeline clips/s;
4. trains a small QuickNet on that stream for ``--train-steps`` steps (``model.fit``): steady
   steps/s and clips/s;
5. runs each of 2-4 in a fresh subprocess and reports its peak resident memory (VmHWM), so that
   one stage's or one size's peak never carries over into the next.

The corpus lives in a fresh temporary folder (under ``--workdir``) that is deleted at the end,
also after an error, Ctrl-C or SIGTERM, unless ``--keep``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
SOURCE = DATA / "speech_commands_v2_test"
NOISE = DATA / "speech_commands_background_noise"
SR = 16000
# What one clip costs on disk: a 1-s int16 WAV (32,044 bytes) and its shard record (32,000
# samples bytes + ~60 bytes of Example framing); the margin covers file-system blocks, the
# shard JSONs and the filled-up disk other engineers are also writing to.
WAV_BYTES = 32044
SHARD_BYTES = 32100
DISK_MARGIN = 1.15
RESULT_TAG = "SCALE-RESULT "
_NOHASH = re.compile(r"^(?:(?P<word>[^_]+)_)?(?P<speaker>[^_]+)_nohash_(?P<n>\d+)")


# ------------------------------------------------------------------------ synthetic corpus

_SRC: list = []      # (folder, word-or-None, speaker-or-None, n-or-stem, int16 samples)
_NOISE: list = []    # float32 background recordings
_CFG: dict = {}


def load_sources(source: Path, noise: Path) -> None:
    """Read every source clip and noise recording once, in the parent: forked writers share
    them copy-on-write instead of each reading 110 MB of WAVs again."""
    import soundfile as sf

    if not source.is_dir():
        sys.exit(f"error: source clips {source} not found (see {DATA / 'README.md'})")
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if not path.name.lower().endswith(".wav"):
                continue
            y, sr = sf.read(str(path), dtype="int16")
            if sr != SR or y.ndim != 1:
                sys.exit(f"error: {path}: expected 16-kHz mono, got {sr} Hz, shape {y.shape}")
            y = np.pad(y[:SR], (0, max(0, SR - len(y))))
            m = _NOHASH.match(path.name)
            if m:
                _SRC.append((folder.name, m["word"], m["speaker"], int(m["n"]), y))
            else:  # _silence_ windows: no speaker, named <n>.wav
                _SRC.append((folder.name, None, None, path.name.split(".")[0], y))
    if not _SRC:
        sys.exit(f"error: no .wav clips in the folders of {source}")
    for path in sorted(noise.glob("*.wav")) if noise.is_dir() else []:
        y, sr = sf.read(str(path), dtype="float32")
        if sr == SR and y.ndim == 1 and len(y) > SR:
            _NOISE.append(y)
    if not _NOISE:
        sys.exit(f"error: no 16-kHz mono noise recordings in {noise}")


def synthetic_name(i: int, speakers: str) -> str:
    """Relative path of clip ``i``: copy ``i // S`` of source clip ``i % S``.

    ``speakers="keep"``: the copy keeps its source speaker and the copy number goes into
    ``<n>``, so all copies of one speaker stay on one side of the speaker-disjoint split (no
    near-duplicate of a test utterance in training). ``"new"``: each copy gets a speaker of its
    own, ``sha1(speaker:copy)[:8]``, which multiplies the speakers by the copies."""
    folder, word, spk, n, _ = _SRC[i % len(_SRC)]
    copy = i // len(_SRC)
    if spk is None:
        return f"{folder}/{n}_c{copy}.wav"  # no _nohash_: split by file name, like the source
    if speakers == "new":
        spk = hashlib.sha1(f"{spk}:{copy}".encode()).hexdigest()[:8]
        num = n
    else:
        num = copy * 100 + n  # source n <= 21 (two digits)
    stem = f"{spk}_nohash_{num}.wav"
    return f"{folder}/{word}_{stem}" if word else f"{folder}/{stem}"


def write_range(bounds: tuple[int, int]) -> int:
    """Write clips ``start .. end-1``; each one's augmentation is a function of its index, so
    the corpus is the same whatever the chunking and the worker count."""
    import soundfile as sf

    from bnnkws.kws.features.cache import quantize  # no TensorFlow: fine in the forked writers

    root, seed, speakers = Path(_CFG["root"]), _CFG["seed"], _CFG["speakers"]
    for i in range(*bounds):
        rng = np.random.default_rng([seed, i])
        y = _SRC[i % len(_SRC)][4].astype(np.float32) / 32767.0
        shift = int(rng.integers(-1600, 1601))  # +-100 ms, zero filled
        y = np.roll(y, shift)
        if shift > 0:
            y[:shift] = 0
        elif shift < 0:
            y[shift:] = 0
        y *= np.float32(10 ** (rng.uniform(-6.0, 6.0) / 20))
        a = _NOISE[int(rng.integers(len(_NOISE)))]
        s = int(rng.integers(0, len(a) - SR))
        seg = a[s:s + SR]
        seg = seg / (np.sqrt(np.mean(seg.astype(np.float64) ** 2)) + 1e-8)
        y += np.float32(10 ** (rng.uniform(-50.0, -35.0) / 20)) * seg.astype(np.float32)
        # Encoded in memory, written with one call: libsndfile writing to the path makes many
        # small writes and seeks, 3.3 ms a clip here against 0.5 ms this way.
        buf = io.BytesIO()
        sf.write(buf, quantize(y), SR, subtype="PCM_16", format="WAV")
        (root / synthetic_name(i, speakers)).write_bytes(buf.getvalue())
    return bounds[1] - bounds[0]


def grow_corpus(root: Path, have: int, want: int, seed: int, speakers: str,
                processes: int = 2, chunk: int = 250) -> float:
    """Add clips ``have .. want-1``; returns the seconds taken."""
    from tqdm import tqdm

    for folder in {f for f, *_ in _SRC}:
        (root / folder).mkdir(parents=True, exist_ok=True)
    _CFG.update(root=str(root), seed=seed, speakers=speakers)
    chunks = [(s, min(s + chunk, want)) for s in range(have, want, chunk)]
    t0 = time.perf_counter()
    # fork: the parent never imports TensorFlow, and the source clips are shared for free
    with multiprocessing.get_context("fork").Pool(processes) as pool, \
            tqdm(total=want - have, desc=f"corpus {have}->{want}", unit="clip",
                 file=sys.stderr) as bar:
        for n in pool.imap_unordered(write_range, chunks):
            bar.update(n)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- stage children


def _vm_kb(field: str, pid="self") -> int:
    """``field`` (e.g. ``VmHWM``) of ``/proc/<pid>/status`` in kB, 0 if absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class ChildPeaks:
    """Largest VmHWM of this process's live children, polled on a thread.

    ``RUSAGE_CHILDREN`` cannot tell this: a fork-then-exec child (a spawn pool worker, the
    ``ldconfig`` that importing TensorFlow runs) is charged the parent's RSS at the fork."""

    def __init__(self, every_s: float = 0.2):
        import threading

        self.every_s, self.peak_kb = every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.wait(self.every_s):
            for task in Path("/proc/self/task").iterdir():
                try:
                    pids = (task / "children").read_text().split()
                except OSError:
                    continue
                for pid in pids:
                    try:
                        self.peak_kb = max(self.peak_kb, _vm_kb("VmHWM", pid))
                    except OSError:  # exited between listing and reading
                        pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _memory(extra: dict) -> dict:
    """Peak (VmHWM) and current RSS of this process, MB."""
    out = {"peak_rss_mb": _vm_kb("VmHWM") / 1024, "rss_mb": _vm_kb("VmRSS") / 1024,
           "loadavg_1min": os.getloadavg()[0]}  # other users of the 2 cores, for the reader
    out.update(extra)
    return out


def stage_build(a: dict) -> dict:
    from bnnkws.frontend import DEFAULT_FRONTEND
    from bnnkws.kws import data as kdata
    from bnnkws.kws.features import shards

    import tensorflow as tf  # noqa: F401  build_shards writes with TF: count it in the baseline

    base = _vm_kb("VmRSS") / 1024
    t0 = time.perf_counter()
    ds = kdata.load_dataset(a["root"])
    split_counts = {s: len(ds.split(s)) for s in kdata.SPLITS}
    overlap = {k: len(v) for k, v in ds.speaker_overlap().items()}
    clips = list(ds.clips) if a["split"] == "all" else list(ds.split("train"))
    load_s = time.perf_counter() - t0
    after_list = _vm_kb("VmRSS") / 1024
    with ChildPeaks() as kids:
        t0 = time.perf_counter()
        ss = shards.build_shards(clips, ds.labels, DEFAULT_FRONTEND, cache_dir=a["cache"],
                                 workers=a["workers"], progress=True)
        dt = time.perf_counter() - t0
    return _memory({
        "worker_peak_rss_mb": kids.peak_kb / 1024 if kids.peak_kb else None,
        "clips": len(clips), "records": len(ss), "problems": len(ss.problems),
        "seconds": dt, "clips_per_s": len(clips) / dt, "workers": a["workers"],
        "load_dataset_s": load_s, "split_counts": split_counts, "speaker_overlap": overlap,
        "dataset_kind": ds.kind, "labels": ds.labels, "shard_dir": str(ss.path),
        "shard_files": len(ss.files), "shard_bytes": sum(os.path.getsize(f) for f in ss.files),
        "baseline_rss_mb": base, "clip_list_rss_mb": after_list - base})


def _pipeline(a: dict, batch_size: int, clips_needed: int):
    from bnnkws.frontend import DEFAULT_FRONTEND
    from bnnkws.kws.features import augment
    from bnnkws.kws.features import augment_tf
    from bnnkws.kws.features import shards

    ss = shards.ShardSet.open(a["shard_dir"])
    noise = augment.NoiseBank.from_files(augment.noise_files([a["noise"]]), DEFAULT_FRONTEND)
    aug = augment_tf.TFAugmenter(augment.AugmentConfig(), DEFAULT_FRONTEND, ss.labels, noise,
                                 seed=a["seed"])
    # Enough epochs that a small corpus does not run dry (ShardSet.epochs streams them
    # through flat_map, so more would cost nothing), one spare for what prefetching reads
    # ahead.
    n_epochs = -(-clips_needed // max(1, len(ss))) + 1
    elements = ss.epochs(0, n_epochs, seed=a["seed"], shuffle_buffer=a["shuffle_buffer"])
    return ss, augment_tf.make_train_pipeline(elements, aug, batch_size, drop_remainder=True)


def stage_pipeline(a: dict) -> dict:
    import bnnkws.frontend  # noqa: F401  TF_USE_LEGACY_KERAS before TensorFlow loads
    import tensorflow as tf  # noqa: F401

    base = _vm_kb("VmRSS") / 1024
    timed = (a["warmup"] + a["batches"]) * a["batch_size"]
    ss, ds = _pipeline(a, a["batch_size"], timed)
    it = iter(ds)
    t0 = time.perf_counter()
    for _ in range(a["warmup"]):
        next(it)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    for _ in range(a["batches"]):
        x, y, _aux = next(it)
        n += int(y.shape[0])
    dt = time.perf_counter() - t0
    timed_peak = _vm_kb("VmHWM") / 1024
    # Then on to the end of epoch 0, so the peak covers every clip of the corpus streamed
    # through, not just the first shards' worth.
    rest = -(-len(ss) // a["batch_size"]) - a["warmup"] - a["batches"] if a["full_epoch"] else 0
    t1 = time.perf_counter()
    trace = []  # (clips streamed, VmRSS MB): a plateau or a slope
    for i in range(max(0, rest)):
        next(it)
        if i % 100 == 0:
            trace.append(((a["warmup"] + a["batches"] + i + 1) * a["batch_size"],
                          round(_vm_kb("VmRSS") / 1024, 1)))
    epoch_s = time.perf_counter() - t1
    return _memory({"clips": n, "batches": a["batches"], "seconds": dt, "clips_per_s": n / dt,
                    "warmup_s": warm, "corpus": len(ss), "logmel_shape": list(x.shape[1:]),
                    "timed_peak_rss_mb": timed_peak, "epoch_rest_batches": max(0, rest),
                    "rss_trace_mb": trace,
                    "epoch_rest_clips_per_s": (max(0, rest) * a["batch_size"] / epoch_s
                                               if rest > 0 else None),
                    "baseline_rss_mb": base})


def stage_train(a: dict) -> dict:
    import bnnkws.frontend  # noqa: F401
    import tensorflow as tf

    from bnnkws.kws.config import ModelConfig
    from bnnkws.kws.models import build_model
    from bnnkws.kws.training.train import compile_model, make_optimizer
    from bnnkws.kws.training.config import TrainConfig

    base = _vm_kb("VmRSS") / 1024
    ss, ds = _pipeline(a, a["train_batch_size"], a["steps"] * a["train_batch_size"])
    tf.keras.utils.set_random_seed(a["seed"])
    # norm_mean/std stay 0/1: they change the numbers, not the cost of a step
    cfg = ModelConfig(arch=a["arch"], width=a["width"], labels=list(ss.labels))
    model = build_model(cfg)
    tc = TrainConfig(batch_size=a["train_batch_size"], epochs=1)
    compile_model(model, cfg, make_optimizer(tc, a["steps"]))
    names = list(cfg.exit_names)
    ds = ds.map(lambda x, y, _aux: (x, {n: y for n in names}))

    class Stamps(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.t = []

        def on_train_batch_end(self, batch, logs=None):
            self.t.append(time.perf_counter())

    stamps = Stamps()
    t0 = time.perf_counter()
    model.fit(ds, steps_per_epoch=a["steps"], epochs=1, verbose=0, callbacks=[stamps])
    t = np.array(stamps.t)
    skip = min(a["skip_steps"], len(t) - 2)
    # Steps after the first `skip` (graph tracing, pipeline fill): from the end of step
    # `skip` to the end of the last one.
    steady = (len(t) - 1 - skip) / (t[-1] - t[skip])
    return _memory({"steps": len(t), "skipped": skip + 1, "steps_per_s": steady,
                    "clips_per_s": steady * a["train_batch_size"],
                    "first_steps_s": float(t[skip] - t0), "optimizer": tc.optimizer,
                    "params": int(model.count_params()), "corpus": len(ss),
                    "baseline_rss_mb": base})


STAGES = {"build": stage_build, "pipeline": stage_pipeline, "train": stage_train}


def run_stage(name: str, args: dict, log) -> dict:
    """One stage in a fresh interpreter: its peak RSS is its own."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_stage", name,
           "--_stage-args", json.dumps(args)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        sys.stdout.write(proc.stdout)
        raise RuntimeError(f"stage {name} ({json.dumps(args)}) failed with exit code "
                           f"{proc.returncode}; its errors are above")
    res = json.loads(lines[-1][len(RESULT_TAG):])
    res["wall_s"] = wall
    log(f"  {name}: " + ", ".join(f"{k}={_fmt(res[k])}" for k in
                                    ("clips_per_s", "steps_per_s", "peak_rss_mb",
                                     "worker_peak_rss_mb", "wall_s")
                                    if res.get(k) is not None))
    return res


def _fmt(v) -> str:
    return f"{v:,.1f}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------------- the run


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import importlib.metadata as md

    def ver(p):
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return None
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "tensorflow": ver("tensorflow"), "larq": ver("larq"),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
            "loadavg_start": load}


def check_disk(path: Path, largest: int) -> None:
    need = largest * (WAV_BYTES + SHARD_BYTES) * DISK_MARGIN
    free = shutil.disk_usage(path).free
    if free < need:
        sys.exit(f"error: {path} has {free / 1e9:.1f} GB free; the {largest:,}-clip corpus "
                 f"and its shards need about {need / 1e9:.1f} GB. Free space, choose another "
                 f"--workdir or smaller --sizes")


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s.replace("_", "")) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: expected comma-separated clip "
                                         f"counts, e.g. 10000,50000,100000") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: sizes must be positive")
    return sorted(set(sizes))


def table(rows: list[dict]) -> str:
    head = ["clips", "shard build clips/s", "pipeline clips/s", "train steps/s (clips/s)",
            "peak RSS MB build / pipeline / train"]
    body = []
    for r in rows:
        b, p, t = r.get("build") or {}, r.get("pipeline") or {}, r.get("train") or {}
        body.append([
            f"{r['size']:,}",
            f"{b['clips_per_s']:,.0f} (w={b['workers']})" if b else "n/a",
            f"{p['clips_per_s']:,.0f}" if p else "n/a",
            f"{t['steps_per_s']:.2f} ({t['clips_per_s']:,.0f})" if t else "n/a",
            " / ".join(f"{s['peak_rss_mb']:,.0f}" if s else "n/a" for s in (b, p, t))])
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
    line = lambda cells: " | ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), "-+-".join("-" * w for w in widths)] + [line(r) for r in body])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " Builds a synthetic corpus at each size and "
        "measures shard building, the augmented input pipeline and training from it, each "
        "stage in its own subprocess (peak RSS per stage and size).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--sizes", type=parse_sizes, default="10000,50000,100000",
                    help="corpus sizes in clips, comma-separated; built incrementally from the "
                         "smallest, the shards of a size are deleted once it is measured")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                    help="where the temporary folder (corpus + shards) is made; the folder is "
                         "deleted at the end, also on errors and Ctrl-C")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary folder (its path is printed) instead of deleting it")
    ap.add_argument("--build-workers", default="auto",
                    help="build_shards worker processes: a number, or 'auto' to time 1 and 2 at "
                         "the smallest size and use the faster for the others")
    ap.add_argument("--split", choices=["all", "train"], default="all",
                    help="clips to shard and stream: every clip of the corpus (the size is "
                         "exactly N) or only the speaker-disjoint training split (~80%%)")
    ap.add_argument("--speakers", choices=["keep", "new"], default="keep",
                    help="speaker ids of the copies: 'keep' the source speaker (copies of one "
                         "speaker stay on one side of the split), or a 'new' hashed id per copy")
    ap.add_argument("--batch-size", type=int, default=64,
                    help="input pipeline benchmark: clips per batch")
    ap.add_argument("--batches", type=int, default=200,
                    help="input pipeline benchmark: timed batches (after --warmup-batches)")
    ap.add_argument("--warmup-batches", type=int, default=20,
                    help="input pipeline benchmark: untimed batches first (tracing, buffer fill)")
    ap.add_argument("--no-full-epoch", action="store_true",
                    help="input pipeline benchmark: stop after the timed batches instead of "
                         "streaming on to the end of one epoch (the peak RSS then covers only "
                         "the first ~%d clips instead of the whole corpus)" % (220 * 64))
    ap.add_argument("--shuffle-buffer", type=int, default=4096,
                    help="shuffle buffer of the shard stream, in clips (as kws train's)")
    ap.add_argument("--train-steps", type=int, default=30,
                    help="training benchmark: optimizer steps of model.fit on the shard stream")
    ap.add_argument("--skip-steps", type=int, default=3,
                    help="training benchmark: first steps left out of steps/s (graph tracing)")
    ap.add_argument("--train-batch-size", type=int, default=32,
                    help="training benchmark: batch size (kws train's default)")
    ap.add_argument("--arch", default="quicknet", help="training benchmark: model architecture")
    ap.add_argument("--width", type=float, default=0.25,
                    help="training benchmark: width multiplier (small: the input is under test)")
    ap.add_argument("--seed", type=int, default=0, help="corpus augmentation and stream seed")
    ap.add_argument("--source", type=Path, default=SOURCE,
                    help="real 12-class clips the corpus is copied from")
    ap.add_argument("--noise-dir", type=Path, default=NOISE,
                    help="background noise recordings (corpus copies and training augmentation)")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    ap.add_argument("--_stage", choices=list(STAGES), help=argparse.SUPPRESS)
    ap.add_argument("--_stage-args", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._stage:  # a child: one stage, result as one tagged JSON line
        res = STAGES[args._stage](json.loads(args._stage_args))
        print(RESULT_TAG + json.dumps(res), flush=True)
        return 0

    for name in ("batch_size", "batches", "train_steps", "train_batch_size", "shuffle_buffer"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.train_steps <= args.skip_steps + 1:
        ap.error(f"--train-steps {args.train_steps} leaves nothing to time after "
                 f"--skip-steps {args.skip_steps}")
    if args.build_workers != "auto" and not (args.build_workers.isdigit()
                                             and int(args.build_workers) >= 1):
        ap.error(f"--build-workers {args.build_workers!r}: expected 'auto' or a number >= 1")
    args.workdir.mkdir(parents=True, exist_ok=True)
    check_disk(args.workdir, max(args.sizes))

    # SIGTERM as an exception, so the finally below removes the folder as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="bnnkws-scale-", dir=args.workdir))
    t_start = time.time()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    info = {"command": shlex.join([sys.executable] + sys.argv), "machine": machine(),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                        if not k.startswith("_")}, "sizes": []}
    try:
        log(f"workdir {tmp}")
        t0 = time.perf_counter()
        load_sources(args.source, args.noise_dir)
        log(f"{len(_SRC)} source clips, {len(_NOISE)} noise recordings "
            f"({time.perf_counter() - t0:.1f} s)")
        root = tmp / "corpus"
        have = 0
        workers = None if args.build_workers == "auto" else int(args.build_workers)
        for size in args.sizes:
            log(f"== {size:,} clips")
            gen_s = grow_corpus(root, have, size, args.seed, args.speakers)
            row = {"size": size, "corpus_write_s": gen_s,
                   "corpus_write_clips_per_s": (size - have) / gen_s}
            have = size
            common = {"root": str(root), "split": args.split, "seed": args.seed}
            if workers is None:  # time both at the smallest size, each into its own cache
                trials = {}
                for w in (1, 2):
                    trials[w] = run_stage("build", {**common, "workers": w,
                                                    "cache": str(tmp / f"cache-{size}-w{w}")}, log)
                workers = max(trials, key=lambda w: trials[w]["clips_per_s"])
                row["build_trials"] = {str(w): r for w, r in trials.items()}
                shutil.rmtree(tmp / f"cache-{size}-w{3 - workers}", ignore_errors=True)
                build, cache = trials[workers], tmp / f"cache-{size}-w{workers}"
                log(f"  build: workers={workers} was faster; used for the larger sizes")
            else:
                cache = tmp / f"cache-{size}"
                build = run_stage("build", {**common, "workers": workers, "cache": str(cache)},
                                  log)
            row["build"] = build
            stream = {"shard_dir": build["shard_dir"], "noise": str(args.noise_dir),
                      "seed": args.seed, "shuffle_buffer": args.shuffle_buffer}
            row["pipeline"] = run_stage("pipeline", {**stream, "batch_size": args.batch_size,
                                                     "batches": args.batches,
                                                     "warmup": args.warmup_batches,
                                                     "full_epoch": not args.no_full_epoch},
                                 log)
            row["train"] = run_stage("train", {**stream, "train_batch_size":
                                               args.train_batch_size,
                                               "steps": args.train_steps,
                                               "skip_steps": args.skip_steps,
                                               "arch": args.arch, "width": args.width}, log)
            # only one size's shards on disk at a time
            shutil.rmtree(cache, ignore_errors=True)
            info["sizes"].append(row)
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            if tmp.exists():
                log(f"warning: could not remove all of {tmp}")
    info["total_s"] = time.time() - t_start
    try:
        info["machine"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass

    m = info["machine"]
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}; TensorFlow {m['tensorflow']}, "
          f"oneDNN {m['onednn']}; load {m['loadavg_start']} -> {m.get('loadavg_end')}")
    print(f"command: {info['command']}")
    print(f"split: {args.split}; pipeline {args.batches} x {args.batch_size} clips after "
          f"{args.warmup_batches} warm-up; train {args.arch} w{args.width:g}, "
          f"{args.train_steps} steps of {args.train_batch_size} (first {args.skip_steps + 1} "
          f"left out); shuffle buffer {args.shuffle_buffer}")
    print(table(info["sizes"]))
    for r in info["sizes"]:
        b, p, t = r["build"], r["pipeline"], r["train"]
        trials = r.get("build_trials")
        extra = ("; build workers 1 vs 2: " + ", ".join(
            f"w={w} {x['clips_per_s']:,.0f} clips/s" + (
                f" (pool workers' peak {x['worker_peak_rss_mb']:,.0f} MB)"
                if x.get("worker_peak_rss_mb") else "") for w, x in trials.items())
            if trials else "")
        print(f"{r['size']:,}: corpus written at {r['corpus_write_clips_per_s']:,.0f} clips/s; "
              f"splits {b['split_counts']}, speakers shared across splits "
              f"{sum(b['speaker_overlap'].values())}; load_dataset {b['load_dataset_s']:.1f} s, "
              f"clip list +{b['clip_list_rss_mb']:.0f} MB; shards {b['shard_bytes'] / 1e9:.2f} GB"
              f" ({b['records']:,} records, {b['problems']} unreadable)"
              f"; RSS after TF import build/pipeline/train {b['baseline_rss_mb']:.0f} / "
              f"{p['baseline_rss_mb']:.0f} / {t['baseline_rss_mb']:.0f} MB; pipeline peak "
              f"after the timed batches {p['timed_peak_rss_mb']:,.0f} MB"
              + (f", after the whole epoch {p['peak_rss_mb']:,.0f} MB (rest of the epoch at "
                 f"{p['epoch_rest_clips_per_s']:,.0f} clips/s)"
                 if p.get("epoch_rest_clips_per_s") else "") + extra)
    print(f"total {info['total_s'] / 60:.1f} min")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(info, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
