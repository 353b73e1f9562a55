"""``tf.data`` pipelines of ``(log-mel (b, frames, n_mels) float32, label (b,) int32)``.

Training re-augments the cached waveforms every epoch (crop, shift, gain, noise), computes
log-mel with the vectorised numpy reference and applies SpecAugment, in a generator that
``tf.data`` prefetches while the model trains. Without augmentation it batches the cached
features. Evaluation arrays come straight from the feature cache. Features are raw log-mel;
the model normalises inside with ``ModelConfig.norm_mean``/``norm_std`` (:func:`feature_stats`).
"""
from __future__ import annotations

import itertools
import logging

import numpy as np

from bnnkws.frontend import DEFAULT_FRONTEND, FrontendConfig

from bnnkws.kws.features.augment import (AugmentConfig, NoiseBank, augment_waveforms, band_limit,
                                         place, shift_rows, spec_augment, speed_perturb,
                                         window_shifts)
from bnnkws.kws.data.base import Dataset
from bnnkws.kws.features.cache import extract, feature_stats, load_waveforms
from bnnkws.kws.data.vocab import AUX_ONLY

__all__ = ["train_dataset", "eval_arrays", "feature_stats", "label_indices", "BatchMaker"]

log = logging.getLogger(__name__)


def _resolve(clips, labels, noise_paths, split="train"):
    if isinstance(clips, Dataset):
        labels = labels or clips.labels
        noise_paths = clips.noise_paths if noise_paths is None else noise_paths
        clips = clips.split(split)
    labels = labels or getattr(clips, "labels", None)
    if not labels:
        raise ValueError("labels unknown: pass labels=[...] or clips from Dataset.split(...)")
    if noise_paths is None:
        noise_paths = getattr(clips, "noise_paths", [])
    return list(clips), list(labels), list(noise_paths)


def label_indices(clips, labels) -> np.ndarray:
    """Task label index per clip; -1 for auxiliary-only clips (``kws.vocab.AUX_ONLY``), whose
    task loss is zero."""
    index = {lab: i for i, lab in enumerate(labels)}
    index[AUX_ONLY] = -1
    try:
        return np.array([index[c.label] for c in clips], dtype=np.int32)
    except KeyError:
        i, c = next((i, c) for i, c in enumerate(clips) if c.label not in index)
        raise ValueError(f"clip {i} ({c.path}): label {c.label!r} is not in labels "
                         f"{list(labels)}") from None


def eval_arrays(clips, cfg: FrontendConfig = DEFAULT_FRONTEND, labels=None, cache_dir=None,
                progress: bool = True):
    """``(X float32 (n, frames, n_mels), y int32 (n,))`` of the centred clips, from the cache.

    ``clips``: a list from ``Dataset.split(...)`` (labels travel with it) or any clip list with
    ``labels=``; a ``Dataset`` means its testing split. Unreadable clips are dropped (logged).
    """
    clips, labels, _ = _resolve(clips, labels, [], split="testing")
    X, ok, problems = extract(clips, cfg, cache_dir, progress=progress, return_ok=True)
    y = label_indices(clips, labels)
    if not ok.all():
        log.warning("dropped %d unreadable clips: %s", int((~ok).sum()),
                    "; ".join(f"{p}: {m}" for p, m in problems[:5]))
        return np.ascontiguousarray(X[ok]), y[ok]
    return np.asarray(X), y


class BatchMaker:
    """Augmented batches from cached waveforms; a new random draw every epoch.

    Epoch ``e`` uses ``numpy.random.default_rng([seed, e])``, so a run is reproducible.
    ``aux``: optional int label per clip for the auxiliary vocabulary heads (-1 = none); the
    batches are then ``(X, y, aux)``. A clip cut to part of its word (``partial_prob``) becomes
    ``_unknown_`` with no auxiliary label.

    ``pool_per_epoch=(mask, n)``: the clips where ``mask`` is true (a large auxiliary-only
    corpus) take part ``n`` at a time, a fresh draw without replacement every epoch from the
    same generator, so an epoch holds every other clip plus ``n`` of the pool and a pool of
    ``N`` clips is seen ``E n / N`` times in ``E`` epochs.

    ``repeats``: optional whole number per clip, how many times it takes part in every epoch
    (each time with its own augmentation draw), to oversample a corpus; 1 by default.
    """

    def __init__(self, clips, cfg: FrontendConfig = DEFAULT_FRONTEND, augment=None,
                 labels=None, noise_paths=None, seed: int = 0, cache_dir=None,
                 progress: bool = True, aux=None, pool_per_epoch=None, repeats=None):
        clips, labels, noise_paths = _resolve(clips, labels, noise_paths)
        self.cfg = cfg
        self.augment = augment if augment is not None else AugmentConfig.off()
        self.seed = seed
        self.labels = labels
        waves = load_waveforms(clips, cfg, cache_dir, progress)
        self.keep = np.flatnonzero(waves.ok)
        if len(self.keep) < len(clips):
            log.warning("training without %d unreadable clips", len(clips) - len(self.keep))
        self.waves = waves
        self.y = label_indices(clips, labels)
        self.noise = NoiseBank.from_files(noise_paths, cfg) if self.augment.noise else None
        self.max_shift = int(round(self.augment.time_shift_ms * cfg.sample_rate / 1000)) \
            if self.augment.time_shift else 0
        self.aux = None if aux is None else np.asarray(aux, np.int32)
        if self.aux is not None and len(self.aux) != len(clips):
            raise ValueError(f"aux has {len(self.aux)} labels for {len(clips)} clips")
        self.silence = labels.index("_silence_") if "_silence_" in labels else -1
        self.unknown = labels.index("_unknown_") if "_unknown_" in labels else -1
        if self.augment.partial_prob and self.unknown < 0:
            raise ValueError(f"partial_prob needs an _unknown_ label to give cut words; "
                             f"labels are {labels}")
        self._epochs = itertools.count()
        self.pool, self.pool_n, self.rest = self.keep[:0], 0, self.keep
        if pool_per_epoch is not None:
            mask, n = pool_per_epoch
            mask = np.asarray(mask, bool)
            if len(mask) != len(clips):
                raise ValueError(f"pool mask has {len(mask)} entries for {len(clips)} clips")
            in_pool = mask[self.keep]
            self.pool, self.rest = self.keep[in_pool], self.keep[~in_pool]
            self.pool_n = min(int(n), len(self.pool))
        if repeats is not None:
            repeats = np.asarray(repeats, int)
            if len(repeats) != len(clips) or (repeats < 1).any():
                raise ValueError(f"repeats needs a whole number >= 1 for each of the "
                                 f"{len(clips)} clips")
            self.rest = np.repeat(self.rest, repeats[self.rest])

    def __len__(self) -> int:
        """Clips per epoch."""
        return len(self.rest) + self.pool_n

    def batch(self, idx, rng: np.random.Generator) -> tuple:
        a = self.augment
        y = self.y[idx].copy()
        aux = None if self.aux is None else self.aux[idx].copy()
        clips = [self.waves.get(i) for i in idx]
        if a.speed_prob:
            clips = speed_perturb(clips, a, rng, self.cfg.sample_rate)
        if a.offset_prob or a.partial_prob:
            Y = place(clips, self.cfg.clip_samples, rng, 0)
            speech = y != self.silence
            shifts, partial = window_shifts(Y, a, rng, speech, self.max_shift)
            Y = shift_rows(Y, shifts)
            y[partial] = self.unknown
            if aux is not None:
                aux[partial] = -1
        else:
            Y = place(clips, self.cfg.clip_samples, rng, self.max_shift)
        if a.gain or a.noise:
            Y = augment_waveforms(Y, a, rng, self.noise)
        if a.band_limit_prob:
            Y = band_limit(Y, a, rng, self.cfg.sample_rate)
        from bnnkws.frontend.reference import log_mel_batch

        X = log_mel_batch(Y, self.cfg)
        if a.spec_augment:
            X = spec_augment(X, a, rng)
        return (X, y) if aux is None else (X, y, aux)

    def epoch(self, batch_size: int, epoch: int | None = None, drop_remainder: bool = False):
        """Yield the batches of one epoch (shuffled)."""
        e = next(self._epochs) if epoch is None else epoch
        rng = np.random.default_rng([self.seed, e])
        keep = self.rest
        if self.pool_n:
            keep = np.concatenate([self.rest,
                                   rng.choice(self.pool, self.pool_n, replace=False)])
        order = keep[rng.permutation(len(keep))]
        stop = len(order) - (len(order) % batch_size if drop_remainder else 0)
        for s in range(0, stop, batch_size):
            yield self.batch(order[s:s + batch_size], rng)


def train_dataset(clips, cfg: FrontendConfig = DEFAULT_FRONTEND, batch_size: int = 64,
                  augment: AugmentConfig | None = None, seed: int = 0, *, labels=None,
                  noise_paths=None, cache_dir=None, progress: bool = True,
                  drop_remainder: bool = False):
    """Shuffled, batched, prefetched ``tf.data.Dataset`` of ``(features, labels)``.

    ``clips``: ``Dataset.split("train")`` (labels and noise files travel with it), a
    ``Dataset`` (its train split), or a clip list with ``labels=``. ``augment=None`` or an
    all-off config batches the cached features (fast); otherwise every epoch re-augments.
    Iterating the dataset again starts a new epoch with a new draw.
    """
    import tensorflow as tf

    cfg = cfg or DEFAULT_FRONTEND
    shape_x = (None, cfg.num_frames, cfg.n_mels)
    if augment is None or not (augment.any_waveform or augment.spec_augment):
        clips_l, labels_l, _ = _resolve(clips, labels, noise_paths)
        X, y = eval_arrays(clips_l, cfg, labels_l, cache_dir, progress)
        ds = tf.data.Dataset.from_tensor_slices((X, y))
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    maker = BatchMaker(clips, cfg, augment, labels, noise_paths, seed, cache_dir, progress)

    def gen():
        yield from maker.epoch(batch_size, drop_remainder=drop_remainder)

    ds = tf.data.Dataset.from_generator(
        gen, output_signature=(tf.TensorSpec(shape_x, tf.float32),
                               tf.TensorSpec((None,), tf.int32)))
    n = len(maker)
    batches = n // batch_size if drop_remainder else -(-n // batch_size)
    # A known length lets Keras show epoch progress and size its schedules.
    ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return ds.prefetch(2)
