"""Per-exit logits of a model over a dataset split, with labels matched to the model's by name.

The report (:mod:`bnnkws.kws.evaluation.report`) works on :class:`ModelLogits` only, so it does not
care where the logits came from: a training run evaluated with Keras here
(:func:`evaluate_run`), or an exported bundle evaluated clip by clip through the deployed
runtime (``bnnkws.app.commands.eval`` passes a *logits provider*: ``kws`` never imports ``deploy``).

Nothing here imports TensorFlow at import time.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

# A logits provider maps a batch of clips to their logits at every exit: (b, E, C).
LogitsProvider = Callable[[list], np.ndarray]


class EvalError(ValueError):
    """Evaluation cannot proceed (the message names the run, file or label at fault)."""


@dataclass
class ModelLogits:
    """What one model said about one split: everything the report needs.

    ``logits`` (N, E, C) are for the clips whose label the model knows (``labels`` are indices
    into ``model_labels``); ``exit_numbers`` are the 1-based exits present (one for an E_s
    model). ``unknown`` counts clips whose dataset label the model does not have, by label;
    they are reported, not scored. ``macs`` are cumulative MACs to reach each present exit, as
    ``{"binary": [...], "real": [...], "total": [...]}`` (None when unknown).
    """

    name: str
    logits: np.ndarray
    labels: np.ndarray
    model_labels: list
    exit_numbers: list
    num_exits: int
    paths: list = field(default_factory=list)
    unknown: dict = field(default_factory=dict)
    missing_labels: list = field(default_factory=list)
    macs: Optional[dict] = None
    macs_note: str = ""
    temperatures: Optional[list] = None  # per present exit
    latency_ms: Optional[list] = None  # cumulative measured latency per present exit (bench)
    delta: float = 0.3
    normalized: bool = True
    min_exit: int = 1
    kind: str = "run"  # "run" | "bundle" | "synthetic"
    source: str = ""
    split: str = "testing"
    single_exit: Optional[int] = None
    arch: str = ""
    width: float = 0.0
    binary: bool = True
    notes: list = field(default_factory=list)

    def __post_init__(self):
        self.logits = np.asarray(self.logits, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.logits.ndim != 3:
            raise EvalError(f"{self.name}: logits must be (clips, exits, classes), "
                            f"got {self.logits.shape}")
        n, e, c = self.logits.shape
        if self.labels.shape != (n,):
            raise EvalError(f"{self.name}: {self.labels.shape} labels for {n} clips")
        if len(self.exit_numbers) != e:
            raise EvalError(f"{self.name}: exit numbers {self.exit_numbers} for {e} exits")
        if len(self.model_labels) != c:
            raise EvalError(f"{self.name}: {len(self.model_labels)} labels for {c} classes")
        if self.temperatures is None:
            self.temperatures = [1.0] * e

    @property
    def exit_names(self) -> list:
        return [f"exit{k}" for k in self.exit_numbers]

    @property
    def is_multi_exit(self) -> bool:
        return len(self.exit_numbers) > 1

    @classmethod
    def from_config(cls, name, cfg, logits, labels, **kw) -> "ModelLogits":
        """Fill the model fields from a ModelConfig (temperatures of the present exits)."""
        exits = cfg.active_exits
        kw.setdefault("temperatures", [cfg.temperatures[k - 1] for k in exits])
        return cls(name=name, logits=logits, labels=labels, model_labels=list(cfg.labels),
                   exit_numbers=list(exits), num_exits=cfg.num_exits, delta=cfg.delta,
                   normalized=cfg.entropy_normalized, min_exit=cfg.min_exit,
                   single_exit=cfg.single_exit, arch=cfg.arch, width=cfg.width,
                   binary=cfg.binary, **kw)


# -- labels -----------------------------------------------------------------------------------
def match_labels(clips: Sequence, model_labels: Sequence[str]):
    """Map each clip's dataset label to the model's label index *by name*.

    Returns ``(index (N,) int64 with -1 where the model lacks the label, unknown counts
    {label: clips}, model labels with no clip)``.
    """
    pos = {lab: i for i, lab in enumerate(model_labels)}
    idx = np.array([pos.get(c.label, -1) for c in clips], dtype=np.int64)
    unknown = collections.Counter(c.label for c in clips if c.label not in pos)
    present = {c.label for c in clips}
    missing = [lab for lab in model_labels if lab not in present]
    return idx, dict(sorted(unknown.items())), missing


def infer_task(model_labels: Sequence[str]):
    """The ``load_dataset`` task that yields a model's labels: "12" for the standard Speech
    Commands set, the word list when the model has ``_unknown_``, else None (all labels)."""
    from bnnkws.kws.data import LABELS12, SILENCE, UNKNOWN

    labs = set(model_labels)
    if labs == set(LABELS12):
        return "12"
    if UNKNOWN in labs:
        return ",".join(lab for lab in model_labels if lab not in (SILENCE, UNKNOWN))
    return None


# -- running a provider -----------------------------------------------------------------------
def collect_logits(clips: Sequence, provider: LogitsProvider, batch_size: int = 64,
                   progress: bool = True, desc: str = "evaluating") -> np.ndarray:
    """Run ``provider`` over ``clips`` in batches (tqdm bar) -> float32 (N, E, C)."""
    from tqdm import tqdm

    out = []
    with tqdm(total=len(clips), desc=desc, unit="clip", disable=not progress,
              leave=False) as bar:
        for i in range(0, len(clips), batch_size):
            batch = list(clips[i:i + batch_size])
            z = np.asarray(provider(batch), dtype=np.float32)
            if z.ndim != 3 or z.shape[0] != len(batch):
                raise EvalError(f"logits provider returned shape {z.shape} for "
                                f"{len(batch)} clips; expected (clips, exits, classes)")
            out.append(z)
            bar.update(len(batch))
    if not out:
        raise EvalError("no clips to evaluate")
    return np.concatenate(out, axis=0)


def evaluate_clips(name: str, cfg, clips: Sequence, provider: LogitsProvider, *,
                   split: str = "testing", kind: str = "run", source: str = "",
                   batch_size: int = 64, progress: bool = True, macs=True,
                   model=None) -> ModelLogits:
    """Match labels, run the provider on the clips the model knows, package the result."""
    idx, unknown, missing = match_labels(clips, cfg.labels)
    keep = [c for c, i in zip(clips, idx) if i >= 0]
    if not keep:
        have = sorted({c.label for c in clips})
        raise EvalError(f"{name}: none of the {len(clips)} clips has a label the model knows "
                        f"(dataset labels {have}, model labels {list(cfg.labels)})")
    logits = collect_logits(keep, provider, batch_size, progress, desc=f"{name} ({split})")
    exits = cfg.active_exits
    if logits.shape[1:] != (len(exits), cfg.num_classes):
        raise EvalError(f"{name}: got logits of shape {logits.shape[1:]} per clip, the config "
                        f"says {len(exits)} exits x {cfg.num_classes} classes")
    m, note = exit_macs(cfg, model) if macs else (None, "MACs not requested")
    return ModelLogits.from_config(name, cfg, logits, idx[idx >= 0], paths=[c.path for c in keep],
                                   unknown=unknown, missing_labels=missing, macs=m,
                                   macs_note=note, kind=kind, source=str(source), split=split)


# -- compute per exit ---------------------------------------------------------------------------
def _pick(row, *names):
    for n in names:
        if isinstance(row, dict) and n in row:
            return row[n]
        if hasattr(row, n):
            return getattr(row, n)
    return None


def exit_macs(cfg, model=None):
    """Cumulative MACs to reach each *present* exit from ``bnnkws.kws.models.describe``:
    ``({"binary": [...], "real": [...], "total": [...]}, note)``, or ``(None, why)`` when the
    description is unavailable (the report then plots against the exit index and says so).
    ``model``: the built Keras model, to profile it instead of building the stages again."""
    try:
        # The submodule's function, not the package attribute: importing the submodule
        # `bnnkws.kws.models.describe` rebinds that attribute to the module itself.
        from bnnkws.kws.models.describe import describe

        desc = describe(model if model is not None else cfg)
    except Exception as exc:  # missing module or a model it cannot describe: say so, go on
        return None, f"MACs unavailable ({type(exc).__name__}: {exc}); compute axis is the exit"
    rows = _pick(desc, "exits", "per_exit")
    if rows is None:
        rows = desc
    if isinstance(rows, dict):  # {"exit1": {...}, ...}
        rows = [rows.get(f"exit{k}") for k in range(1, cfg.num_exits + 1)]
    binary, real = [], []
    try:
        by_exit = {}
        for i, r in enumerate(rows):
            k = _pick(r, "exit")
            k = int(str(k).replace("exit", "")) if k is not None else i + 1
            by_exit[k] = r
        for k in cfg.active_exits:
            r = by_exit[k]
            b = _pick(r, "binary_macs", "cum_binary_macs", "bmacs")
            f = _pick(r, "real_macs", "cum_real_macs", "float_macs", "fmacs")
            binary.append(float(b or 0.0))
            real.append(float(f or 0.0))
    except Exception as exc:
        return None, f"MACs unavailable (describe() output not understood: {exc})"
    total = [b + f for b, f in zip(binary, real)]
    return ({"binary": binary, "real": real, "total": total},
            "MACs: cumulative binary + real multiply-accumulates from models.describe")


# -- a training run ---------------------------------------------------------------------------
def keras_provider(model, cfg, features_by_clip: dict, batch_size: int = 64) -> LogitsProvider:
    """Provider running a Keras early-exit model on precomputed log-mel rows of each clip."""
    names = cfg.exit_names

    def provide(clips):
        x = np.stack([features_by_clip[c] for c in clips]).astype(np.float32)
        out = model(x, training=False)
        return np.stack([np.asarray(out[n]) for n in names], axis=1)

    return provide


def _load_run(run_dir):
    try:
        from bnnkws.kws.training.train import load_run
    except ImportError:  # the run helpers live in kws.run; kws.train re-exports them
        from bnnkws.kws.training.run import load_run
    return load_run(run_dir)


def evaluate_run(run_dir, clips: Sequence, *, name: Optional[str] = None, split: str = "testing",
                 batch_size: int = 64, cache_dir=None, progress: bool = True,
                 model=None, cfg=None) -> ModelLogits:
    """Collect every exit's logits of a training run (``load_run``) on ``clips``.

    Log-mel features come from :func:`bnnkws.kws.features.cache.extract` with the run's frontend
    (one cached entry for the whole list); unreadable files are dropped and listed in the
    notes. ``model``/``cfg`` skip loading (e.g. a model already in memory).
    """
    from bnnkws.kws.features import cache as features

    run_dir = Path(run_dir)
    if model is None or cfg is None:
        cfg, model = _load_run(run_dir)
    idx, _, _ = match_labels(clips, cfg.labels)
    known = [c for c, i in zip(clips, idx) if i >= 0]
    notes = []
    by_clip = {}
    if known:
        X, ok, problems = features.extract(known, cfg.frontend, cache_dir=cache_dir,
                                           progress=progress, return_ok=True)
        ok = np.asarray(ok, dtype=bool)
        by_clip = {c: X[i] for i, c in enumerate(known) if ok[i]}
        if not ok.all():
            notes.append(f"{int((~ok).sum())} unreadable clips skipped, e.g. "
                         + "; ".join(f"{p}: {w}" for p, w in list(problems)[:3]))
            bad = {c for i, c in enumerate(known) if not ok[i]}
            clips = [c for c in clips if c not in bad]
    provider = keras_provider(model, cfg, by_clip, batch_size)
    res = evaluate_clips(name or run_dir.name, cfg, clips, provider, split=split, kind="run",
                         source=run_dir, batch_size=batch_size, progress=progress, model=model)
    res.notes.extend(notes)
    leak = training_overlap(run_dir, [c.path for c in clips])
    if leak:
        res.notes.append(f"WARNING: {leak} evaluated clips were in this run's training split "
                         f"(split.json); accuracy is optimistic")
    return res


def training_overlap(run_dir, paths: Sequence[str]) -> int:
    """How many of ``paths`` the run trained on (from its split.json; 0 when absent)."""
    import json

    f = Path(run_dir) / "split.json"
    if not f.is_file():
        return 0
    try:
        split = json.loads(f.read_text())
    except ValueError:
        return 0
    train = split.get("train") if isinstance(split, dict) else None
    if not isinstance(train, list):
        return 0
    names = {str(Path(p).resolve()) if not isinstance(p, dict) else str(p.get("path"))
             for p in train}
    return sum(str(Path(p).resolve()) in names for p in paths)
