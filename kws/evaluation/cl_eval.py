"""New-classes (NC) continual-learning evaluation of CWR*, latent replay and baselines.

Protocol: start from a trained (12-class) model; each *experience* enrols a few new words from
a handful of examples (default 5 per word, the other 5 of each word test it; every speaker on
one side only). After each experience we measure, on held-out speech, accuracy on the old
classes (speaker-disjoint test split of the 12-class data), on the new words enrolled so far,
and overall, for

* ``cwr``        CWR* (Algorithm 3) on every exit head;
* ``cwr_replay`` CWR* whose training batch also holds 1-bit latent replay (ratio 1:4) for the
                 heads after the replay boundary (the input of the last stage);
* ``replay_stage`` CWR* on every head, then the last stage itself (TensorFlow, from the
                 training run) and its head continue on new + replayed latents (only with a run);
* ``naive``      plain SGD of the heads on the new words only (shows forgetting);
* ``joint``      the heads retrained on old-class training clips plus all new words, classes
                 balanced by oversampling (upper bound).

Accuracy is reported at the last exit and with the model's early-exit policy. The quantization
study reruns CWR* with every (lp, hp) pair of 8/16/32 bits/float.

This module sits in ``kws`` and imports no ``deploy`` code: the deployed model comes in as a
:class:`Backbone` (see :class:`bnnkws.deploy.enroll.BundleBackbone`), the frozen stages as
functions.
"""
from __future__ import annotations

import csv
import io
import json
import resource
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

from bnnkws.kws.fileio import atomic_savefig, atomic_write_text
from bnnkws.kws.continual.cwr import CWRStar, Precision, bits_name, sgd_finetune, train_joint
from bnnkws.kws.continual.replay import ReplayMemory

METHODS = ("cwr", "cwr_replay", "replay_stage", "naive", "joint")
METHOD_TITLES = {"cwr": "CWR*", "cwr_replay": "CWR* + latent replay",
                 "replay_stage": "latent replay, last stage retrained",
                 "naive": "naive fine-tuning", "joint": "joint retraining (upper bound)"}
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class CLEvalError(ValueError):
    """Bad evaluation settings or data; the message names the value or folder."""


class Backbone(Protocol):
    """The frozen model as the evaluation needs it."""

    labels: list  # class names of the heads
    exits: list  # 1-based exit numbers, one head each
    heads: dict  # {exit: (W (D, C), b (C,))}

    def forward(self, audio: np.ndarray) -> tuple:
        """One 1 s clip -> (list of per-exit head inputs (D_k,), latent at the boundary)."""

    def from_latent(self, latents: np.ndarray) -> np.ndarray:
        """Latents at the boundary (n, ...) -> last exit's head inputs (n, D_N)."""


@dataclass
class CLEvalConfig:
    old_data: str  # 12-class data (its speaker-disjoint test split is the old-class test)
    new_data: str  # speech_commands_v1_sample or fsdd
    source: str = "v1"  # "v1" | "fsdd"
    words: Optional[list] = None  # new words (v1 folder names / digits); default: not in the model
    words_per_experience: int = 2
    experiences: int = 5
    train_per_word: int = 5
    test_per_word: int = 5
    old_test_per_class: int = 30
    old_train_per_class: int = 20  # replay memory fill and joint retraining
    memory_size: int = 240  # replay capacity (samples)
    replay_ratio: float = 4.0  # replayed samples per new sample
    replay_scales: bool = False  # also store a float16 magnitude per channel
    lr: float = 0.05
    epochs: int = 30
    bits: list = field(default_factory=lambda: [8, 16, 32, None])
    quant_study: bool = True
    split_seed: int = 0  # speaker-split seed of old_data: the model's training seed
    run_dir: Optional[str] = None  # training run: enables last-stage retraining (TensorFlow)
    stage_epochs: int = 10
    stage_lr: float = 1e-3
    seed: int = 0


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
@dataclass
class Item:
    path: str
    label: str
    speaker: Optional[str]
    clip: object = None  # a bnnkws.kws.data Clip for dataset clips (silence segments)


def _speaker(path: Path) -> Optional[str]:
    from bnnkws.kws.data import speaker_from_name

    return speaker_from_name(path)


def new_word_items(cfg: CLEvalConfig, known: Sequence[str]) -> dict:
    """``{word: (train items, test items)}`` with every speaker on one side only."""
    root = Path(cfg.new_data)
    if not root.is_dir():
        raise CLEvalError(f"new-word data {root} is not a folder")
    rng = np.random.default_rng(cfg.seed)
    out = {}
    if cfg.source == "v1":
        avail = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
        words = cfg.words or [w for w in avail if w not in known]
        for w in words:
            if w not in avail:
                raise CLEvalError(f"{root}: no folder for word {w!r}; have {', '.join(avail)}")
            files = sorted((root / w).glob("*.wav"))
            by_spk: dict = {}
            for f in files:
                by_spk.setdefault(_speaker(f) or f.stem, []).append(f)
            spk = sorted(by_spk)
            rng.shuffle(spk)
            train, test = [], []
            for s in spk:  # whole speakers go to train until it has enough examples
                (train if len(train) < cfg.train_per_word else test).extend(by_spk[s])
            train, test = train[:cfg.train_per_word], test[:cfg.test_per_word]
            if len(train) < cfg.train_per_word or not test:
                raise CLEvalError(f"{root / w}: {len(files)} clips from {len(spk)} speakers are "
                                  f"too few for {cfg.train_per_word} training examples and a "
                                  f"speaker-disjoint test")
            out[w] = ([Item(str(p), w, _speaker(p)) for p in train],
                      [Item(str(p), w, _speaker(p)) for p in test])
    elif cfg.source == "fsdd":
        files = sorted(root.glob("*.wav"))
        if not files:
            raise CLEvalError(f"{root}: no FSDD clips (<digit>_<speaker>_<n>.wav)")
        speakers = sorted({f.stem.split("_")[1] for f in files})
        if len(speakers) < 2:
            raise CLEvalError(f"{root}: FSDD needs at least 2 speakers for a disjoint split")
        test_spk = speakers[int(rng.integers(len(speakers)))]
        digits = cfg.words or [d for d in DIGITS if d not in known]
        for name in digits:
            if name not in DIGITS:
                raise CLEvalError(f"FSDD words are digit names ({', '.join(DIGITS)}), got {name!r}")
            d = str(DIGITS.index(name))
            tr = [f for f in files if f.stem.split("_")[0] == d and f.stem.split("_")[1] != test_spk]
            te = [f for f in files if f.stem.split("_")[0] == d and f.stem.split("_")[1] == test_spk]
            tr = [tr[i] for i in rng.permutation(len(tr))[:cfg.train_per_word]]
            te = [te[i] for i in rng.permutation(len(te))[:cfg.test_per_word]]
            out[name] = ([Item(str(p), name, p.stem.split("_")[1]) for p in tr],
                         [Item(str(p), name, p.stem.split("_")[1]) for p in te])
    else:
        raise CLEvalError(f"source must be 'v1' or 'fsdd', got {cfg.source!r}")
    need = cfg.words_per_experience * cfg.experiences
    if len(out) < need:
        raise CLEvalError(f"{len(out)} new words available, {cfg.experiences} experiences x "
                          f"{cfg.words_per_experience} words need {need}")
    names = list(out)
    if cfg.words is None:
        names = [names[i] for i in rng.permutation(len(names))]
    return {w: out[w] for w in names[:need]}


def old_class_items(cfg: CLEvalConfig, labels: Sequence[str], new_words: Sequence[str] = ()):
    """(train items, test items) of the model's classes from the 12-class data's split.

    ``_unknown_`` clips of a word that the protocol enrols are left out: once "marvin" is a
    word of its own, a "marvin" clip labelled ``_unknown_`` is no longer an old-class error.
    """
    from bnnkws.kws.data import load_dataset

    # The model's own speaker split: with another seed its training speakers would be tested.
    ds = load_dataset(cfg.old_data, task="12", seed=cfg.split_seed)
    rng = np.random.default_rng(cfg.seed)
    enrolled = {w.lower() for w in new_words}

    def pick(clips, per_class):
        out = []
        for lab in labels:
            cs = [c for c in clips if c.label == lab and str(c.source).lower() not in enrolled]
            for i in sorted(rng.permutation(len(cs))[:per_class]):
                out.append(Item(cs[i].path, lab, cs[i].speaker, cs[i]))
        return out

    test = pick(ds.testing, cfg.old_test_per_class)
    train = pick(ds.train, cfg.old_train_per_class)
    missing = [lab for lab in labels if not any(i.label == lab for i in test)]
    if missing:
        raise CLEvalError(f"{cfg.old_data}: no test clips for the model's classes {missing}")
    spk_overlap = {i.speaker for i in train if i.speaker} & {i.speaker for i in test if i.speaker}
    if spk_overlap:
        raise CLEvalError(f"old-class split shares speakers {sorted(spk_overlap)[:5]}")
    return train, test


def read_items(items: Sequence[Item], clip_samples: int = 16000) -> np.ndarray:
    """``(n, clip_samples)`` audio: dataset clips via their reader, files centred on the word."""
    from bnnkws.frontend.audio import loudest_window

    from bnnkws.kws.features.cache import read_clip

    out = np.zeros((len(items), clip_samples), np.float32)
    for i, it in enumerate(items):
        if it.clip is not None:
            y = read_clip(it.clip)
        else:
            from bnnkws.frontend.audio import load_audio

            y = load_audio(it.path, sr=16000)
        out[i] = loudest_window(y, clip_samples)
    return out


@dataclass
class Encoded:
    feats: list  # per exit (n, D_k)
    latents: Optional[np.ndarray]  # (n, ...) at the replay boundary
    y: np.ndarray  # label indices
    ms_per_clip: float


def encode(backbone: Backbone, items, label_index: dict, progress=True, desc="clips") -> Encoded:
    audio = read_items(items)
    it = range(len(items))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=desc, unit="clip", leave=False)
    rows, lats = [], []
    t = time.perf_counter()
    for i in it:
        f, lat = backbone.forward(audio[i])
        rows.append(f)
        lats.append(lat)
    ms = (time.perf_counter() - t) * 1e3 / max(1, len(items))
    feats = [np.stack([r[k] for r in rows]).astype(np.float32) for k in range(len(rows[0]))]
    latents = None if lats[0] is None else np.stack(lats)
    return Encoded(feats, latents, np.array([label_index[i.label] for i in items]), ms)


def _cat(parts: Sequence[Encoded]) -> Encoded:
    feats = [np.concatenate([p.feats[k] for p in parts]) for k in range(len(parts[0].feats))]
    lat = None if parts[0].latents is None else np.concatenate([p.latents for p in parts])
    return Encoded(feats, lat, np.concatenate([p.y for p in parts]), 0.0)


def _balanced(d: Encoded, seed: int) -> Encoded:
    """Oversample every class to the largest class's count (5 new examples vs 20 old)."""
    rng = np.random.default_rng(seed)
    cls, cnt = np.unique(d.y, return_counts=True)
    m = int(cnt.max())
    idx = np.concatenate([np.flatnonzero(d.y == c) if n == m else
                          rng.choice(np.flatnonzero(d.y == c), m, replace=True)
                          for c, n in zip(cls, cnt)])
    return Encoded([f[idx] for f in d.feats], None if d.latents is None else d.latents[idx],
                   d.y[idx], d.ms_per_clip)


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def evaluate_heads(heads: list, data: Encoded, n_old: int, policy=None, last_logits=None) -> dict:
    """Accuracy at the last exit (old / new / all) and with the early-exit policy."""
    logits = [h.logits(x) for h, x in zip(heads, data.feats)]  # per exit (n, C)
    if last_logits is not None:
        logits[-1] = last_logits
    pred = np.argmax(logits[-1], axis=1)
    ok = pred == data.y
    old = data.y < n_old
    res = {"acc_old": float(ok[old].mean()) if old.any() else float("nan"),
           "acc_new": float(ok[~old].mean()) if (~old).any() else float("nan"),
           "acc_all": float(ok.mean())}
    if policy is not None and len(heads) > 1:
        from bnnkws.kws.policy import decide_batch

        z = np.stack(logits, axis=1)  # (n, E, C)
        dec = decide_batch(z, policy)
        lab = np.asarray(dec[1] if isinstance(dec, tuple) else dec.label_index)
        ex = np.asarray(dec[0] if isinstance(dec, tuple) else dec.exit)
        res["acc_all_early_exit"] = float(np.mean(lab == data.y))
        res["mean_exit"] = float(np.mean(ex))
    return res


def _peak_mem(fn):
    """Run ``fn``; return (result, seconds, tracemalloc peak bytes)."""
    tracemalloc.start()
    t = time.perf_counter()
    try:
        r = fn()
    finally:
        sec = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return r, sec, peak


# ---------------------------------------------------------------------------------------------
# the protocol
# ---------------------------------------------------------------------------------------------
def _heads(backbone, precision=Precision(), cfg=None, past=100):
    return [CWRStar(*backbone.heads[k], past=np.full(len(backbone.labels), past),
                    lr=cfg.lr, epochs=cfg.epochs, precision=precision, seed=cfg.seed)
            for k in backbone.exits]


def _grow(heads, n):
    for h in heads:
        while h.num_classes < n:
            h.add_class()


def run_protocol(backbone: Backbone, cfg: CLEvalConfig, data: dict, methods=METHODS,
                 precision=Precision(), policy=None, progress=True) -> list:
    """Rows ``{method, experience, words, acc_*, seconds, peak_bytes}`` after each experience."""
    n_old = len(backbone.labels)
    exps = data["experiences"]
    rows = []
    for method in methods:
        heads = _heads(backbone, precision, cfg)
        memory = learner = None
        if method in ("cwr_replay", "replay_stage"):
            memory = data["memory_factory"]()
        if method == "replay_stage":
            from bnnkws.kws.continual.replay import LastStageLearner, last_stage_of_run

            w_last, b_last = backbone.heads[backbone.exits[-1]]
            learner = LastStageLearner(last_stage_of_run(cfg.run_dir), w_last, b_last,
                                       getattr(backbone, "sign_inputs", [True])[-1],
                                       lr=cfg.stage_lr, epochs=cfg.stage_epochs,
                                       ratio=cfg.replay_ratio, seed=cfg.seed)
        for e, exp in enumerate(exps, 1):
            tr = exp["train"]
            n_cls = n_old + sum(len(x["words"]) for x in exps[:e])
            _grow(heads, n_cls)
            seen_test = _cat([data["old_test"]] + [x["test"] for x in exps[:e]])

            def step():
                if method == "cwr":
                    for h, x in zip(heads, tr.feats):
                        h.fit_batch(x, tr.y)
                elif method == "cwr_replay":
                    rng = np.random.default_rng(cfg.seed + e)
                    k = min(len(memory), int(round(cfg.replay_ratio * len(tr.y))))
                    idx = rng.choice(len(memory), size=k, replace=False)
                    lat, yr = memory.get(idx)
                    xr_last = backbone.from_latent(lat)
                    for j, (h, x) in enumerate(zip(heads, tr.feats)):
                        if j == len(heads) - 1:  # the head after the replay boundary
                            h.fit_batch(np.concatenate([x, xr_last]), np.concatenate([tr.y, yr]))
                        else:
                            h.fit_batch(x, tr.y)
                    memory.add(tr.latents, tr.y)
                elif method == "replay_stage":
                    # CWR* on every head (AR1*-style), then the last stage and its head
                    # continue from the CWR* head on new + replayed latents.
                    for h, x in zip(heads, tr.feats):
                        h.fit_batch(x, tr.y)
                    learner.set_head(heads[-1].cw, heads[-1].cb)
                    learner.fit(tr.latents, tr.y, memory)
                    memory.add(tr.latents, tr.y)
                elif method == "naive":
                    for h, x in zip(heads, tr.feats):
                        h.cw, h.cb = sgd_finetune(h.cw, h.cb, x, tr.y, lr=cfg.lr,
                                                  epochs=cfg.epochs, precision=precision,
                                                  seed=cfg.seed)
                elif method == "joint":
                    allx = _balanced(_cat([data["old_train"]] + [x["train"] for x in exps[:e]]),
                                     cfg.seed)
                    for j, k in enumerate(backbone.exits):
                        w0, b0 = backbone.heads[k]
                        w = np.concatenate([w0, np.zeros((w0.shape[0], n_cls - w0.shape[1]))], 1)
                        b = np.concatenate([b0, np.zeros(n_cls - len(b0))])
                        heads[j].cw, heads[j].cb = train_joint(
                            w.shape[0], n_cls, allx.feats[j], allx.y, lr=cfg.lr,
                            epochs=cfg.epochs, seed=cfg.seed, init=(w, b))

            _, sec, peak = _peak_mem(step)
            res = evaluate_heads(heads, seen_test, n_old, policy,
                                 learner.logits(seen_test.latents) if learner else None)
            rows.append({"method": method, "experience": e, "words": ",".join(exp["words"]),
                         "classes": n_cls, **res, "update_seconds": sec,
                         "embed_seconds": tr.ms_per_clip * len(tr.y) / 1e3,
                         "peak_bytes": int(peak), "precision": precision.name})
            if progress:
                print(f"  {METHOD_TITLES[method]:32s} exp {e}: old {res['acc_old']:.3f} "
                      f"new {res['acc_new']:.3f} all {res['acc_all']:.3f}", flush=True)
    return rows


def prepare(backbone: Backbone, cfg: CLEvalConfig, progress=True) -> dict:
    """Encode every clip the protocol needs once (the backbone is frozen)."""
    labels = list(backbone.labels)
    words = new_word_items(cfg, labels)
    all_labels = labels + list(words)
    index = {lab: i for i, lab in enumerate(all_labels)}
    old_train, old_test = old_class_items(cfg, labels, list(words))
    d = {"labels": all_labels,
         "old_test": encode(backbone, old_test, index, progress, "old-class test"),
         "old_train": encode(backbone, old_train, index, progress, "old-class train"),
         "experiences": []}
    names = list(words)
    for e in range(cfg.experiences):
        ws = names[e * cfg.words_per_experience:(e + 1) * cfg.words_per_experience]
        tr = encode(backbone, [i for w in ws for i in words[w][0]], index, progress,
                    f"experience {e + 1} train")
        te = encode(backbone, [i for w in ws for i in words[w][1]], index, progress,
                    f"experience {e + 1} test")
        d["experiences"].append({"words": ws, "train": tr, "test": te,
                                 "train_files": [i.path for w in ws for i in words[w][0]],
                                 "test_files": [i.path for w in ws for i in words[w][1]]})
    lat = d["old_train"].latents

    def memory_factory():
        mem = ReplayMemory(cfg.memory_size, lat.shape[1:], with_scales=cfg.replay_scales,
                           seed=cfg.seed)
        mem.add(lat, d["old_train"].y)
        return mem

    d["memory_factory"] = memory_factory if lat is not None else None
    return d


def replay_fidelity(backbone: Backbone, data: dict, with_scales: bool) -> dict:
    """How close the last exit's input is when its latent comes back from 1 bit."""
    enc = data["old_test"]
    mem = ReplayMemory(len(enc.y), enc.latents.shape[1:], with_scales=with_scales)
    mem.add(enc.latents, enc.y)
    x1 = backbone.from_latent(mem.get()[0])
    x = enc.feats[-1]
    cos = np.sum(x * x1, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(x1, axis=1) + 1e-12)
    w, b = backbone.heads[backbone.exits[-1]]
    agree = np.mean(np.argmax(x @ w + b, 1) == np.argmax(x1 @ w + b, 1))
    acc1 = np.mean(np.argmax(x1 @ w + b, 1) == enc.y)
    return {"with_scales": with_scales, "latent_shape": list(enc.latents.shape[1:]),
            "bytes_per_sample": mem.bytes_per_sample,
            "float32_bytes_per_sample": mem.float32_bytes_per_sample,
            "compression": mem.float32_bytes_per_sample / mem.bytes_per_sample,
            "embedding_cosine": float(np.mean(cos)), "prediction_agreement": float(agree),
            "old_test_acc_from_1bit": float(acc1)}


def run(backbone: Backbone, cfg: CLEvalConfig, out_dir, policy=None, progress=True,
        target: str = "") -> dict:
    """The whole evaluation; writes results.json, table.md/.csv, quant.md/.csv and cl_eval.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = prepare(backbone, cfg, progress)
    methods = [m for m in METHODS
               if (m not in ("cwr_replay", "replay_stage") or data["memory_factory"] is not None)
               and (m != "replay_stage" or cfg.run_dir)]
    base = evaluate_heads(_heads(backbone, Precision(), cfg), data["old_test"], len(backbone.labels),
                          policy)
    rows = run_protocol(backbone, cfg, data, methods, policy=policy, progress=progress)
    quant = []
    if cfg.quant_study:
        for lp in cfg.bits:
            for hp in cfg.bits:
                r = run_protocol(backbone, cfg, data, ("cwr",), Precision(lp, hp), policy,
                                 progress=False)[-1]
                quant.append({"lp": bits_name(lp), "hp": bits_name(hp),
                              **{k: r[k] for k in ("acc_old", "acc_new", "acc_all")}})
                if progress:
                    print(f"  CWR* lp={bits_name(lp):>5s} hp={bits_name(hp):>5s}: "
                          f"all {r['acc_all']:.3f}", flush=True)
    fidelity = []
    if data["memory_factory"] is not None:
        fidelity = [replay_fidelity(backbone, data, s) for s in (False, True)]
    result = {
        "target": str(target), "config": {k: v for k, v in asdict(cfg).items()},
        "labels": data["labels"], "old_classes": len(backbone.labels),
        "counts": {"old_test": int(len(data["old_test"].y)),
                   "old_train": int(len(data["old_train"].y)),
                   "per_experience": [{"words": x["words"], "train": int(len(x["train"].y)),
                                       "test": int(len(x["test"].y)),
                                       "train_files": x["train_files"],
                                       "test_files": x["test_files"]}
                                      for x in data["experiences"]]},
        "base": base,
        "embed_ms_per_clip": data["old_test"].ms_per_clip,
        "rows": rows, "quantization": quant, "replay_memory": fidelity,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wall_seconds": time.perf_counter() - t0,
    }
    write_reports(result, out)
    return result


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------
def _atomic_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _fmt(v):
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def table_markdown(result: dict) -> str:
    rows = result["rows"]
    lines = ["| method | exp | words | classes | old acc | new acc | all acc | all acc (early exit)"
             " | mean exit | update ms | embed ms | peak KiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {METHOD_TITLES[r['method']]} | {r['experience']} | {r['words']} | {r['classes']} "
            f"| {_fmt(r['acc_old'])} | {_fmt(r['acc_new'])} | {_fmt(r['acc_all'])} "
            f"| {_fmt(r.get('acc_all_early_exit'))} | {r.get('mean_exit', float('nan')):.2f} "
            f"| {r['update_seconds'] * 1e3:.1f} | {r['embed_seconds'] * 1e3:.0f} "
            f"| {r['peak_bytes'] / 1024:.0f} |")
    return "\n".join(lines) + "\n"


def quant_markdown(result: dict) -> str:
    q = result["quantization"]
    if not q:
        return ""
    lines = ["| lp bits (forward) | hp bits (update) | old acc | new acc | all acc |",
             "|---|---|---|---|---|"]
    for r in q:
        lines.append(f"| {r['lp']} | {r['hp']} | {_fmt(r['acc_old'])} | {_fmt(r['acc_new'])} "
                     f"| {_fmt(r['acc_all'])} |")
    return "\n".join(lines) + "\n"


def memory_markdown(result: dict) -> str:
    f = result["replay_memory"]
    if not f:
        return ""
    lines = ["| storage | latent shape | bytes/sample | float32 bytes/sample | compression "
             "| embedding cosine | last-exit agreement | old acc from stored latent |",
             "|---|---|---|---|---|---|---|---|"]
    for r in f:
        lines.append(f"| 1 bit{' + fp16 channel scale' if r['with_scales'] else ''} "
                     f"| {'x'.join(map(str, r['latent_shape']))} | {r['bytes_per_sample']} "
                     f"| {r['float32_bytes_per_sample']} | {r['compression']:.1f}x "
                     f"| {r['embedding_cosine']:.3f} | {r['prediction_agreement']:.3f} "
                     f"| {r['old_test_acc_from_1bit']:.3f} |")
    return "\n".join(lines) + "\n"


def write_reports(result: dict, out: Path) -> None:
    _atomic_text(out / "results.json", json.dumps(result, indent=2, default=float) + "\n")
    md = [f"# Continual learning (new classes): {result['target']}\n",
          f"Old classes: {result['old_classes']}, old-class test clips: "
          f"{result['counts']['old_test']} (accuracy before enrolment: "
          f"{_fmt(result.get('base', {}).get('acc_old'))} at the last exit, "
          f"{_fmt(result.get('base', {}).get('acc_all_early_exit'))} with early exit); "
          f"per experience "
          + ", ".join(f"{x['words']}: {x['train']} train / {x['test']} test"
                      for x in result["counts"]["per_experience"]) + ".\n",
          table_markdown(result)]
    if result["quantization"]:
        md += ["\n## CWR* quantization study (after the last experience)\n", quant_markdown(result)]
    if result["replay_memory"]:
        md += ["\n## Latent replay memory\n", memory_markdown(result)]
    md.append(f"\nEmbedding (all stages, interpreter): {result['embed_ms_per_clip']:.1f} ms per "
              f"clip; max RSS {result['max_rss_mb']:.0f} MB; wall {result['wall_seconds']:.0f} s.\n")
    _atomic_text(out / "table.md", "\n".join(md))
    for name, rows in (("table.csv", result["rows"]), ("quant.csv", result["quantization"])):
        if rows:
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
            atomic_write_text(out / name, buf.getvalue())
    plot(result, out / "cl_eval.png")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, key, title in zip(axes, ("acc_old", "acc_new", "acc_all"),
                              ("old classes", "new words", "overall")):
        base = result.get("base", {}).get("acc_old")
        for m in METHODS:
            rs = [r for r in result["rows"] if r["method"] == m]
            if rs:
                xs, ys = [r["experience"] for r in rs], [r[key] for r in rs]
                if base is not None and key != "acc_new":  # start from the model before enrolment
                    xs, ys = [0] + xs, [base] + ys
                ax.plot(xs, ys, marker="o", label=METHOD_TITLES[m])
        ax.set_title(title)
        ax.set_xlabel("experience (0 = before enrolment)")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (last exit)")
    axes[0].set_ylim(0, 1.02)
    axes[-1].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"New-class continual learning: {Path(str(result['target'])).name}")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
