"""Latent replay with a 1-bit packed memory (thesis "Binary Neural Networks at the Edge", 4.2).

Latent replay stores, instead of raw clips, the activations at a chosen stage boundary (the
``fmap`` that stage ``k`` hands to stage ``k + 1``). Replaying them lets the stages after the
boundary and the heads learn new words while rehearsing the old ones, without running the
frozen stages before it again. In a binary network the next stage binarises its input anyway,
so the memory keeps only the sign of each activation, bit-packed with :func:`numpy.packbits`:
one bit instead of 32 per value. Optionally one float16 magnitude per channel (the mean
``|x|``, the XNOR-Net scaling) is kept so the real-valued shortcut paths see a signal of the
right size; that costs ``2 * channels`` bytes per sample.

The memory is filled with class-balanced reservoir sampling (thesis Algorithm 4, after
Chrysakis & Moens 2020): while there is room every sample is stored; once full, a sample of a
class that is not among the largest ones replaces a random sample of a largest class, and a
sample of a largest class replaces one of its own class with probability ``m_c / n_c``
(stored / seen). Every class therefore ends with an (almost) equal share, whatever the order
and imbalance of the stream.

New samples are mixed with replayed ones at a configurable ratio (thesis 1:4: each minibatch
holds ``b`` new and ``4 b`` replayed samples).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np


# ---------------------------------------------------------------------------------------------
# 1-bit packing
# ---------------------------------------------------------------------------------------------
def pack_bits(x: np.ndarray) -> np.ndarray:
    """Binarise ``x (n, ...)`` to ``x >= 0`` and pack each sample to bytes: ``(n, ceil(size/8))``."""
    x = np.asarray(x)
    n = x.shape[0]
    return np.packbits((x >= 0).reshape(n, -1), axis=1)


def unpack_bits(packed: np.ndarray, shape: tuple, dtype=np.float32) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``(n, bytes)`` -> ``(n, *shape)`` with values in {-1, +1}."""
    packed = np.asarray(packed, np.uint8)
    size = int(np.prod(shape))
    bits = np.unpackbits(packed, axis=1, count=size)
    return (bits.astype(dtype) * 2 - 1).reshape((packed.shape[0],) + tuple(shape))


def channel_scales(x: np.ndarray) -> np.ndarray:
    """Mean ``|x|`` per sample and channel (last axis) as float16: ``(n, channels)``."""
    x = np.asarray(x, np.float32)
    axes = tuple(range(1, x.ndim - 1))
    return np.mean(np.abs(x), axis=axes).astype(np.float16)


# ---------------------------------------------------------------------------------------------
# class-balanced reservoir memory
# ---------------------------------------------------------------------------------------------
class ReplayMemory:
    """Fixed-size memory of 1-bit packed latent activations, class-balanced reservoir.

    ``shape`` is the shape of one activation (e.g. ``(h, w, c)`` of a stage's ``fmap``).
    ``with_scales`` keeps a float16 magnitude per channel beside the bits.
    """

    def __init__(self, capacity: int, shape: tuple, *, with_scales: bool = False, seed: int = 0,
                 meta_fields: int = 0):
        if capacity < 1:
            raise ValueError(f"replay memory capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.shape = tuple(int(s) for s in shape)
        self.with_scales = with_scales
        self.bytes_per_row = (int(np.prod(self.shape)) + 7) // 8
        self.bits = np.zeros((self.capacity, self.bytes_per_row), np.uint8)
        self.scales = (np.zeros((self.capacity, self.shape[-1]), np.float16)
                       if with_scales else None)
        self.labels = np.full(self.capacity, -1, np.int32)
        # Optional integers carried with each stored sample (e.g. its source word), moved with
        # it by the reservoir so a caller can tell which sample a slot holds.
        self.meta = np.zeros((self.capacity, int(meta_fields)), np.int32)
        self.size = 0
        self.seen: dict = {}  # class -> samples seen in the stream (n_c)
        self._rng = np.random.default_rng(seed)

    # -- sizes ------------------------------------------------------------------------------
    @property
    def bytes_per_sample(self) -> int:
        """Memory per stored sample: packed bits (+ channel scales) + a 2-byte label."""
        return self.bytes_per_row + (2 * self.shape[-1] if self.with_scales else 0) + 2

    @property
    def float32_bytes_per_sample(self) -> int:
        """The same sample stored as float32 activations (+ the 2-byte label)."""
        return 4 * int(np.prod(self.shape)) + 2

    def counts(self) -> dict:
        labels, n = np.unique(self.labels[:self.size], return_counts=True)
        return {int(c): int(k) for c, k in zip(labels, n)}

    def __len__(self) -> int:
        return self.size

    # -- filling (Algorithm 4) ----------------------------------------------------------------
    def _write(self, slot: int, bits_row, scale_row, label: int, meta=None) -> None:
        self.bits[slot] = bits_row
        if self.with_scales:
            self.scales[slot] = scale_row
        self.labels[slot] = label
        if self.meta.shape[1]:
            self.meta[slot] = 0 if meta is None else meta

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Offer a batch ``x (n, *shape)`` with labels ``y (n,)`` to the reservoir."""
        x = np.asarray(x)
        y = np.asarray(y).reshape(-1)
        if x.shape[1:] != self.shape:
            raise ValueError(f"activations {x.shape[1:]} do not match the memory's {self.shape}")
        packed = pack_bits(x)
        scales = channel_scales(x) if self.with_scales else [None] * len(y)
        for row, sc, label in zip(packed, scales, y):
            self.offer(row, sc, int(label))

    def offer(self, bits_row, scale_row, label: int, meta=None, on_replace=None) -> bool:
        """One step of class-balanced reservoir sampling; True if the sample was stored.

        ``on_replace(slot)``, if given, is called before a stored sample is overwritten."""
        self.seen[label] = self.seen.get(label, 0) + 1
        if self.size < self.capacity:
            self._write(self.size, bits_row, scale_row, label, meta)
            self.size += 1
            return True
        counts = self.counts()
        largest = max(counts.values())
        full_classes = [c for c, k in counts.items() if k == largest]
        if label not in full_classes:
            # Replace a random instance of a (random) largest class.
            victim_class = full_classes[self._rng.integers(len(full_classes))]
            slots = np.flatnonzero(self.labels[:self.size] == victim_class)
            slot = int(self._rng.choice(slots))
            if on_replace is not None:
                on_replace(slot)
            self._write(slot, bits_row, scale_row, label, meta)
            return True
        m_c, n_c = counts.get(label, 0), self.seen[label]
        if self._rng.random() <= m_c / n_c:
            slots = np.flatnonzero(self.labels[:self.size] == label)
            slot = int(self._rng.choice(slots))
            if on_replace is not None:
                on_replace(slot)
            self._write(slot, bits_row, scale_row, label, meta)
            return True
        return False

    # -- reading ----------------------------------------------------------------------------
    def get(self, idx=None, dtype=np.float32):
        """Unpacked activations ``(k, *shape)`` (values ±1, times the channel scale if kept)."""
        idx = np.arange(self.size) if idx is None else np.asarray(idx)
        x = unpack_bits(self.bits[idx], self.shape, dtype)
        if self.with_scales:
            x = x * self.scales[idx].astype(dtype).reshape((len(idx),) + (1,) * (len(self.shape) - 1) + (-1,))
        return x, self.labels[idx].astype(np.int64)

    def roundtrip(self, x: np.ndarray, dtype=np.float32) -> np.ndarray:
        """What ``x (n, *shape)`` looks like after storage (1 bit, times the scales if kept)."""
        x = np.asarray(x)
        out = unpack_bits(pack_bits(x), self.shape, dtype)
        if self.with_scales:
            sc = channel_scales(x).astype(dtype)
            out = out * sc.reshape((len(x),) + (1,) * (len(self.shape) - 1) + (-1,))
        return out

    def sample(self, k: int):
        if self.size == 0:
            raise ValueError("the replay memory is empty")
        return self.get(self._rng.integers(0, self.size, size=k))

    def save(self, path) -> None:
        np.savez(path, bits=self.bits[:self.size], labels=self.labels[:self.size],
                 scales=(self.scales[:self.size] if self.with_scales else np.zeros(0)),
                 shape=np.array(self.shape), capacity=self.capacity,
                 seen=np.array(sorted(self.seen.items()), dtype=np.int64).reshape(-1, 2))

    @classmethod
    def load(cls, path) -> "ReplayMemory":
        z = np.load(path)
        with_scales = z["scales"].size > 0
        mem = cls(int(z["capacity"]), tuple(z["shape"].tolist()), with_scales=with_scales)
        n = len(z["labels"])
        mem.bits[:n], mem.labels[:n], mem.size = z["bits"], z["labels"], n
        if with_scales:
            mem.scales[:n] = z["scales"]
        mem.seen = {int(c): int(k) for c, k in z["seen"]}
        return mem


# ---------------------------------------------------------------------------------------------
# mixing new and replayed samples
# ---------------------------------------------------------------------------------------------
def mixed_batches(x_new: np.ndarray, y_new: np.ndarray, memory: ReplayMemory, *,
                  ratio: float = 4.0, batch_new: int = 8, epochs: int = 1,
                  seed: int = 0) -> Iterator[tuple]:
    """Minibatches of ``batch_new`` new samples plus ``round(ratio * batch_new)`` replayed ones.

    ``x_new`` are latent activations at the memory's boundary (float, as produced by the frozen
    stages); the replayed ones come back from 1 bit. Yields ``(x, y)`` float32 / int64.
    """
    rng = np.random.default_rng(seed)
    n = len(y_new)
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(0, n, batch_new):
            idx = order[s:s + batch_new]
            k = int(round(ratio * len(idx))) if len(memory) else 0
            if k:
                xr, yr = memory.sample(k)
                yield (np.concatenate([np.asarray(x_new[idx], np.float32), xr]),
                       np.concatenate([np.asarray(y_new[idx], np.int64), yr]))
            else:
                yield np.asarray(x_new[idx], np.float32), np.asarray(y_new[idx], np.int64)


class LastStageLearner:
    """The last stage plus a linear head, retrained on new + replayed latents (TensorFlow).

    ``stage`` is the Keras model of the last stage (boundary latent in, ``{"embedding", ...}``
    out; :func:`last_stage_of_run` loads it). The head is the linear form ``(W, b)`` of the
    exit head on ``sign(embedding)`` (binary heads) or the embedding itself, so it continues
    from the deployed/CWR* head. Each :meth:`fit` runs ``epochs`` passes over the new samples
    in minibatches of ``batch_new`` new plus ``ratio * batch_new`` replayed ones. Batch-norm
    statistics stay frozen (a few dozen samples would only make them noisy); gamma/beta, the
    latent binary weights and the head learn with Adam.
    """

    def __init__(self, stage, w, b, sign_input: bool = True, *, lr: float = 1e-3,
                 epochs: int = 10, batch_new: int = 8, ratio: float = 4.0, seed: int = 0):
        import tensorflow as tf

        self.tf = tf
        self.stage = stage
        self.sign_input = bool(sign_input)
        self.w = tf.Variable(np.asarray(w, np.float32), name="head_w")
        self.b = tf.Variable(np.asarray(b, np.float32), name="head_b")
        self.lr, self.epochs, self.batch_new, self.ratio, self.seed = lr, epochs, batch_new, ratio, seed
        self.opt = tf.keras.optimizers.Adam(lr)

    def grow(self, n_classes: int) -> None:
        tf = self.tf
        c = int(self.w.shape[1])
        if n_classes > c:
            w = np.concatenate([self.w.numpy(), np.zeros((self.w.shape[0], n_classes - c), np.float32)], 1)
            b = np.concatenate([self.b.numpy(), np.zeros(n_classes - c, np.float32)])
            self.w, self.b = tf.Variable(w, name="head_w"), tf.Variable(b, name="head_b")
            self.opt = tf.keras.optimizers.Adam(self.lr)  # new variables, fresh slots

    def set_head(self, w, b) -> None:
        """Continue from another head (e.g. the CWR* head after this experience's update)."""
        tf = self.tf
        self.w = tf.Variable(np.asarray(w, np.float32), name="head_w")
        self.b = tf.Variable(np.asarray(b, np.float32), name="head_b")
        self.opt = tf.keras.optimizers.Adam(self.lr)

    def _logits(self, x, training=False):
        tf = self.tf
        e = self.stage(x, training=False)["embedding"]
        if self.sign_input:
            import larq as lq

            e = lq.quantizers.ste_sign(e)  # straight-through: gradients reach the stage
        return tf.matmul(e, self.w) + self.b

    def fit(self, x_new, y_new, memory: ReplayMemory) -> float:
        tf = self.tf
        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        variables = list(self.stage.trainable_variables) + [self.w, self.b]
        loss = float("nan")
        # New latents go through the same 1-bit storage as replayed ones: otherwise "real-valued
        # input" alone would tell new classes from old ones during training.
        x_new = memory.roundtrip(x_new)
        for x, y in mixed_batches(x_new, y_new, memory, ratio=self.ratio,
                                  batch_new=self.batch_new, epochs=self.epochs, seed=self.seed):
            with tf.GradientTape() as tape:
                loss_t = loss_fn(y, self._logits(x, training=True))
            grads = tape.gradient(loss_t, variables)
            self.opt.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
            loss = float(loss_t)
        return loss

    def logits(self, latents, batch: int = 64) -> np.ndarray:
        return np.concatenate([self._logits(np.asarray(latents[i:i + batch], np.float32)).numpy()
                               for i in range(0, len(latents), batch)])


def last_stage_of_run(run_dir, which: str = "best"):
    """The Keras model of a run's last stage (TensorFlow; weights as trained)."""
    from bnnkws.kws.training.train import load_run

    cfg, model = load_run(run_dir, which)
    return model.get_layer(f"stage{cfg.num_stages}")
