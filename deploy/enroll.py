"""Enrolment: add, update or forget words in a deployed bundle with CWR* (numpy + interpreter).

The bundle's TFLite stages stay untouched: only ``heads.npz`` (one linear head per exit) and the
manifest's ``labels`` / ``enrolment`` history / CWR* past counts change. Every change is made
on a copy and swapped in atomically (:mod:`bnnkws.deploy.swap`), so an enrolment interrupted at
any point leaves the old bundle loadable and verified. CWR* learns the real linear form of each
exit head (:mod:`bnnkws.deploy.heads`); enrolled and exported words run through the same
runtime code path.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from bnnkws.frontend.audio import loudest_window  # noqa: F401  (re-exported)

from .bundle import HEADS, Bundle, normalize_head
from .heads import Embedder, cwr_head, head_input, linear_head
from .swap import commit, recover

MIN_EXAMPLES = 3  # per word: CWR* on fewer clips learns the speaker, not the word
SILENCE_DBFS = -50.0  # loudest 50 ms of a usable recording is above this
DEFAULT_PAST = 100  # CWR* past count assumed for exported classes without a recorded count
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aif", ".aiff")


class EnrolmentError(ValueError):
    """A user error in enrolment; the message names the file, word or value at fault."""


# ---------------------------------------------------------------------------------------------
# audio checks
# ---------------------------------------------------------------------------------------------
def peak_dbfs(y: np.ndarray, sr: int = 16000, win_s: float = 0.05) -> float:
    """Level (dBFS) of the loudest ``win_s`` window: what tells speech from a silent take."""
    y = np.asarray(y, np.float64)
    n = max(1, int(win_s * sr))
    if len(y) < n:
        y = np.pad(y, (0, n - len(y)))
    k = len(y) // n
    rms = np.sqrt(np.mean(y[:k * n].reshape(k, n) ** 2, axis=1))
    return float(20 * np.log10(max(rms.max(), 1e-10)))


def list_clips(folder) -> list:
    folder = Path(folder)
    if not folder.is_dir():
        raise EnrolmentError(f"{folder}: not a directory of recordings")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.name.lower().endswith(AUDIO_EXTENSIONS)
                   and not p.name.startswith("."))
    return files


def load_clips(paths: Sequence, sr: int = 16000, length: int = 16000,
               min_examples: int = MIN_EXAMPLES, floor_dbfs: float = SILENCE_DBFS):
    """Read recordings for enrolment: ``(n, length)`` float32, loudest second of each file.

    Raises :class:`EnrolmentError` for too few files or silent recordings (naming them).
    """
    from bnnkws.frontend.audio import load_audio

    paths = [Path(p) for p in paths]
    if len(paths) < min_examples:
        raise EnrolmentError(f"{len(paths)} recording(s) given; enrolment needs at least "
                             f"{min_examples} examples of the word")
    clips, silent = [], []
    for p in paths:
        y = load_audio(p, sr=sr)
        level = peak_dbfs(y, sr)
        if level < floor_dbfs:
            silent.append(f"{p} ({level:.0f} dBFS)")
        clips.append(loudest_window(y, length))
    if silent:
        raise EnrolmentError(f"silent recording(s), loudest 50 ms below {floor_dbfs:.0f} dBFS: "
                             + ", ".join(silent) + "; record again closer to the microphone")
    return np.stack(clips)


def check_audio(clips: np.ndarray, names: Sequence[str], sr: int = 16000,
                min_examples: int = MIN_EXAMPLES, floor_dbfs: float = SILENCE_DBFS) -> None:
    """The same checks for recordings already in memory (microphone takes)."""
    if len(clips) < min_examples:
        raise EnrolmentError(f"{len(clips)} recording(s); enrolment needs at least "
                             f"{min_examples} examples of the word")
    silent = [f"{n} ({peak_dbfs(c, sr):.0f} dBFS)" for c, n in zip(clips, names)
              if peak_dbfs(c, sr) < floor_dbfs]
    if silent:
        raise EnrolmentError(f"silent recording(s), loudest 50 ms below {floor_dbfs:.0f} dBFS: "
                             + ", ".join(silent))


# ---------------------------------------------------------------------------------------------
# bundle support
# ---------------------------------------------------------------------------------------------
def check_enrolment_support(bundle_path) -> Bundle:
    """Load and verify a bundle, refusing one exported without enrolment support."""
    path = Path(bundle_path)
    recover(path)
    bundle = Bundle.load(path)
    hname = bundle.manifest.get("heads_file", HEADS)
    if hname not in bundle.manifest["files"] or not (path / hname).is_file():
        raise EnrolmentError(f"{path}: bundle has no {hname}; it was exported without "
                             f"enrolment support - re-export it with `kws export`")
    for st in bundle.stages:
        if st.exit is None:
            continue
        _, outs = bundle.io(st.file)
        if "embedding" not in {o.name for o in outs}:
            raise EnrolmentError(f"{path / st.file}: stage {st.index} has no 'embedding' output; "
                                 f"the bundle was exported without enrolment support - "
                                 f"re-export it with `kws export`")
    return bundle


def past_counts(bundle: Bundle) -> np.ndarray:
    """CWR* past sample counts per label, from the manifest (exported classes: DEFAULT_PAST)."""
    rec = bundle.manifest.get("cwr_past", {})
    return np.array([int(rec.get(lab, DEFAULT_PAST)) for lab in bundle.labels], np.int64)


# ---------------------------------------------------------------------------------------------
# embeddings through the deployed stages
# ---------------------------------------------------------------------------------------------
class BundleBackbone:
    """A bundle as the frozen backbone of :mod:`bnnkws.kws.evaluation.cl_eval` (interpreter only).

    ``heads`` are the linear forms ``{exit: (W, b)}`` and every feature it returns is the
    matching head input (the signed embedding for binary heads).

    ``forward(audio)`` runs every stage once and returns the per-exit head inputs plus the
    latent at the replay boundary: the ``fmap`` entering the last stage (``None`` for a
    one-stage bundle). ``from_latent`` runs the frozen last stage on stored latents.
    """

    def __init__(self, bundle, backend: str = "auto", detector=None):
        from .runtime import Detector

        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.detector = detector or Detector(self.bundle, backend=backend)
        self.labels = self.bundle.labels
        self.exits = self.bundle.exits
        lin = {k: linear_head(h) for k, h in self.bundle.heads.items()}
        self.heads = {k: (w, b) for k, (w, b, _) in lin.items()}
        self.sign_inputs = [lin[k][2] for k in self.exits]
        self._inputs = [head_input(s) for s in self.sign_inputs]
        d = self.detector
        self._runners = [None] + list(d._rest)  # stage 1's runner depends on the input kind
        self._stages = d.stages

    def policy(self, delta=None):
        return self.detector.make_policy(self.detector.delta if delta is None else delta)

    def forward(self, audio):
        runner, x = self.detector._first(np.asarray(audio, np.float32), None)
        runners = [runner] + self._runners[1:]
        embs, latent = [], None
        for i, (r, spec) in enumerate(zip(runners, self._stages)):
            if i == len(runners) - 1 and i > 0:
                latent = np.asarray(x, np.float32)[0]
            out = r.run(x)
            if spec.exit is not None:
                embs.append(np.asarray(out["embedding"], np.float32).reshape(-1))
            if "fmap" in out:
                x = out["fmap"]
        return [f(e) for f, e in zip(self._inputs, embs)], latent

    def from_latent(self, latents):
        last = self._runners[-1]
        if last is None:
            raise EnrolmentError(f"{self.bundle.path}: one stage only, no replay boundary")
        emb = np.stack([np.asarray(last.run(np.asarray(z, np.float32)[None])["embedding"],
                                   np.float32).reshape(-1) for z in latents])
        return self._inputs[-1](emb)


# ---------------------------------------------------------------------------------------------
# the operations
# ---------------------------------------------------------------------------------------------
DEFAULT_RATIO = 4.0  # replayed samples per new one in each minibatch (thesis 1:4)
DEFAULT_AUGMENT = 8  # augmented copies of each take trained on beside the take itself
DEFAULT_BATCH_NEW = 8  # new samples per mixed minibatch (plus ratio x as many replayed)
CALIBRATION_TAKES = 4  # fresh augmented copies per take, used only to calibrate the threshold
CALIBRATION_SHARE = 4  # every 4th memory sample is held out of replay to calibrate on
UNKNOWN = "_unknown_"
SILENCE = "_silence_"


@dataclass
class EnrolResult:
    word: str
    labels: list
    examples: int
    updated: bool
    seconds_embed: float
    seconds_update: float
    train_accuracy: float
    history: list = field(default_factory=list)
    operating_point: dict = field(default_factory=dict)
    replayed: int = 0  # memory samples the heads rehearsed
    moved: int = 0  # memory samples of `_unknown_` that were this word and moved to it
    negatives: int = 0
    seconds_total: float = 0.0
    memory_bytes: int = 0


# ---------------------------------------------------------------------------------------------
# augmentation (numpy only: it runs on the device)
# ---------------------------------------------------------------------------------------------
def vtlp(y: np.ndarray, alpha: float, sr: int = 16000, n_fft: int = 512, hop: int = 128,
         f_hi: float = 4800.0) -> np.ndarray:
    """Vocal-tract-length perturbation of a waveform: its spectrum warped by ``alpha`` (Jaitly &
    Hinton 2013's piecewise-linear warp: ``f -> alpha f`` up to ``f_hi min(alpha, 1) / alpha``,
    then linear to Nyquist), duration unchanged. ``alpha > 1`` moves formants up (a shorter
    vocal tract), ``< 1`` down. STFT magnitude warped, phase kept, overlap-add (numpy only)."""
    y = np.asarray(y, np.float64)
    n = len(y)
    win = np.hanning(n_fft + 1)[:-1]
    pad = np.pad(y, (n_fft // 2, n_fft // 2 + hop))
    frames = np.lib.stride_tricks.sliding_window_view(pad, n_fft)[::hop] * win
    spec = np.fft.rfft(frames, axis=1)
    nyq = sr / 2.0
    f = np.linspace(0.0, nyq, spec.shape[1])
    knee = f_hi * min(alpha, 1.0) / alpha
    warped = np.where(f <= knee, alpha * f,
                      nyq - (nyq - alpha * knee) / (nyq - knee) * (nyq - f))
    src = np.interp(f, warped, f)  # the source frequency each output bin takes its level from
    mag = np.abs(spec)
    pos = src / nyq * (spec.shape[1] - 1)
    lo = np.floor(pos).astype(int).clip(0, spec.shape[1] - 1)
    hi = (lo + 1).clip(0, spec.shape[1] - 1)
    frac = pos - lo
    new = (mag[:, lo] * (1 - frac) + mag[:, hi] * frac) * np.exp(1j * np.angle(spec))
    out_frames = np.fft.irfft(new, n=n_fft, axis=1) * win
    k = n_fft // hop  # overlap-add: hop divides n_fft, so k shifted copies cover every frame
    m = len(out_frames)
    blocks = out_frames.reshape(m, k, hop)
    out = np.zeros((m + k - 1, hop))
    wsq = np.zeros((m + k - 1, hop))
    for j in range(k):
        out[j:j + m] += blocks[:, j]
        wsq[j:j + m] += (win ** 2).reshape(k, hop)[j]
    out = (out / np.maximum(wsq, 1e-8)).reshape(-1)
    return out[n_fft // 2:n_fft // 2 + n].astype(np.float32)


def augment_takes(clips: np.ndarray, copies: int, noise: np.ndarray, rng,
                  sr: int = 16000, snr_db: tuple = (5.0, 20.0),
                  noise_p: float = 0.8, warp: Optional[tuple] = None) -> np.ndarray:
    """``copies`` variants of each take: speed/pitch, time shift, gain and background noise.

    Per copy: resampled by a factor in [0.92, 1.08] (linear interpolation: speed and pitch move
    together by up to 8 %), shifted by up to 100 ms (zero fill), gain within +-6 dB, and with
    probability ``noise_p`` a random noise window (``noise (m, samples)``) mixed at ``snr_db``
    (default 5-20 dB) SNR. With ``warp (lo, hi)`` each copy's spectrum is first warped by a
    factor drawn log-uniformly in it (:func:`vtlp`: formants of a shorter or longer vocal tract,
    duration unchanged). Returns
    ``(len(clips) * copies, samples)`` float32 in [-1, 1].
    """
    clips = np.asarray(clips, np.float32)
    n = clips.shape[1]
    out = np.zeros((len(clips) * copies, n), np.float32)
    t = np.arange(n, dtype=np.float64)
    for i, y in enumerate(np.repeat(clips, copies, axis=0)):
        if warp:
            y = vtlp(y, float(np.exp(rng.uniform(np.log(warp[0]), np.log(warp[1])))), sr)
        f = rng.uniform(0.92, 1.08)
        z = np.interp(np.arange(0, n, f), t, y)  # new length n / f
        if len(z) >= n:
            s = (len(z) - n) // 2
            z = z[s:s + n]
        else:
            p = n - len(z)
            z = np.pad(z, (p // 2, p - p // 2))
        shift = int(rng.integers(-sr // 10, sr // 10 + 1))
        z = np.roll(z, shift)
        if shift > 0:
            z[:shift] = 0
        elif shift < 0:
            z[shift:] = 0
        z = z * 10 ** (rng.uniform(-6, 6) / 20)
        if len(noise) and rng.random() < noise_p:
            w = np.roll(noise[rng.integers(len(noise))], int(rng.integers(n))).astype(np.float64)
            ps, pn = np.mean(z ** 2), np.mean(w ** 2)
            if ps > 0 and pn > 0:
                z = z + w * np.sqrt(ps / (pn * 10 ** (rng.uniform(*snr_db) / 10)))
        out[i] = np.clip(z, -1.0, 1.0)
    return out


# ---------------------------------------------------------------------------------------------
# per-word operating points
# ---------------------------------------------------------------------------------------------
def word_settings(bundle: Bundle) -> dict:
    """``{word: {threshold, min_exit, ...}}`` from the manifest (enrolled words only)."""
    return {str(k): dict(v) for k, v in (bundle.manifest.get("words") or {}).items()
            if k in bundle.labels}


def label_min_exits(bundle: Bundle, labels: Optional[list] = None) -> np.ndarray:
    """Minimum exit per label (1 for words without a setting)."""
    ws = word_settings(bundle)
    return np.array([int(ws.get(lab, {}).get("min_exit", 1))
                     for lab in (labels or bundle.labels)], np.int64)


def _policy(bundle: Bundle, delta=None):
    from bnnkws.kws.policy import ExitPolicy, delta_value

    pol = bundle.policy_settings
    return ExitPolicy(delta_value(bundle.delta if delta is None else delta),
                      criterion=pol.get("criterion", "entropy"),
                      normalized=pol.get("normalized", True), min_exit=pol.get("min_exit", 1),
                      temperatures=bundle.temperatures)


def _stack_logits(heads: dict, exits, feats) -> np.ndarray:
    """``(n, E, C)`` logits of per-exit head inputs through linear heads."""
    from .bundle import head_logits

    return np.stack([head_logits(normalize_head(heads[k]), x) for k, x in zip(exits, feats)],
                    axis=1)


def _hearing(bundle: Bundle, logits: np.ndarray) -> dict:
    """The exit rule (with the bundle's per-word minimum exits) on takes' logits ``(n, E, C)``
    before a word is learned: ``{"exits", "probs"}`` per take and ``"heard_as"``, the label
    counts :func:`enroll` records as ``takes_heard_as`` and `kws enroll` prints."""
    from bnnkws.kws.continual.operating_point import decide, heard_as

    policy, min_exits = _policy(bundle), label_min_exits(bundle)
    exits, probs = decide(logits, policy, min_exits)
    return {"exits": exits, "probs": probs,
            "heard_as": heard_as(logits, policy, bundle.labels, min_exits)}


def hear_takes(bundle, clips: np.ndarray, word: Optional[str] = None, detector=None) -> dict:
    """What the model hears in a word's takes before it is enrolled, as :func:`enroll` reports
    it, without changing anything: ``{"takes": [{"label", "probability", "exit"}] per take,
    "heard_as": {label: count}, "confusable_with": [labels]}`` (the words ``word`` is likely
    to be mistaken for). ``clips (n, samples)``: one second of each take, as :func:`load_clips`
    cuts them; ``bundle``: a :class:`Bundle` or its folder."""
    from bnnkws.kws.continual.operating_point import confusable

    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    exits = bundle.exits
    feats = Embedder(bundle, detector)(np.asarray(clips, np.float32))
    x = [head_input(linear_head(bundle.heads[k])[2])(f) for k, f in zip(exits, feats)]
    h = _hearing(bundle, _stack_logits(bundle.heads, exits, x))
    takes = [{"label": bundle.labels[int(np.argmax(p))], "probability": round(float(p.max()), 4),
              "exit": int(e)} for e, p in zip(h["exits"], h["probs"])]
    return {"takes": takes, "heard_as": h["heard_as"],
            "confusable_with": confusable(h["heard_as"], word) if word else []}


def set_operating_point(bundle_path, word: str, threshold: Optional[float] = None,
                        min_exit: Optional[int] = None) -> Bundle:
    """Override an enrolled word's detection threshold and/or minimum exit (atomic)."""
    bundle = check_enrolment_support(bundle_path)
    if word not in bundle.labels:
        raise EnrolmentError(f"{bundle.path}: no word {word!r}; known words: "
                             f"{', '.join(bundle.labels)}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise EnrolmentError(f"threshold must be in [0, 1], got {threshold}")
    if min_exit is not None and min_exit not in bundle.exits:
        raise EnrolmentError(f"min exit must be one of the bundle's exits {bundle.exits}, "
                             f"got {min_exit}")
    ws = dict(bundle.manifest.get("words") or {})
    entry = dict(ws.get(word, {}))
    if threshold is not None:
        entry["threshold"], entry["threshold_source"] = float(threshold), "user"
    if min_exit is not None:
        entry["min_exit"], entry["min_exit_source"] = int(min_exit), "user"
    ws[word] = entry
    return commit(bundle.path, None, bundle.labels, None, None, manifest_updates={"words": ws})


# ---------------------------------------------------------------------------------------------
# the operations
# ---------------------------------------------------------------------------------------------
def _warn_no_memory(bundle: Bundle) -> None:
    import warnings

    warnings.warn(f"{bundle.path}: no replay memory in this bundle, so enrolment cannot protect "
                  f"the old words (expect them to lose accuracy) nor calibrate the word against "
                  f"other speech; add one with `kws memory build {bundle.path} --data DIR`",
                  stacklevel=3)


DEFAULT_SETTINGS = {"rule": "cwr", "warp": None, "weight_decay": 0.0, "margin": 0.0,
                    "margin_against": "all"}
MARGIN_AGAINST = ("all", "unknown")
SETTINGS_KEY = "enrolment_settings"  # optional manifest entry: the bundle's own defaults


def settings(bundle: Bundle, **given) -> dict:
    """Enrolment's learning settings: ``given`` (not None) over the manifest's
    ``enrolment_settings`` over :data:`DEFAULT_SETTINGS`. ``rule``: how the word's column is
    made (:data:`bnnkws.kws.continual.fewshot.RULES`); ``warp``: ``(lo, hi)`` vocal-tract
    warp of the augmented takes (:func:`vtlp`) or None (``(1, 1)`` also means none);
    ``weight_decay``: L2 on the heads' temporary weights during CWR*; ``margin``: logits the
    word must win its takes by (LDAM), against every label (``margin_against="all"``) or only
    ``_unknown_`` and ``_silence_`` (``"unknown"``). The default is plain CWR* (what the README's
    enrolment figures measure); weight decay 0.01 measured better on false accepts and old
    words with the previous backbone (docs/results.md, section 5, "Other voices"), not beyond
    a run's noise with the multi-corpus one shipped since; the others are there to compare."""
    from bnnkws.kws.continual.fewshot import parse_rule

    man = bundle.manifest.get(SETTINGS_KEY) or {}
    unknown = sorted(set(man) - set(DEFAULT_SETTINGS))
    if unknown:
        raise EnrolmentError(f"{bundle.path}: manifest {SETTINGS_KEY} has unknown keys "
                             f"{unknown}; known: {sorted(DEFAULT_SETTINGS)}")
    out = {**DEFAULT_SETTINGS, **man, **{k: v for k, v in given.items() if v is not None}}
    try:
        out["rule"] = parse_rule(out["rule"])
    except ValueError as e:
        raise EnrolmentError(str(e)) from None
    w = out["warp"]
    if w is not None:
        w = tuple(float(v) for v in (w if not isinstance(w, (int, float)) else (1 / w, w)))
        if len(w) != 2 or not 0.5 <= w[0] <= w[1] <= 2.0:
            raise EnrolmentError(f"warp must be (lo, hi) with 0.5 <= lo <= hi <= 2, got "
                                 f"{out['warp']!r}")
        out["warp"] = None if w == (1.0, 1.0) else w
    out["weight_decay"] = float(out["weight_decay"])
    out["margin"] = float(out["margin"])
    if not out["margin"] >= 0:
        raise EnrolmentError(f"margin must be >= 0, got {out['margin']!r}")
    if out["margin_against"] not in MARGIN_AGAINST:
        raise EnrolmentError(f"margin against must be one of {', '.join(MARGIN_AGAINST)}, got "
                             f"{out['margin_against']!r}")
    if not out["weight_decay"] >= 0:
        raise EnrolmentError(f"weight decay must be >= 0, got {out['weight_decay']!r}")
    return out


def enroll(bundle_path, word: str, clips: np.ndarray, *, update: bool = False,
           names: Optional[Sequence[str]] = None, source: str = "", lr: float = 0.05,
           epochs: int = 30, lp=None, hp=None, detector=None, progress: bool = False,
           seed: int = 0, negatives: Optional[np.ndarray] = None,
           ratio: float = DEFAULT_RATIO, augment: int = DEFAULT_AUGMENT,
           target_fa_per_hour: Optional[float] = None, threshold: Optional[float] = None,
           min_exit: Optional[int] = None, batch_new: int = DEFAULT_BATCH_NEW,
           rule: Optional[str] = None, warp: Optional[tuple] = None,
           weight_decay: Optional[float] = None, margin: Optional[float] = None,
           margin_against: Optional[str] = None) -> EnrolResult:
    """Add (or with ``update=True`` refine) ``word`` from ``clips (n, samples)`` with CWR*.

    With a replay memory in the bundle (:mod:`bnnkws.deploy.memory`): memory samples of
    ``_unknown_`` whose source word is ``word`` move to the new word; every head trains on the
    takes (and ``augment`` augmented copies of each) mixed with class-balanced replayed memory
    samples (``ratio`` per new one, :meth:`CWRStar.fit_mixed`), plus ``negatives`` (recordings
    that must not trigger the word) as ``_unknown_``; the word's threshold and minimum exit are
    calibrated on held-out memory samples, the user's negatives and fresh augmented takes
    (:func:`bnnkws.kws.continual.operating_point.calibrate`; ``threshold``/``min_exit`` override);
    then the takes and negatives enter the memory. Heads, memory and manifest are swapped in at
    once. ``rule``, ``warp``, ``weight_decay``, ``margin``, ``margin_against``: how the word's
    column is learnt (:func:`settings`; None: the bundle's ``enrolment_settings``, else
    :data:`DEFAULT_SETTINGS`); whatever they are, the result is a linear head the runtime runs
    as any other, and the history records them.
    """
    from bnnkws.kws.continual import fewshot as FS
    from bnnkws.kws.continual.cwr import CWRStar, Precision
    from bnnkws.kws.continual.operating_point import (DEFAULT_TARGET_FA_PER_HOUR, calibrate,
                                                      confusable)

    from .memory import MEMORY, memory_info, read_memory

    t_start = time.perf_counter()
    word = str(word).strip()
    if not word:
        raise EnrolmentError("the word to enrol is empty")
    if word.startswith("_"):
        raise EnrolmentError(f"{word!r}: names starting with '_' are reserved for "
                             f"_silence_/_unknown_")
    bundle = check_enrolment_support(bundle_path)
    labels = bundle.labels
    if word in labels and not update:
        raise EnrolmentError(f"{bundle.path}: the word {word!r} already exists; use --update to "
                             f"add these examples to it, or `kws forget` it first")
    if word not in labels and update:
        raise EnrolmentError(f"{bundle.path}: the word {word!r} is not known, nothing to "
                             f"--update; known words: {', '.join(labels)}")
    if min_exit is not None and min_exit not in bundle.exits:
        raise EnrolmentError(f"min exit must be one of the bundle's exits {bundle.exits}, "
                             f"got {min_exit}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise EnrolmentError(f"threshold must be in [0, 1], got {threshold}")
    fa_h = DEFAULT_TARGET_FA_PER_HOUR if target_fa_per_hour is None else float(target_fa_per_hour)
    fe = bundle.frontend
    clips = np.asarray(clips, np.float32)
    check_audio(clips, names or [f"take {i + 1}" for i in range(len(clips))], fe.sample_rate)
    negs = np.zeros((0, clips.shape[1]), np.float32) if negatives is None else \
        np.asarray(negatives, np.float32).reshape(-1, clips.shape[1])
    memory = read_memory(bundle)
    if memory is None:
        _warn_no_memory(bundle)
    rng = np.random.default_rng(seed)
    noise = memory.noise_float() if memory is not None else np.zeros((0, clips.shape[1]))

    t0 = time.perf_counter()
    cfg = settings(bundle, rule=rule, warp=warp, weight_decay=weight_decay, margin=margin,
                   margin_against=margin_against)
    rule, warp, wd, margin = cfg["rule"], cfg["warp"], cfg["weight_decay"], cfg["margin"]
    aug = augment_takes(clips, augment, noise, rng, fe.sample_rate, warp=warp) if augment \
        else clips[:0]
    cal = augment_takes(clips, CALIBRATION_TAKES, noise, rng, fe.sample_rate, warp=warp)
    parts = [clips, aug, cal, negs]
    allf = Embedder(bundle, detector)(np.concatenate(parts), progress=progress)
    cuts = np.cumsum([len(p) for p in parts])[:-1]
    exits = bundle.exits
    signs = [linear_head(bundle.heads[k])[2] for k in exits]
    allx = [head_input(sg)(f) for sg, f in zip(signs, allf)]
    takes_x, aug_x, cal_x, neg_x = zip(*[np.split(x, cuts) for x in allx])
    # what the model made of the takes before learning the word: a word it already hears in
    # them is one the new word will be mistaken for (and fire on)
    policy = _policy(bundle)
    heard = _hearing(bundle, _stack_logits(bundle.heads, exits, takes_x))["heard_as"]
    t1 = time.perf_counter()

    new_labels = list(labels) if word in labels else list(labels) + [word]
    target = new_labels.index(word)
    unk = new_labels.index(UNKNOWN) if UNKNOWN in new_labels else None
    moved = 0
    mem_x, mem_y, is_cal = None, None, None
    if memory is not None:
        srcs = np.char.lower(memory.source_words)
        moved = memory.relabel((memory.labels == UNKNOWN) & (srcs == word.lower())
                               & (memory.kinds == "train"), word)
        lab = memory.labels
        known = np.isin(lab, new_labels)
        mem_idx = np.flatnonzero(known)
        mem_y = np.array([new_labels.index(v) for v in lab[mem_idx]], np.int64)
        mem_x = memory.head_inputs(mem_idx)
        is_cal = (np.arange(len(mem_idx)) % CALIBRATION_SHARE) == 0

    past = past_counts(bundle)
    heads, accs = {}, []
    y_take = np.full(len(takes_x[0]) + len(aug_x[0]), target)
    y_neg = np.full(len(neg_x[0]), unk if unk is not None else -1)
    use_neg = unk is not None and len(y_neg) > 0
    evidence = {target: len(clips), **({unk: len(negs)} if use_neg else {})}
    rivals = None  # a margin taken against _unknown_ and _silence_ only
    if cfg["margin_against"] == "unknown":
        rivals = [new_labels.index(c) for c in (UNKNOWN, SILENCE) if c in new_labels]
    for j, k in enumerate(exits):
        w, b, sign_in = linear_head(bundle.heads[k])
        h = CWRStar(w, b, past=past.copy(), lr=lr, epochs=epochs, weight_decay=wd,
                    precision=Precision(lp, hp), seed=seed + j)
        if target == h.num_classes:
            h.add_class()
        x_new = np.concatenate([takes_x[j], aug_x[j]] + ([neg_x[j]] if use_neg else []))
        y_new = np.concatenate([y_take] + ([y_neg] if use_neg else []))
        x_pos, held = [takes_x[j], aug_x[j]], None
        if memory is not None:
            replay = (mem_x[j][~is_cal], mem_y[~is_cal])
            # earlier takes (an --update) and memory samples moved to the word are its own
            x_pos.append(mem_x[j][~is_cal & (mem_y == target)])
            held = (np.concatenate([cal_x[j], mem_x[j][is_cal]]),
                    np.concatenate([np.full(len(cal_x[j]), target), mem_y[is_cal]]))
        else:
            replay = (x_new[:0], y_new[:0])
        FS.learn_column(h, rule, target, x_new, y_new, replay, np.concatenate(x_pos), held,
                        takes=len(clips), ratio=ratio if memory is not None else 0,
                        batch_new=batch_new, evidence=evidence, margin=margin,
                        margin_against=rivals)
        accs.append(float(np.mean(h.predict(takes_x[j]) == target)))
        heads[k] = cwr_head(h.cw, h.cb, sign_in)
        new_past = h.past

    # operating point: fresh augmented takes (+ held-out moved samples) against held-out
    # memory samples of every other class and the user's negatives
    pos = [c for c in cal_x]
    neg = [n for n in neg_x]
    if memory is not None:
        mpos = is_cal & (mem_y == target)
        mneg = is_cal & (mem_y != target)
        pos = [np.concatenate([p, m[mpos]]) for p, m in zip(pos, mem_x)]
        neg = [np.concatenate([n, m[mneg]]) for n, m in zip(neg, mem_x)]
    old_ws = dict(bundle.manifest.get("words") or {})
    me = np.array([int(old_ws.get(lab, {}).get("min_exit", 1)) for lab in new_labels])
    point = calibrate(_stack_logits(heads, exits, pos), _stack_logits(heads, exits, neg),
                      policy, target, me, target_fa_per_hour=fa_h)
    entry = {"threshold": point["threshold"], "min_exit": int(point["min_exit"]),
             "threshold_source": "calibrated", "min_exit_source": "calibrated",
             "calibration": {k: v for k, v in point.items() if k not in ("threshold", "min_exit")},
             "takes_heard_as": heard, "confusable_with": confusable(heard, word)}
    prev = old_ws.get(word, {}) if update else {}
    for key in ("threshold", "min_exit"):  # a user's override survives an --update
        if prev.get(f"{key}_source") == "user":
            entry[key], entry[f"{key}_source"] = prev[key], "user"
    if threshold is not None:
        entry["threshold"], entry["threshold_source"] = float(threshold), "user"
    if min_exit is not None:
        entry["min_exit"], entry["min_exit_source"] = int(min_exit), "user"
    ws = {**old_ws, word: entry}

    files, updates, mem_bytes = {}, {"words": ws}, 0
    if memory is not None:
        memory.add(list(takes_x), [word] * len(clips), [word] * len(clips), kind="enrolled")
        if len(negs):
            memory.add(list(neg_x), [UNKNOWN if unk is not None else "_negative_"] * len(negs),
                       [f"negative:{word}"] * len(negs), kind="negative")
        data = memory.to_bytes()
        mem_bytes = len(data)
        files[MEMORY] = (data, "memory")
        updates["memory"] = memory_info(memory, len(data),
                                        previous=bundle.manifest.get("memory"))
    t2 = time.perf_counter()
    event = {"action": "update" if update else "enroll", "word": word,
             "examples": int(len(clips)), "source": str(source), "method": "cwr*",
             "lr": lr, "epochs": epochs, "replay": memory is not None,
             "replay_ratio": ratio if memory is not None else 0, "augment": int(augment),
             "negatives": int(len(negs)), "moved_from_unknown": int(moved),
             "rule": rule, "warp": list(warp) if warp else None, "weight_decay": wd,
             "margin": margin, "margin_against": cfg["margin_against"]}
    committed = commit(bundle.path, heads, new_labels,
                       dict(zip(new_labels, new_past.tolist())), event, files=files,
                       manifest_updates=updates)
    return EnrolResult(word, committed.labels, len(clips), update, t1 - t0, t2 - t1,
                       float(np.mean(accs)), committed.manifest.get("enrolment", []),
                       operating_point=entry,
                       replayed=int((~is_cal).sum()) if is_cal is not None else 0,
                       moved=int(moved), negatives=int(len(negs)),
                       seconds_total=time.perf_counter() - t_start, memory_bytes=mem_bytes)


def forget(bundle_path, word: str) -> Bundle:
    """Remove ``word``'s unit from every head (atomic, recorded in the history).

    In the memory, the word's enrolled takes and negatives go; training-split samples that were
    moved to it from ``_unknown_`` go back there, and those its samples displaced come back.
    """
    from .memory import MEMORY, memory_info, read_memory

    bundle = check_enrolment_support(bundle_path)
    labels = bundle.labels
    if word not in labels:
        raise EnrolmentError(f"{bundle.path}: no word {word!r}; known words: {', '.join(labels)}")
    if len(labels) <= 2:
        raise EnrolmentError(f"{bundle.path}: cannot forget {word!r}, a detector needs at "
                             f"least 2 labels")
    i = labels.index(word)
    keep = [j for j in range(len(labels)) if j != i]
    heads = {}
    for k, head in bundle.heads.items():
        h = dict(normalize_head(head))
        h["kernel"], h["bias"] = h["kernel"][:, keep], h["bias"][keep]
        heads[k] = h
    new_labels = [labels[j] for j in keep]
    past = past_counts(bundle)
    ws = {k: v for k, v in (bundle.manifest.get("words") or {}).items() if k != word}
    files, updates = {}, {"words": ws}
    memory = read_memory(bundle)
    if memory is not None:
        lab, kinds = memory.labels, memory.kinds
        mine = lab == word
        memory.remove((mine & (kinds != "train"))
                      | (memory.source_words == f"negative:{word}"))
        back = (memory.labels == word)
        if UNKNOWN in new_labels:
            memory.relabel(back, UNKNOWN)
        else:
            memory.remove(back)
        # the training samples its takes and negatives pushed out of the full memory
        memory.restore_parked([word, f"negative:{word}"])
        data = memory.to_bytes()
        files[MEMORY] = (data, "memory")
        updates["memory"] = memory_info(memory, len(data), previous=bundle.manifest.get("memory"))
    return commit(bundle.path, heads, new_labels,
                  {lab: int(past[j]) for lab, j in zip(new_labels, keep)},
                  {"action": "forget", "word": word}, files=files, manifest_updates=updates)


def words(bundle_path) -> dict:
    """``{"labels", "enrolled": {word: last event}, "history", "operating_points": {word:
    {threshold, min_exit, ...}}, "memory": manifest memory entry or None}`` of a bundle."""
    path = Path(bundle_path)
    recover(path)
    bundle = Bundle.load(path)
    hist = bundle.manifest.get("enrolment", [])
    enrolled = {}
    for e in hist:
        if e.get("action") in ("enroll", "update"):
            enrolled[e.get("word")] = e
        elif e.get("action") == "forget":
            enrolled.pop(e.get("word"), None)
    return {"labels": bundle.labels, "enrolled": enrolled, "history": hist,
            "operating_points": word_settings(bundle),
            "memory": bundle.manifest.get("memory")}


__all__ = ["EnrolmentError", "MIN_EXAMPLES", "SILENCE_DBFS", "enroll", "forget", "words",
           "augment_takes", "set_operating_point", "word_settings", "label_min_exits",
           "load_clips", "list_clips", "check_audio", "check_enrolment_support", "peak_dbfs",
           "loudest_window", "hear_takes"]
