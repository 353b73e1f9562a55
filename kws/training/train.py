"""Training of early-exit BNNs: Bop (+Adam), Adam on latent weights, or the two-stage recipe.

``run_training(TrainConfig) -> run_dir``. The loss is the weighted sum of every exit's
cross-entropy on its logits (no early exiting in training). Each epoch logs loss and accuracy
per exit on train and validation, the binary kernels' flip ratio and the learning rate / Bop
gamma in effect, to the progress bar, ``history.csv`` and TensorBoard, then checkpoints model +
optimizer + epoch so ``resume=True`` continues the same trajectory.

Determinism: each epoch's shuffle is a stateless function of ``(seed, epoch)``, so a resumed
run sees the same batches as an uninterrupted one (exactly so without augmentation; augmented
epochs are seeded the same way where the pipeline allows it).
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import io
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import bnnkws.frontend  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf

from bnnkws.kws.training import callbacks as cbs
from bnnkws.kws.training import optim
from bnnkws.kws.training import run as rundir
from bnnkws.kws.config import ModelConfig
from bnnkws.kws.fileio import atomic_write_text

from bnnkws.kws.training.config import (# noqa: E402, F401  (re-exported for callers)
    SHARDS_LACK, TRAIN_CONFIG_VERSION, TrainConfig, TrainError, memory_only)


AUX_VOCAB = "aux_vocab.json"  # the auxiliary heads' words, counts and holdout (issue 18)

# Options that define the trajectory: a resume must not change them.
_FIXED_ON_RESUME = ("data", "arch", "task", "width", "batch_size", "optimizer", "bop_threshold",
                    "bop_gamma", "bop_gamma_decay", "bop_gamma_final", "lr", "lr_schedule",
                    "lr_final", "stage1_epochs", "exit_weights", "head_channels", "stage_filters",
                    "binary_bn_epsilon", "single_exit", "pa_bases",
                    "real_valued", "label_smoothing", "seed", "split_seed", "max_train_clips",
                    "augment", "time_shift", "noise", "gain", "spec_augment", "noise_prob",
                    "snr_db",
                    "init_from", "noise_dirs", "offset_prob", "partial_prob",
                    "generated_noise_prob", "aux_vocab", "aux_data", "aux_synth", "aux_holdout",
                    "aux_min_clips", "aux_weight", "aux_margin", "aux_scale", "distill",
                    "distill_weight",
                    "band_limit_prob", "band_limit_hz", "speed_prob", "speed_range", "pipeline",
                    "shuffle_buffer", "class_balance", "aux_only_per_epoch", "data_repeat")


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainData:
    """What training needs from the data layer, as arrays plus an optional augmented stream.

    ``train_x`` are raw (unnormalised) log-mel features ``(n, frames, mels)``, ``train_y`` int
    label indices. ``augmented(epoch_start, epoch_end)`` may return a ``tf.data.Dataset`` of
    augmented batches covering those epochs; without it the arrays are shuffled per epoch.
    """

    labels: list
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: Optional[np.ndarray] = None
    test_y: Optional[np.ndarray] = None
    split: dict = field(default_factory=dict)  # split -> list of clip paths
    name: str = ""
    augmented: Optional[Callable] = None
    # Auxiliary vocabulary (bnnkws.kws.data.vocab): class names and per-clip indices, -1 = none.
    aux_labels: list = field(default_factory=list)
    train_aux: Optional[np.ndarray] = None
    val_aux: Optional[np.ndarray] = None
    aux_info: dict = field(default_factory=dict)
    # Distillation (bnnkws.kws.training.teacher): (n_train + n_val + 1, D) targets, the last row
    # zero; with it train_aux/val_aux are (n, 2): (aux word or -1, row of this table or -1).
    teacher: Optional[np.ndarray] = None
    # The sharded pipeline (--pipeline shards) holds no arrays: it states the training count
    # and normalisation, and streams validation and test batches of ``(x, y[, aux])``.
    train_count: Optional[int] = None
    norm: Optional[tuple] = None
    val_stream: Optional[Callable] = None  # batch_size -> tf.data.Dataset
    test_stream: Optional[Callable] = None
    pipeline: str = "memory"
    # Training clips per task label (for --class-balance) and, for several corpora, what came
    # from where ({spec: {split: {label: clips}}} and the merge's notes).
    class_counts: Optional[list] = None
    sources: dict = field(default_factory=dict)

    @property
    def num_train(self) -> int:
        return int(self.train_count) if self.train_count is not None else len(self.train_y)

    def norm_stats(self) -> tuple[float, float]:
        """Scalar mean/std of the training log-mels (float64 accumulation)."""
        return self.norm if self.norm is not None else log_mel_norm(self.train_x)


def log_mel_norm(x: np.ndarray) -> tuple[float, float]:
    """Scalar mean/std of raw log-mel features (float64 accumulation, std at least 1e-6)."""
    x = np.asarray(x, np.float64)
    return float(x.mean()), max(float(x.std()), 1e-6)


def split_paths(train, val, test) -> dict:
    """``split.json``: split -> clip paths."""
    return {"train": [c.path for c in train], "validation": [c.path for c in val],
            "testing": [c.path for c in test]}


def augment_config(tc: "TrainConfig"):
    from bnnkws.kws.features.augment import AugmentConfig

    if not tc.augment:
        return AugmentConfig.off()
    return AugmentConfig(time_shift=tc.time_shift, noise=tc.noise, gain=tc.gain,
                         spec_augment=tc.spec_augment, noise_prob=tc.noise_prob,
                         snr_db=tuple(tc.snr_db), offset_prob=tc.offset_prob,
                         partial_prob=tc.partial_prob,
                         generated_noise_prob=tc.generated_noise_prob,
                         band_limit_prob=tc.band_limit_prob,
                         band_limit_hz=tc.band_limit_hz, speed_prob=tc.speed_prob,
                         speed_range=tuple(tc.speed_range))


def noise_files(paths) -> list:
    """Audio files named by ``--noise-dir`` (see
    :func:`bnnkws.kws.features.augment.noise_files`)."""
    from bnnkws.kws.features.augment import noise_files as listed

    try:
        return listed(paths)
    except FileNotFoundError as e:
        raise TrainError(f"--noise-dir {e}") from e


def prepare_data(tc: TrainConfig, frontend=None) -> TrainData:
    """Load the dataset named by ``tc.data``, split it, extract (cached) log-mel features."""
    from bnnkws.frontend.config import DEFAULT_FRONTEND
    from bnnkws.kws import data as kdata
    from bnnkws.kws.features import pipeline

    frontend = frontend or DEFAULT_FRONTEND
    aug = augment_config(tc)
    repeating = bool(tc.data_repeat) and any(int(k) > 1 for k in tc.data_repeat)
    if (tc.aux_only_per_epoch or repeating) and not (aug.any_waveform or aug.spec_augment):
        raise TrainError("--aux-only-per-epoch and --data-repeat shape the augmented "
                         "pipeline's epochs; they have no effect with every augmentation off")
    specs = tc.data if isinstance(tc.data, list) else [tc.data]
    try:
        parts = [kdata.load_dataset(s, task=tc.task, seed=tc.speaker_split_seed) for s in specs]
        ds = parts[0] if len(parts) == 1 else kdata.merge(parts, specs)
    except (FileNotFoundError, ValueError) as e:
        raise TrainError(f"--data {' --data '.join(specs)}: {e}") from e
    sources = {} if len(parts) == 1 else {"corpora": kdata.sources(parts, specs, ds),
                                          "notes": list(ds.notes)}
    if sources and tc.verbose:
        for note in ds.notes:
            print(f"data: {note}", file=sys.stderr)
    train = list(ds.train)
    if tc.max_train_clips is not None and len(train) > tc.max_train_clips:
        # A fixed random subset (not the first N, which would be few words/speakers).
        keep = np.sort(np.random.default_rng(tc.seed).choice(len(train), tc.max_train_clips,
                                                             replace=False))
        train = [train[i] for i in keep]
    val, test = list(ds.validation), list(ds.testing)
    aux_labels, train_aux, val_aux, aux_info = [], None, None, {}
    aux_only = None  # per training clip: brought by --aux-only (trains the auxiliary heads only)
    if tc.aux_vocab:
        from bnnkws.kws.data import vocab as kvocab

        holdout = kvocab.DEFAULT_HOLDOUT if tc.aux_holdout is None else tc.aux_holdout
        # Extra corpora must not bring in the task's validation/test speakers.
        held_speakers = ds.speakers("validation") | ds.speakers("testing")
        try:
            extra, notes = kvocab.extra_clips(tc.aux_data, ds.labels, held_speakers, holdout,
                                              aux_only=tc.aux_synth or ())
        except (FileNotFoundError, ValueError) as e:
            raise TrainError(f"--aux-data {tc.aux_data} / --aux-synth {tc.aux_synth}: {e}") \
                from e
        # A corpus named by both --data and --aux-data gives its task clips once.
        seen = {c.path for c in train}
        extra = [c for c in extra if c.path not in seen]
        train = train + extra
        aux_labels = kvocab.vocabulary(train, holdout, tc.aux_min_clips)
        if not aux_labels:
            raise TrainError("--aux-vocab: the training clips name no word outside the "
                             "holdout; nothing for the auxiliary heads to learn")
        train_aux = kvocab.aux_indices(train, aux_labels)
        aux_only = np.array([c.label == kvocab.AUX_ONLY for c in train], bool)
        # An --aux-only clip of a word too rare for an auxiliary class trains nothing.
        idle = aux_only & (train_aux < 0)
        if idle.any():
            notes = list(notes) + [f"{int(idle.sum())} --aux-only clips of words with fewer "
                                   f"than {tc.aux_min_clips} clips left out (nothing to train)"]
            train = [c for c, i in zip(train, idle) if not i]
            train_aux, aux_only = train_aux[~idle], aux_only[~idle]
        val_aux = kvocab.aux_indices(val, aux_labels)
        aux_info = kvocab.describe(aux_labels, train, holdout, notes)
    if not train or not val:
        raise TrainError(f"dataset {tc.data!r} gave {len(train)} training and {len(val)} "
                         f"validation clips; training needs both")
    labels = list(ds.labels)
    sharded = tc.pipeline == "shards" or (tc.pipeline == "auto" and len(train) > SHARDS_ABOVE)
    if sharded and memory_only(tc):
        raise TrainError(f"{' and '.join(memory_only(tc))}: in-memory pipeline only "
                         f"({SHARDS_LACK}); {len(train)} training clips chose the sharded one "
                         f"(--pipeline auto streams shards above {SHARDS_ABOVE}): pass "
                         f"--pipeline memory")
    teacher = None
    if tc.distill:
        teacher = _teacher_table(tc, train, val, frontend)
        # The per-clip channel beside the label becomes (aux word or -1, teacher row): a clip
        # cut to part of its word loses both (BatchMaker sets the row to -1).
        lab = train_aux if train_aux is not None else np.full(len(train), -1)
        train_aux = np.stack([lab, np.arange(len(train))], axis=1).astype(np.int32)
        vlab = val_aux if val_aux is not None else np.full(len(val), -1)
        val_aux = np.stack([vlab, len(train) + np.arange(len(val))], axis=1).astype(np.int32)
    repeats = None
    if repeating:
        corpus_of = {id(c): i for i, part in enumerate(parts) for c in part.clips}
        # Clips that only --aux-data/--aux-only bring take part once.
        repeats = np.array([int(tc.data_repeat[corpus_of[id(c)]]) if id(c) in corpus_of else 1
                            for c in train])
    tally = collections.Counter()
    for i, c in enumerate(train):
        tally[c.label] += 1 if repeats is None else int(repeats[i])
    counts = [tally[lab] for lab in labels]
    if sharded:
        data = _sharded_data(tc, frontend, ds, train, val, test, labels, train_aux, val_aux,
                             aux_labels, aux_info)
        data.class_counts, data.sources = counts, sources
        return data
    cache = tc.cache_dir
    show = tc.verbose > 0
    train_x, train_y = _arrays(train, frontend, labels, cache, show, train_aux)
    val_x, val_y = _arrays(val, frontend, labels, cache, show, val_aux)
    if train_aux is not None:
        train_y, train_aux = train_y
        val_y, val_aux = val_y
    test_x = test_y = None
    if test:
        test_x, test_y = pipeline.eval_arrays(test, frontend, labels, cache, show)
    augmented = None
    train_count = None  # clips an epoch, when not every training clip takes part
    if aug.any_waveform or aug.spec_augment:
        pool = (aux_only, tc.aux_only_per_epoch) if tc.aux_only_per_epoch else None
        maker = pipeline.BatchMaker(train, frontend, aug, labels,
                                    list(ds.noise_paths) + noise_files(tc.noise_dirs),
                                    tc.seed, cache, show, aux=train_aux, pool_per_epoch=pool,
                                    repeats=repeats)
        if pool is not None or repeats is not None:
            train_count = len(maker)
            if tc.verbose:
                drawn = (f"{int(pool[0].sum())} auxiliary-only clips, {maker.pool_n} drawn "
                         f"afresh each epoch; " if pool is not None else "")
                repeated = (f"--data-repeat {','.join(map(str, tc.data_repeat))}; "
                            if repeats is not None else "")
                print(f"data: {drawn}{repeated}{train_count} clips an epoch", file=sys.stderr)

        def augmented(start, end, batch_size):
            # Epoch e's draw is numpy.random.default_rng([seed, e]): a resumed run sees the
            # same augmented batches as an uninterrupted one.
            def gen():
                for e in range(start, end):
                    yield from maker.epoch(batch_size, epoch=e)

            shape = (None, frontend.num_frames, frontend.n_mels)
            labels_sig = (tf.TensorSpec((None,), tf.int32),)
            if train_aux is not None:
                labels_sig += (tf.TensorSpec((None,) + train_aux.shape[1:], tf.int32),)
            return tf.data.Dataset.from_generator(
                gen, output_signature=(tf.TensorSpec(shape, tf.float32), *labels_sig)
            ).prefetch(2)
    split = split_paths(train, val, test)
    return TrainData(labels=labels, train_x=train_x, train_y=train_y, val_x=val_x,
                     val_y=val_y, test_x=test_x, test_y=test_y, split=split,
                     name=getattr(ds, "name", str(tc.data)), augmented=augmented,
                     aux_labels=aux_labels, train_aux=train_aux, val_aux=val_aux,
                     aux_info=aux_info, teacher=teacher, class_counts=counts,
                     sources=sources, train_count=train_count)


def _teacher_table(tc: TrainConfig, train, val, frontend) -> np.ndarray:
    """``(len(train) + len(val) + 1, DIM)`` distillation targets
    (bnnkws.kws.training.teacher.targets) of the training then validation clips, placed as
    evaluation places them (centred, no shift) and standardised with the training clips' statistics,
    then one zero row: the target of clips that have none (index -1)."""
    from bnnkws.kws.training import teacher as kteacher
    from bnnkws.kws.features.augment import place
    from bnnkws.kws.features.cache import load_waveforms

    show = tc.verbose > 0
    try:
        model = kteacher.Teacher(tc.distill)
    except kteacher.TeacherError as e:
        raise TrainError(str(e)) from e
    parts, ok = [], []
    for clips in (train, val):
        waves = load_waveforms(clips, frontend, tc.cache_dir, show)
        parts.append(kteacher.embed_clips(
            lambda a, b: place([waves.get(i) for i in range(a, b)], frontend.clip_samples,
                               None), len(clips), model, progress=show))
        ok.append(np.asarray(waves.ok, bool))
    fit = np.arange(len(train) + len(val)) < len(train)
    t = kteacher.targets(np.concatenate(parts), np.concatenate(ok), fit)
    return np.concatenate([t, np.zeros((1, t.shape[1]), np.float32)])


DATA_SOURCES = "data_sources.json"  # several corpora / class weights: what came from where
SHARDS_ABOVE = 30_000  # --pipeline auto streams shards above this many training clips
NORM_CLIPS = 2_000  # sharded pipeline: clips whose log-mel give the normalisation


def _sharded_data(tc, frontend, ds, train, val, test, labels, train_aux, val_aux, aux_labels,
                  aux_info) -> TrainData:
    """TrainData streaming from TFRecord waveform shards (bnnkws.kws.features.shards) through the
    TensorFlow augmentation (bnnkws.kws.features.augment_tf): nothing grows with the corpus but the
    clip list. Normalisation: mean/std over the log-mel of ``NORM_CLIPS`` random training
    clips (the in-memory pipeline uses all; the two agree to ~0.1 % on the shipped data)."""
    from bnnkws.kws.features import augment_tf
    from bnnkws.kws.features import shards as kshards
    from bnnkws.kws.features.augment import NoiseBank
    from bnnkws.kws.features.cache import extract

    show = tc.verbose > 0
    build = dict(cache_dir=tc.cache_dir, progress=show)
    sets = {}
    for name, clips, aux in (("train", train, train_aux), ("validation", val, val_aux),
                             ("testing", test, None)):
        if clips:
            if show:
                print(f"shards of the {name} split ({len(clips)} clips)", file=sys.stderr)
            sets[name] = kshards.build_shards(clips, labels, frontend, aux=aux, **build)
    pick = np.random.default_rng(tc.seed).choice(len(train), min(NORM_CLIPS, len(train)),
                                                 replace=False)
    X, ok, _ = extract([train[i] for i in np.sort(pick)], frontend, tc.cache_dir,
                       progress=show, return_ok=True)
    norm = log_mel_norm(X[ok])
    aug = augment_config(tc)
    noise = (NoiseBank.from_files(list(ds.noise_paths) + noise_files(tc.noise_dirs), frontend)
             if aug.noise else None)
    augmenter = augment_tf.TFAugmenter(aug, frontend, labels, noise, seed=tc.seed)
    with_aux = train_aux is not None

    def pick_outputs(x, y, a):
        return (x, y, a) if with_aux else (x, y)

    def augmented(start, end, batch_size, worker=None, per_replica=None):
        """Batches of epochs ``start..end-1``. Each epoch is batched on its own (the last
        batch short), so epoch e is the same batches whether the run started at 0 or resumed
        at e; every draw is keyed by (seed, epoch, clip), so it does not depend on batching,
        sharding or workers.

        ``worker=(w, W)``: only worker w's part of every global batch of ``batch_size``
        (positions ``[w B/W, (w+1) B/W)``), batched by ``per_replica`` for its local replicas,
        whole batches only: the W workers together see exactly the single-device batches,
        and each decodes and augments only its own share."""
        train_set = sets["train"]
        if worker is None:
            def one_epoch(e):
                return augment_tf.batch_elements(
                    train_set.dataset(epoch=e, seed=tc.seed, shuffle_buffer=tc.shuffle_buffer),
                    batch_size, augmenter.max_len)
        else:
            w, n_workers = worker
            part = batch_size // n_workers
            full = (train_set.num_clips // batch_size) * batch_size

            def one_epoch(e):
                els = train_set.dataset(epoch=e, seed=tc.seed,
                                        shuffle_buffer=tc.shuffle_buffer).enumerate()
                mine = els.filter(lambda i, el: (i < full) & ((i % batch_size) // part == w))
                return augment_tf.batch_elements(mine.map(lambda i, el: el), per_replica,
                                                 augmenter.max_len, drop_remainder=True)
        batches = tf.data.Dataset.range(start, end).flat_map(one_epoch)
        return (batches.map(augmenter, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .map(pick_outputs).prefetch(tf.data.AUTOTUNE))

    def stream(name):
        def make(batch_size):
            els = sets[name].dataset(shuffle=False)
            return augment_tf.make_train_pipeline(els, augmenter, batch_size,
                                                  train=False).map(pick_outputs)
        return make if name in sets else None

    split = split_paths(train, val, test)
    return TrainData(labels=labels, train_x=None, train_y=None, val_x=None, val_y=None,
                     split=split, name=getattr(ds, "name", str(tc.data)), augmented=augmented,
                     aux_labels=aux_labels, train_aux=None, val_aux=None, aux_info=aux_info,
                     train_count=sets["train"].num_clips, norm=norm,
                     val_stream=stream("validation"), test_stream=stream("testing"),
                     pipeline="shards")


def _arrays(clips, frontend, labels, cache, show, aux=None):
    """``pipeline.eval_arrays``, keeping ``aux`` aligned: returns ``(X, y)`` or, with ``aux``,
    ``(X, (y, aux))`` without the rows of unreadable clips."""
    from bnnkws.kws.features import pipeline
    from bnnkws.kws.features.cache import extract

    if aux is None:
        return pipeline.eval_arrays(clips, frontend, labels, cache, show)
    X, ok, _ = extract(clips, frontend, cache, progress=show, return_ok=True)
    y = pipeline.label_indices(clips, labels)
    return np.ascontiguousarray(X[ok]), (y[ok], np.asarray(aux, np.int32)[ok])


def epochs_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                   start: int, end: int, aux: Optional[np.ndarray] = None) -> tf.data.Dataset:
    """Batches for epochs ``start..end-1``; epoch e's order is a stateless function of (seed, e).

    A resumed run therefore sees exactly the batches the uninterrupted run saw. With ``aux``
    the batches are ``(x, y, aux)``.
    """
    x = tf.constant(x, tf.float32)
    y = tf.constant(np.asarray(y).astype(np.int32))
    a = None if aux is None else tf.constant(np.asarray(aux).astype(np.int32))
    n = int(x.shape[0])

    def take(i):
        if a is None:
            return tf.gather(x, i), tf.gather(y, i)
        return tf.gather(x, i), tf.gather(y, i), tf.gather(a, i)

    def one_epoch(e):
        idx = tf.random.experimental.stateless_shuffle(
            tf.range(n), seed=tf.stack([tf.cast(seed, tf.int64), e]))
        return tf.data.Dataset.from_tensor_slices(idx).batch(batch_size).map(take)

    return (tf.data.Dataset.range(start, end).flat_map(one_epoch)
            .prefetch(tf.data.AUTOTUNE))


# ---------------------------------------------------------------------------------------------
# model, loss, optimizer
# ---------------------------------------------------------------------------------------------
def class_weights(counts, alpha: float) -> Optional[np.ndarray]:
    """Per-class loss weights ``w_c = n_c ** -alpha / Z`` with ``Z`` chosen so that the mean
    weight over the training clips, ``sum_c n_c w_c / sum_c n_c``, is 1 (the loss keeps its
    scale, so Bop's threshold means what it meant). ``alpha = 1`` gives every class the same
    total weight, ``0`` every clip the same; None when ``alpha`` is 0. A class without clips
    gets weight 0 (nothing to weigh)."""
    if not alpha:
        return None
    n = np.asarray(counts, np.float64)
    w = np.where(n > 0, np.maximum(n, 1.0) ** -float(alpha), 0.0)
    return (w * n.sum() / max(float((w * n).sum()), 1e-12)).astype(np.float32)


def sparse_ce(num_classes: int, label_smoothing: float = 0.0, weights=None):
    """Cross-entropy on logits with integer labels (label smoothing needs one-hot targets).

    Clips labelled -1 (``--aux-synth`` words that are not task labels, ``kws.vocab.AUX_ONLY``)
    count 0: they train only their auxiliary word. ``weights`` (``(num_classes,)``, see
    :func:`class_weights`) scale each clip's loss by its class's weight.
    """
    if weights is not None:
        base = sparse_ce(num_classes, label_smoothing)
        w = tf.constant(np.asarray(weights, np.float32))

        def weighted(y_true, logits):
            y = tf.maximum(tf.cast(tf.reshape(y_true, [-1]), tf.int32), 0)
            return base(y_true, logits) * tf.gather(w, y)

        return weighted
    if not label_smoothing:
        return masked_sparse_ce

    def loss(y_true, logits):
        y = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        keep = tf.cast(y >= 0, logits.dtype)
        ce = tf.keras.losses.categorical_crossentropy(
            tf.one_hot(tf.maximum(y, 0), num_classes), logits, from_logits=True,
            label_smoothing=label_smoothing)
        return ce * keep

    return loss


def masked_sparse_ce(y_true, logits):
    """Cross-entropy of the clips that have a label (``y >= 0``); others count 0.

    Keras averages over the whole batch, so the auxiliary loss scales with the labelled share.
    """
    y = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
    keep = tf.cast(y >= 0, logits.dtype)
    ce = tf.keras.losses.sparse_categorical_crossentropy(tf.maximum(y, 0), logits,
                                                         from_logits=True)
    return ce * keep


def am_softmax_ce(num_classes: int, scale: float, margin: float):
    """Additive-margin softmax cross-entropy (Wang et al. 2018) on cosines, for clips with a
    label (``y >= 0``; others count 0, as in :func:`masked_sparse_ce`).

    With ``cos (n, C)`` the cosines between each embedding and the class vectors,
    ``loss = -log( e^{s (cos_y - m)} / (e^{s (cos_y - m)} + sum_{c != y} e^{s cos_c}) )``:
    the loss is small only once ``cos_y`` exceeds every other ``cos_c`` by more than ``m``,
    which pulls each word's clips together and pushes other words' away on the sphere: the
    geometry a linear or nearest-centroid head for new words relies on.
    """
    def loss(y_true, cos):
        y = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        keep = tf.cast(y >= 0, cos.dtype)
        logits = scale * (cos - margin * tf.one_hot(tf.maximum(y, 0), num_classes,
                                                    dtype=cos.dtype))
        ce = tf.keras.losses.sparse_categorical_crossentropy(tf.maximum(y, 0), logits,
                                                             from_logits=True)
        return ce * keep

    loss.__name__ = "am_softmax_ce"
    return loss


def _cosine_head(emb, num_aux: int, binary: bool, name: str):
    """``cos(w_c, emb)`` for every class c. Binary: ``sign(w) . sign(e) / d`` exactly (every
    ±1 vector has norm sqrt(d)), the kernel a Bop-trained binary kernel; real-valued: the
    unit-normalised embedding against the unit-normalised kernel columns."""
    import larq as lq

    d = int(emb.shape[-1])
    if binary:
        z = lq.layers.QuantDense(num_aux, use_bias=False, name=f"aux_dense{name}",
                                 kernel_initializer="glorot_normal", input_quantizer="ste_sign",
                                 kernel_quantizer="ste_sign", kernel_constraint="weight_clip")(emb)
        return tf.keras.layers.Rescaling(1.0 / d, name=f"aux_cos{name}")(z)
    return CosineDense(num_aux, name=f"aux_dense{name}")(emb)


class CosineDense(tf.keras.layers.Layer):
    """``x / ||x|| . w_c / ||w_c||`` for every column ``w_c`` of a real-valued kernel."""

    def __init__(self, units: int, **kw):
        super().__init__(**kw)
        self.units = int(units)

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", shape=(int(input_shape[-1]), self.units),
                                      initializer="glorot_normal", trainable=True)
        super().build(input_shape)

    def call(self, x):
        return tf.matmul(tf.math.l2_normalize(x, axis=-1),
                         tf.math.l2_normalize(self.kernel, axis=0))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def with_aux_heads(model, cfg: ModelConfig, num_aux: int, distill_dim: int = 0,
                   cosine: bool = False):
    """A training model sharing ``model``'s stages that also outputs ``aux{k}`` logits and,
    with ``distill_dim``, ``distill{k}`` predictions of the teacher's embedding.

    Each auxiliary head is an exit head of its own (binary dense on sign(embedding), learned
    scale, bias) over the stage's ``embedding``, the same vector enrolment and the transfer
    probe use; with ``cosine`` it outputs the cosines to its class vectors instead, for
    :func:`am_softmax_ce`. Each distillation head is a real-valued linear map of that same
    input (the sign of the embedding for binary models), so the loss shapes what a head can
    read. The task model (``model``) is what gets saved and exported.
    """
    from bnnkws.kws.models.exits import ExitScale
    import larq as lq

    try:
        stages = [model.get_layer(f"stage{k}") for k in range(1, cfg.num_stages + 1)]
    except ValueError as e:
        raise TrainError(f"--aux-vocab needs a model built of stage1..stage{cfg.num_stages} "
                         f"layers ({e})") from e
    inp = tf.keras.Input((cfg.frontend.num_frames, cfg.frontend.n_mels), name="logmel",
                         dtype="float32")
    outputs, x = {}, inp
    for k, stage in enumerate(stages, start=1):
        out = stage(x)
        if k in cfg.active_exits:
            outputs[f"exit{k}"] = model.get_layer(f"exit{k}")(out["logits"])
            emb = out["embedding"]
            d = int(emb.shape[-1])
            if num_aux and cosine:
                outputs[f"aux{k}"] = tf.keras.layers.Activation(
                    "linear", dtype="float32", name=f"aux{k}")(
                        _cosine_head(emb, num_aux, cfg.binary, str(k)))
            elif num_aux:
                quant = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                             kernel_constraint="weight_clip") if cfg.binary else {}
                z = lq.layers.QuantDense(num_aux, use_bias=False, name=f"aux_dense{k}",
                                         kernel_initializer="glorot_normal", **quant)(emb)
                z = ExitScale(1.0 / math.sqrt(d) if cfg.binary else 1.0,
                              name=f"aux_logits{k}")(z)
                outputs[f"aux{k}"] = tf.keras.layers.Activation(
                    "linear", dtype="float32", name=f"aux{k}")(z)
            if distill_dim:
                p = lq.layers.QuantDense(
                    distill_dim, name=f"distill_dense{k}",
                    input_quantizer="ste_sign" if cfg.binary else None)(emb)
                outputs[f"distill{k}"] = tf.keras.layers.Activation(
                    "linear", dtype="float32", name=f"distill{k}")(p)
        if "fmap" in out:
            x = out["fmap"]
    return tf.keras.Model(inp, outputs, name=f"{model.name}_aux")


def make_model_config(tc: TrainConfig, labels, norm_mean: float, norm_std: float) -> ModelConfig:
    num_exits = ModelConfig().num_exits
    for option, values in (("--exit-weights", tc.exit_weights),
                           ("--head-channels", tc.head_channels),
                           ("--stage-filters", tc.stage_filters)):
        if values is not None and len(values) != num_exits:
            raise TrainError(f"{option} needs {num_exits} values (one per exit), "
                             f"got {len(values)}: {values}")
    return ModelConfig(arch=tc.arch, width=tc.width, labels=list(labels),
                       single_exit=tc.single_exit, binary=not tc.real_valued,
                       norm_mean=norm_mean, norm_std=norm_std, exit_loss_weights=tc.exit_weights,
                       head_channels=tc.head_channels, stage_filters=tc.stage_filters,
                       binary_bn_epsilon=tc.binary_bn_epsilon, pa_bases=tc.pa_bases)


def make_optimizer(tc: TrainConfig, steps_per_epoch: int):
    total = steps_per_epoch * tc.epochs
    lr = optim.decay_schedule(tc.lr, tc.lr_schedule, total, steps_per_epoch, tc.lr_final)
    if tc.optimizer == "bop":
        gamma = optim.decay_schedule(tc.bop_gamma, tc.bop_gamma_decay, total, steps_per_epoch,
                                     tc.bop_gamma_final)
        return optim.bop_case_optimizer(gamma=gamma, threshold=tc.bop_threshold, lr=lr)
    return optim.adam(lr)


def compile_model(model, cfg: ModelConfig, optimizer, label_smoothing: float = 0.0,
                  aux_weight: Optional[float] = None, distill_weight: Optional[float] = None,
                  aux_margin: Optional[tuple] = None, weights=None, jit_compile: bool = False):
    """``aux_margin``: ``(num_aux, scale, margin)`` when the auxiliary heads output cosines
    (``with_aux_heads(..., cosine=True)``), trained with :func:`am_softmax_ce`. ``weights``:
    per-class weights of the task loss (:func:`class_weights`)."""
    names = list(cfg.exit_names)
    loss = {n: sparse_ce(cfg.num_classes, label_smoothing, weights) for n in names}
    weights = {n: cfg.exit_loss_weights[int(n[4:]) - 1] for n in names}
    metrics = {n: ["accuracy"] for n in names}
    if aux_weight is not None:  # auxiliary vocabulary heads aux1..auxN
        aux_loss = am_softmax_ce(*aux_margin) if aux_margin else masked_sparse_ce
        for n in names:
            loss[f"aux{n[4:]}"] = aux_loss
            weights[f"aux{n[4:]}"] = aux_weight * weights[n]
    if distill_weight is not None:  # distillation heads distill1..distillN
        from bnnkws.kws.training.teacher import cosine_loss

        for n in names:
            loss[f"distill{n[4:]}"] = cosine_loss
            weights[f"distill{n[4:]}"] = distill_weight * weights[n]
    model.compile(optimizer=optimizer, loss=loss, loss_weights=weights, metrics=metrics,
                  jit_compile=jit_compile)


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def _default_out(tc: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kind = "real" if tc.real_valued else tc.optimizer
    return Path("runs") / f"{tc.arch}-w{tc.width:g}-{kind}-{stamp}"


def _truncate_history(path: Path, epochs_done: int) -> None:
    """Drop rows of epochs not covered by the checkpoint (killed after the CSV write)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    head, body = rows[0], rows[1:]
    keep = [r for r in body if r and int(r[0]) < epochs_done]
    if len(keep) != len(body):
        buf = io.StringIO()
        csv.writer(buf).writerows([head] + keep)
        atomic_write_text(path, buf.getvalue())


def _abs_specs(data) -> list:
    return [os.path.abspath(s) for s in (data if isinstance(data, list) else [data])]


def _resolve_resume(tc: TrainConfig, out: Path) -> TrainConfig:
    saved_path = out / rundir.TRAIN_CONFIG
    if not saved_path.is_file():
        raise TrainError(f"--resume: {saved_path} not found; is {out} a training run?")
    saved = TrainConfig.from_dict({k: v for k, v in rundir.read_json(saved_path).items()})
    diffs = [k for k in _FIXED_ON_RESUME if tc.data and getattr(tc, k) != getattr(saved, k)
             and k not in ("data",)]
    if tc.data and _abs_specs(tc.data) != _abs_specs(saved.data):
        diffs.append("data")
    if diffs:
        detail = ", ".join(f"{k}: run has {getattr(saved, k)!r}, asked {getattr(tc, k)!r}"
                           for k in diffs)
        raise TrainError(f"--resume {out}: options differ from the run's train_config.json "
                         f"({detail}); drop them or start a new --out")
    # Only the length of the run (and verbosity) may change on resume.
    return dataclasses.replace(saved, epochs=tc.epochs, resume=True, verbose=tc.verbose,
                               jit_compile=tc.jit_compile,
                               out=str(out), distribute=tc.distribute, devices=tc.devices,
                               cache_dir=tc.cache_dir or saved.cache_dir)


def run_training(tc: TrainConfig, *, data: Optional[TrainData] = None,
                 model_fn: Optional[Callable] = None, extra_callbacks=()) -> Path:
    """Train as ``tc`` says and return the run directory.

    ``data`` and ``model_fn(ModelConfig) -> keras.Model`` replace the dataset loader and
    :func:`bnnkws.kws.models.build_model` (tests, notebooks); ``extra_callbacks`` run after the
    built-in ones. The learning-rate and gamma schedules span ``tc.epochs``: resuming with the
    same ``--epochs`` replays the uninterrupted run, a larger one stretches the schedules.
    """
    from bnnkws.kws.training import distribute as dist

    out = Path(tc.out) if tc.out else _default_out(tc)
    ckpt_dir = out / rundir.CHECKPOINTS
    if tc.resume:
        tc = _resolve_resume(tc, out)
    # First: splitting the CPU into logical devices must happen before TensorFlow sets up its.
    try:
        place = dist.setup(tc.distribute, tc.devices)
        place.per_replica_batch(tc.batch_size)
    except dist.DistributeError as e:
        raise TrainError(str(e)) from e
    if not tc.resume and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        raise TrainError(f"{out} already holds a training run; continue it with --resume or "
                         f"choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    # Non-chief workers write into a scratch folder; every worker restores from the chief's.
    wdir = dist.write_dir(out, place)
    wdir.mkdir(parents=True, exist_ok=True)
    if tc.verbose:
        print(place.describe(tc.batch_size), file=sys.stderr)

    if data is None:
        data = prepare_data(tc)
    if model_fn is None:
        from bnnkws.kws.models import build_model as model_fn

    tf.keras.utils.set_random_seed(tc.seed)

    source_cfg = rundir.load_config(tc.init_from) if tc.init_from else None
    if tc.resume and (out / rundir.CONFIG).is_file():
        cfg = ModelConfig.load(out / rundir.CONFIG)
    else:
        # A warm start keeps the source run's input scaling, which its weights were learnt on;
        # this run's own data would shift it (a fine-tune on one corpus of a multi-corpus run).
        mean, std = ((source_cfg.norm_mean, source_cfg.norm_std) if source_cfg is not None
                     else data.norm_stats())
        cfg = make_model_config(tc, data.labels, mean, std)
        if place.is_chief:
            cfg.save(out / rundir.CONFIG)
            rundir.write_json(out / rundir.TRAIN_CONFIG, tc.to_dict())
            rundir.write_json(out / rundir.SPLIT, data.split)
    if list(cfg.labels) != list(data.labels):
        raise TrainError(f"labels of the data {data.labels} differ from the run's {cfg.labels}")

    aux = bool(data.aux_labels)
    distill = data.teacher is not None
    extra = aux or distill  # batches carry a per-clip channel beside the label
    n_train = data.num_train
    # Streamed shards on several workers: each worker reads and augments only its share of
    # every global batch (tf.distribute's input contexts), whole batches only, so that all
    # workers take the same number of steps.
    per_worker_input = place.workers > 1 and data.pipeline == "shards"
    if per_worker_input:
        spe = n_train // tc.batch_size
        if spe < 1:
            raise TrainError(f"{n_train} training clips make no whole global batch of "
                             f"{tc.batch_size}")
        if tc.verbose:
            print(f"input: worker {place.task_index} streams its share of each global batch "
                  f"({spe} whole batches per epoch; the last {n_train - spe * tc.batch_size} "
                  f"clips of each epoch's shuffled order sit that epoch out)", file=sys.stderr)
    else:
        spe = math.ceil(n_train / tc.batch_size)
    with dist.model_scope(place):
        model = model_fn(cfg)
        if tc.init_from and not tc.resume:
            src = model_fn(source_cfg)
            try:
                src.load_weights(str(rundir.weights_path(tc.init_from, "best")))
                model.set_weights(src.get_weights())
            except (ValueError, OSError) as e:
                raise TrainError(f"--init-from {tc.init_from}: its weights do not fit this "
                                 f"model ({e}); it must be the same arch/width/exits") from e
        # The auxiliary heads live only in the training model; `model` (the task's exits) is
        # what weights.h5/best.h5 hold, so load_run and export never see them.
        train_model = (with_aux_heads(model, cfg, len(data.aux_labels),
                                      data.teacher.shape[1] if distill else 0,
                                      cosine=bool(tc.aux_margin))
                       if extra else model)
        optimizer = make_optimizer(tc, spe)
    if aux and not tc.resume and place.is_chief:
        rundir.write_json(out / AUX_VOCAB, data.aux_info or {"words": list(data.aux_labels)})
    weights = (class_weights(data.class_counts, tc.class_balance)
               if data.class_counts is not None else None)
    if not tc.resume and place.is_chief and (data.sources or weights is not None):
        record = dict(data.sources)
        if data.class_counts is not None:
            record["train_clips_per_class"] = dict(zip(data.labels, data.class_counts))
        if weights is not None:
            rounded = np.round(weights.astype(float), 4).tolist()
            record["class_weights"] = dict(zip(data.labels, rounded))
            if tc.verbose:
                print("class weights (--class-balance " f"{tc.class_balance:g}): "
                      + ", ".join(f"{k} {v:.2f}" for k, v in zip(data.labels, weights)),
                      file=sys.stderr)
        rundir.write_json(out / DATA_SOURCES, record)

    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    best_var = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_val")
    best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
    ckpt = tf.train.Checkpoint(model=train_model, optimizer=optimizer, epoch=epoch_var,
                               best_val=best_var, best_epoch=best_epoch)
    # Every worker restores from the chief's checkpoints and writes its own (see distribute).
    manager = tf.train.CheckpointManager(ckpt, str(ckpt_dir), max_to_keep=2)
    write_manager = manager if place.is_chief else tf.train.CheckpointManager(
        ckpt, str(wdir / rundir.CHECKPOINTS), max_to_keep=1)

    # The optimizer's slots (Bop's moving averages, Adam's moments) and step counters exist only
    # after its first update; tf.train.Checkpoint defers their restoration until they are
    # created, so restoring before training is exact (the resume test checks it).
    start = 0
    if tc.resume:
        if manager.latest_checkpoint is None:
            print(f"--resume: no checkpoint in {ckpt_dir} yet; starting from epoch 1",
                  file=sys.stderr)
        else:
            ckpt.restore(manager.latest_checkpoint).expect_partial()
            start = int(epoch_var.numpy())
            print(f"resuming {out} after epoch {start} ({manager.latest_checkpoint})",
                  file=sys.stderr)
    _truncate_history(wdir / rundir.HISTORY, start)
    if start >= tc.epochs:
        print(f"{out}: already trained {start} epochs (>= --epochs {tc.epochs})", file=sys.stderr)

    last_exit = cfg.exit_names[-1]
    binaries = optim.binary_variables(train_model)
    interrupt = cbs.GracefulInterrupt()
    timer = cbs.EpochTimer()
    callbacks = [timer]
    if binaries:
        callbacks.append(cbs.FlipCounter(binaries))
    # The epoch's history row is written before its checkpoint: a run killed in between has a
    # row too many, which _truncate_history drops on resume; the other order loses the row of
    # a checkpointed epoch whenever saving the weights blocks (under MultiWorkerMirrored,
    # reading batch-norm statistics waits for every worker, so a dead peer stops it there).
    callbacks += [
        cbs.HyperLogger(optimizer),
        tf.keras.callbacks.CSVLogger(str(wdir / rundir.HISTORY), append=True),
        tf.keras.callbacks.TensorBoard(str(wdir / rundir.TENSORBOARD), write_graph=False,
                                       profile_batch=0, update_freq="epoch"),
        cbs.BestWeights(wdir / rundir.BEST, f"val_{last_exit}_accuracy", best_var, best_epoch,
                        save_model=model),
        cbs.EpochCheckpoint(write_manager, epoch_var, wdir / rundir.WEIGHTS, save_model=model),
        interrupt,
        *extra_callbacks,
    ]

    table = tf.constant(data.teacher) if distill else None

    def targets(x, y, a=None):
        # One target per output: the task label for exitK, the word index for auxK, the
        # teacher's embedding for distillK (row -1 -> the table's last, all-zero row).
        t = {n: y for n in cfg.exit_names}
        if a is None:
            return x, t
        word = a[:, 0] if distill else a
        if aux:
            t.update({f"aux{n[4:]}": word for n in cfg.exit_names})
        if distill:
            row = tf.where(a[:, 1] < 0, tf.shape(table)[0] - 1, a[:, 1])
            emb = tf.gather(table, row)
            t.update({f"distill{n[4:]}": emb for n in cfg.exit_names})
        return x, t

    if data.val_stream is not None:
        val = data.val_stream(tc.eval_batch_size)
    else:
        val_parts = (data.val_x.astype(np.float32), data.val_y.astype(np.int32))
        if extra:
            val_parts += (np.asarray(data.val_aux, np.int32),)
        val = tf.data.Dataset.from_tensor_slices(val_parts).batch(tc.eval_batch_size)
    if extra:
        val = val.map(targets)
    val = dist.shard_by_data(val)

    def stream(a, b):
        if per_worker_input:
            def per_worker(ctx):  # tf.distribute.InputContext of this worker
                ds = data.augmented(a, b, tc.batch_size,
                                    worker=(ctx.input_pipeline_id, ctx.num_input_pipelines),
                                    per_replica=ctx.get_per_replica_batch_size(tc.batch_size))
                return ds.map(targets) if extra else ds
            return tf.keras.utils.experimental.DatasetCreator(per_worker)
        if data.augmented is not None:
            ds = data.augmented(a, b, tc.batch_size)
        else:
            ds = epochs_dataset(data.train_x, data.train_y, tc.batch_size, tc.seed, a, b,
                                data.train_aux if extra else None)
        return dist.shard_by_data(ds.map(targets) if extra else ds)

    # Phases: one for Bop/Adam; two-stage trains epochs < stage1 without clipping.
    phases = []
    s1 = tc.stage1
    if s1 > 0:
        phases.append((0, s1, "stage 1 (no gradient/weight clipping)"))
    phases.append((s1, tc.epochs, "stage 2 (clipping on)" if s1 > 0 else None))
    t0 = time.time()
    for p_start, p_end, label in phases:
        a = max(start, p_start)
        if a >= p_end:
            continue
        saved_clip = None
        if tc.optimizer == "two-stage" and p_start == 0 and s1 > 0:
            saved_clip = optim.disable_clipping(train_model)
        elif tc.optimizer == "two-stage":
            optim.set_bn_momentum(train_model, tc.stage2_bn_momentum)
        if label and tc.verbose:
            print(f"{label}: epochs {a + 1}..{p_end}", file=sys.stderr)
        with place.strategy.scope():
            compile_model(train_model, cfg, optimizer, tc.label_smoothing,
                          tc.aux_weight if aux else None,
                          tc.distill_weight if distill else None,
                          (len(data.aux_labels), tc.aux_scale, tc.aux_margin)
                          if aux and tc.aux_margin else None, weights, tc.jit_compile)
        try:
            train_model.fit(stream(a, p_end), epochs=p_end, initial_epoch=a, steps_per_epoch=spe,
                      validation_data=val, callbacks=callbacks, verbose=tc.verbose)
        finally:
            if saved_clip is not None:
                optim.restore_clipping(saved_clip)
        if interrupt.requested:
            break
    done = int(epoch_var.numpy())
    wall = time.time() - t0
    if done > start and tc.verbose:
        secs = timer.seconds
        steady = (f"{float(np.median(secs[1:])):.1f} s/epoch after the first "
                  f"({secs[0]:.0f} s, includes graph tracing)" if len(secs) > 1
                  else f"{secs[0]:.0f} s incl. graph tracing" if secs else "")
        print(f"trained epochs {start + 1}..{done} in {wall:.0f} s; {steady}", file=sys.stderr)
    if interrupt.requested:
        print(f"stopped after epoch {done}; continue with: kws train --resume --out {out} "
              f"--epochs {tc.epochs}", file=sys.stderr)

    if not (wdir / rundir.WEIGHTS).is_file():
        cbs.atomic_save_weights(model, wdir / rundir.WEIGHTS)
    dist.cleanup(out, place)
    if place.is_chief:
        if place.mode != "none":
            # Predicting under a multi-worker strategy needs every worker, and so does reading
            # batch-norm statistics (on-read variables are averaged across workers): the test
            # split is the chief's job, on a single-device model loaded from the saved file.
            plain = model_fn(cfg)
            plain.load_weights(str(out / rundir.WEIGHTS))
            model = plain
        evaluate_test(out, cfg, model, data, tc, int(best_epoch.numpy()), done)
    return out


def exit_accuracies(model, cfg: ModelConfig, x, y, batch_size: int = 256) -> dict:
    """``{"exit1": acc, ...}`` on arrays ``x`` (raw log-mel) and labels ``y``."""
    out = model.predict(x.astype(np.float32), batch_size=batch_size, verbose=0)
    if not isinstance(out, dict):
        out = dict(zip(cfg.exit_names, out if isinstance(out, list) else [out]))
    y = np.asarray(y)
    return {k: float(np.mean(np.argmax(out[k], axis=-1) == y)) for k in cfg.exit_names}


def stream_accuracies(model, cfg: ModelConfig, ds) -> tuple[dict, int]:
    """``({"exit1": acc, ...}, clips)`` over a dataset of ``(x, y[, aux])`` batches."""
    right = {k: 0 for k in cfg.exit_names}
    n = 0
    for batch in ds:
        x, y = batch[0], batch[1].numpy()
        out = model(x, training=False)
        if not isinstance(out, dict):
            out = dict(zip(cfg.exit_names, out if isinstance(out, list) else [out]))
        for k in cfg.exit_names:
            right[k] += int(np.sum(np.argmax(out[k].numpy(), axis=-1) == y))
        n += len(y)
    return {k: right[k] / max(n, 1) for k in cfg.exit_names}, n


def evaluate_test(out: Path, cfg, model, data: TrainData, tc: TrainConfig, best_epoch: int,
                  epochs_done: int) -> dict:
    """Per-exit accuracy on the test split (last and best weights) into test_metrics.json."""
    if data.test_stream is not None:
        def accs():
            return stream_accuracies(model, cfg, data.test_stream(tc.eval_batch_size))
    elif data.test_x is None or len(data.test_x) == 0:
        return {}
    else:
        def accs():
            return (exit_accuracies(model, cfg, data.test_x, data.test_y, tc.eval_batch_size),
                    int(len(data.test_y)))
    last, n = accs()
    result = {"num_clips": n, "epochs": epochs_done, "last": last}
    if (out / rundir.BEST).is_file():
        model.load_weights(str(out / rundir.BEST))
        result["best"] = accs()[0]
        result["best_epoch"] = best_epoch
        model.load_weights(str(out / rundir.WEIGHTS))
    rundir.write_json(out / rundir.TEST_METRICS, result)
    if tc.verbose:
        for which in ("last", "best"):
            if which in result:
                accs = "  ".join(f"{k} {100 * v:.1f}%" for k, v in result[which].items())
                print(f"test ({which}): {accs}", file=sys.stderr)
    return result


def load_run(run_dir, which: str = "best"):
    """``(ModelConfig, keras.Model)`` of a run (``which``: "best" or "last")."""
    return rundir.load_run(run_dir, which)
