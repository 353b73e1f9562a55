"""Targets for embedding distillation from a pretrained speech model (issue 18).

The exits' embeddings are learnt from a few thousand clips of 12 (+ auxiliary) words, and a
linear probe on them separates words they never saw poorly (63 % on 10 FSDD digits, 5 clips).
Google's ``speech_embedding`` model, trained on far more speech, does much better on the same
probe (86 %), and a copy of it ships inside the ``openwakeword`` wheel (``embedding_model.onnx``
with its ``melspectrogram.onnx`` frontend; Apache-2.0, run by onnxruntime). Distillation makes
each exit's *binary* embedding linearly predictive of that model's embedding of the same clip,
so the new words' structure the teacher learnt from its data reaches the student.

Per clip ``i`` the teacher gives ``T`` windows of 96 values (76 mel frames, hop 8 frames:
``T = 3`` for a 1 s clip); the target is their mean, standardised per dimension over the
training clips and scaled to unit length::

    t_i = z_i / ||z_i||,   z_i = (mean_t e_{i,t} - mu) / sigma

and exit ``k`` learns ``p_k = W_k sign(emb_k)`` (a real-valued linear map, training only) under
the cosine loss ``1 - <p_k, t_i> / ||p_k||``. The teacher is needed only while training; it is
never imported by the runtime or the exported bundle.
"""
from __future__ import annotations

import sys
import warnings
from typing import Optional

import numpy as np

TEACHERS = ("speech-embedding",)
DIM = 96


class TeacherError(RuntimeError):
    """The teacher cannot be loaded or run (message names the package or file at fault)."""


def _features(ncpu: int = 1):
    try:
        from openwakeword.utils import AudioFeatures
    except ImportError as e:
        raise TeacherError(
            "--distill speech-embedding needs the openwakeword package (it ships the model): "
            "pip install 'bnn-kws[distill]'") from e
    try:
        with warnings.catch_warnings():  # onnxruntime's note that there is no CUDA provider
            warnings.filterwarnings("ignore", message=".*CUDAExecutionProvider")
            return AudioFeatures(ncpu=ncpu)
    except Exception as e:  # a broken install: name what failed to load
        raise TeacherError(f"openwakeword's speech-embedding model did not load: {e}") from e


class Teacher:
    """The pretrained model, loaded once: ``embed(waves)`` is the ``(n, DIM)`` mean embedding
    of each row of ``waves`` (float in [-1, 1], 16 kHz, all the same length, >= 1 s)."""

    def __init__(self, name: str = "speech-embedding", ncpu: int = 1):
        if name not in TEACHERS:
            raise TeacherError(f"unknown teacher {name!r}; choose one of {list(TEACHERS)}")
        self.name = name
        self.ncpu = ncpu
        self._features = _features(ncpu)

    def embed(self, waves: np.ndarray, batch_size: int = 64) -> np.ndarray:
        waves = np.asarray(waves, np.float32)
        if waves.ndim != 2 or waves.shape[1] < 16000:
            raise TeacherError(f"the teacher needs (n, >= 16000) waveforms, got {waves.shape}")
        pcm = (np.clip(waves, -1.0, 1.0) * 32767).astype(np.int16)
        e = self._features.embed_clips(pcm, batch_size=batch_size, ncpu=self.ncpu)
        return np.asarray(e, np.float32).reshape(len(pcm), -1, DIM).mean(axis=1)


def embed_clips(waves, count: int, teacher: Teacher, *, chunk: int = 256,
                progress: bool = True) -> np.ndarray:
    """``(count, DIM)`` teacher embeddings of ``waves(i0, i1)`` -> ``(i1 - i0, samples)``
    float rows, a chunk at a time (a corpus' waveforms need not fit in memory at once)."""
    from tqdm.auto import tqdm

    out = np.zeros((count, DIM), np.float32)
    with tqdm(total=count, desc=f"teacher ({teacher.name})", unit="clip", leave=False,
              disable=not progress or None, file=sys.stderr) as bar:
        for s in range(0, count, chunk):
            e = min(s + chunk, count)
            out[s:e] = teacher.embed(waves(s, e))
            bar.update(e - s)
    return out


def targets(emb: np.ndarray, ok: Optional[np.ndarray] = None,
            fit: Optional[np.ndarray] = None) -> np.ndarray:
    """Unit-length standardised targets (the docstring's ``t_i``); rows not ``ok`` are 0 (no
    target: the loss ignores them). ``mu, sigma`` come from the rows that are ``ok`` and in
    ``fit`` (default all: the training clips, so validation rows share their statistics)."""
    emb = np.asarray(emb, np.float64)
    ok = np.ones(len(emb), bool) if ok is None else np.asarray(ok, bool)
    use = ok if fit is None else ok & np.asarray(fit, bool)
    if not use.any():
        raise TeacherError("no clip has a teacher embedding")
    mu = emb[use].mean(axis=0)
    sigma = emb[use].std(axis=0) + 1e-6
    z = (emb - mu) / sigma
    z /= np.linalg.norm(z, axis=1, keepdims=True) + 1e-12
    z[~ok] = 0.0
    return z.astype(np.float32)


def cosine_loss(t, p):
    """Keras loss: ``(1 - cos(p, t)) * ||t||`` per clip, so all-zero targets count 0."""
    import tensorflow as tf

    t = tf.cast(t, tf.float32)
    p = tf.cast(p, tf.float32)
    has = tf.norm(t, axis=-1)
    cos = tf.reduce_sum(tf.math.l2_normalize(p, axis=-1) * t, axis=-1) / tf.maximum(has, 1e-12)
    return (1.0 - cos) * has


__all__ = ["TEACHERS", "DIM", "Teacher", "TeacherError", "embed_clips", "targets",
           "cosine_loss"]
