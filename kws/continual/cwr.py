"""CWR* on the exit heads, in numpy alone (thesis "Binary Neural Networks at the Edge", ch. 4).

The binary backbone stays frozen; only the linear classifier of each exit learns. Every head
keeps *consolidated* weights ``cw`` (what inference uses), *temporary* weights ``tw`` (trained
on the current batch only) and ``past[i]``, the number of samples of class ``i`` consolidated
so far. One training batch (an "experience": the clips of the words being enrolled) runs
Algorithm 3:

1. ``tw[i] = cw[i]`` for the classes ``i`` present in the batch, ``tw[i] = 0`` for the others;
2. train ``tw`` with SGD on softmax cross-entropy; the gradient is closed form
   (thesis eq. 4.7-4.10): for logits ``z = x tw + b`` and ``a = softmax(z)``,
   ``dL/dz_k = a_k - y_k`` so ``dL/dtw[:, k] = x (a_k - y_k)`` averaged over the minibatch;
3. consolidate, for every class ``i`` in the batch with ``cur_i`` samples:
   ``w_past = sqrt(past_i / cur_i)``,
   ``cw[i] = (cw[i] * w_past + tw[i] - mean(tw)) / (w_past + 1)``, ``past_i += cur_i``.

``mean(tw)`` is the scalar mean of the temporary weights of the classes in the batch (bias
included), as in Lomonaco et al.'s reference implementation of CWR*: subtracting it keeps the
scale of the newly trained units comparable with the consolidated ones. A new class starts with
``past = 0`` so ``w_past = 0`` and its unit is simply ``tw[i] - mean(tw)``.

Weights are stored as ``W (D, C)`` and ``b (C,)`` - one column per class, the layout of a Keras
``Dense`` kernel - and the bias is consolidated exactly like a weight (it is one more input
fixed at 1).

Quantized arithmetic (thesis "double quantization"): the forward pass uses ``lp``-bit copies of
the inputs and weights, the weights themselves are kept and updated in ``hp`` bits. Both are
simulated as signed fixed point in numpy (see :func:`fixed_point`); ``None`` means float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

BITS_CHOICES = (8, 16, 32, None)


# ---------------------------------------------------------------------------------------------
# fixed-point simulation
# ---------------------------------------------------------------------------------------------
def fixed_point(x: np.ndarray, bits: Optional[int], max_abs: Optional[float] = None) -> np.ndarray:
    """Round ``x`` to signed ``bits``-bit dynamic fixed point (one format per tensor).

    The integer part gets just enough bits for ``max_abs`` (default ``max|x|``), the rest are
    fractional: with ``q = 2**-(bits - 1 - ceil(log2(max_abs)))`` values are rounded to the
    nearest multiple of ``q`` and saturated to ``[-2**(bits-1) q, (2**(bits-1) - 1) q]``. This
    is what an integer MCU would hold, and it makes small SGD steps vanish below the LSB when
    the bits are too few - the effect the quantization study measures. ``bits=None``: float32.
    """
    x = np.asarray(x, dtype=np.float64)
    if bits is None:
        return x.astype(np.float32)
    if bits < 2:
        raise ValueError(f"fixed point needs at least 2 bits, got {bits}")
    m = float(np.max(np.abs(x))) if max_abs is None else float(max_abs)
    if not m > 0 or not math.isfinite(m):
        return np.zeros_like(x, dtype=np.float32) if not m > 0 else x.astype(np.float32)
    e = math.ceil(math.log2(m))
    int_bits = e + 1 if m == 2.0 ** e else e  # m itself must fit below the top code
    frac_bits = bits - 1 - int_bits
    q = 2.0 ** (-frac_bits)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return (np.clip(np.round(x / q), lo, hi) * q).astype(np.float32)


def parse_bits(text) -> Optional[int]:
    """``"8"|"16"|"32"|"float"|None`` -> 8|16|32|None (float)."""
    if text is None:
        return None
    s = str(text).strip().lower()
    if s in ("float", "fp32", "float32", "none", "f"):
        return None
    try:
        b = int(s)
    except ValueError:
        raise ValueError(f"bits must be one of 8, 16, 32 or 'float', got {text!r}") from None
    if b not in (8, 16, 32):
        raise ValueError(f"bits must be one of 8, 16, 32 or 'float', got {text!r}")
    return b


def bits_name(bits: Optional[int]) -> str:
    return "float" if bits is None else str(bits)


@dataclass(frozen=True)
class Precision:
    """Forward pass in ``lp`` bits, weights stored/updated in ``hp`` bits (``None`` = float)."""

    lp: Optional[int] = None
    hp: Optional[int] = None

    @property
    def name(self) -> str:
        return f"lp={bits_name(self.lp)}/hp={bits_name(self.hp)}"


FLOAT = Precision()


# ---------------------------------------------------------------------------------------------
# numerics
# ---------------------------------------------------------------------------------------------
def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy_grad(x: np.ndarray, probs: np.ndarray, y: np.ndarray):
    """Closed-form softmax cross-entropy gradient (thesis eq. 4.7-4.10), mean over the batch.

    ``x (B, D)`` inputs, ``probs (B, C)`` softmax outputs, ``y (B,)`` int labels.
    Returns ``(dW (D, C), db (C,))`` with ``dL/dz = probs - onehot(y)``.
    """
    delta = np.array(probs, dtype=np.float64)
    delta[np.arange(len(y)), y] -= 1.0
    delta /= len(y)
    return x.T.astype(np.float64) @ delta, delta.sum(axis=0)


def cross_entropy(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))))


# ---------------------------------------------------------------------------------------------
# CWR*
# ---------------------------------------------------------------------------------------------
@dataclass
class CWRStar:
    """One exit head under CWR*: ``logits = x @ cw + cb`` on the head's input features.

    ``x`` is whatever the linear layer sees (for the exported heads: the stage embedding after
    the head's folded batch norm, and its sign if the head is binary; see
    :mod:`bnnkws.deploy.enroll`).
    """

    cw: np.ndarray  # (D, C) consolidated weights
    cb: np.ndarray  # (C,) consolidated bias
    past: np.ndarray = None  # (C,) samples consolidated per class
    lr: float = 0.05
    epochs: int = 30
    batch_size: int = 16
    weight_decay: float = 0.0
    precision: Precision = field(default_factory=Precision)
    seed: int = 0
    train_bias: bool = True
    target_loss: Optional[float] = None  # stop SGD once the batch's mean CE is below this

    def __post_init__(self):
        self.cw = np.array(self.cw, dtype=np.float32)
        self.cb = np.array(self.cb, dtype=np.float32).reshape(-1)
        if self.cw.ndim != 2 or self.cw.shape[1] != self.cb.shape[0]:
            raise ValueError(f"head weights {self.cw.shape} and bias {self.cb.shape} disagree")
        if self.past is None:
            self.past = np.zeros(self.num_classes, dtype=np.int64)
        self.past = np.array(self.past, dtype=np.int64).reshape(-1)
        if self.past.shape[0] != self.num_classes:
            raise ValueError(f"past counts {self.past.shape} for {self.num_classes} classes")
        self._rng = np.random.default_rng(self.seed)
        # Weights live in hp bits from the start.
        self.cw, self.cb = self._store(self.cw, self.cb)

    # -- shape ----------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.cw.shape[1]

    @property
    def dim(self) -> int:
        return self.cw.shape[0]

    def add_class(self) -> int:
        """Add one output unit (zero weights, no past samples); returns its index."""
        self.cw = np.concatenate([self.cw, np.zeros((self.dim, 1), np.float32)], axis=1)
        self.cb = np.concatenate([self.cb, np.zeros(1, np.float32)])
        self.past = np.concatenate([self.past, np.zeros(1, np.int64)])
        return self.num_classes - 1

    def remove_class(self, index: int) -> None:
        keep = [i for i in range(self.num_classes) if i != index]
        self.cw, self.cb, self.past = self.cw[:, keep], self.cb[keep], self.past[keep]

    # -- arithmetic -------------------------------------------------------------------------
    def _store(self, w, b):
        """Round weights to the hp format (one fixed-point format for weights and bias)."""
        hp = self.precision.hp
        if hp is None:
            return np.asarray(w, np.float32), np.asarray(b, np.float32)
        m = max(float(np.max(np.abs(w))) if w.size else 0.0, float(np.max(np.abs(b))) if b.size else 0.0)
        return fixed_point(w, hp, m), fixed_point(b, hp, m)

    def _forward(self, x, w, b):
        lp = self.precision.lp
        if lp is not None:
            m = max(float(np.max(np.abs(w))), float(np.max(np.abs(b))) if b.size else 0.0)
            w, b, x = fixed_point(w, lp, m), fixed_point(b, lp, m), fixed_point(x, lp)
        return np.asarray(x, np.float64) @ np.asarray(w, np.float64) + b

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Inference with the consolidated weights (lp-bit forward)."""
        return self._forward(np.atleast_2d(x), self.cw, self.cb)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(x), axis=1)

    # -- Algorithm 3 ------------------------------------------------------------------------
    def train_tw(self, x: np.ndarray, y: np.ndarray, tw: np.ndarray, tb: np.ndarray):
        """SGD on softmax cross-entropy over all units, starting from ``(tw, tb)``."""
        x = np.asarray(x, np.float32)
        n = len(y)
        for _ in range(self.epochs):
            if self.target_loss is not None:
                probs = softmax(self._forward(x, tw, tb))
                if cross_entropy(probs, y) < self.target_loss:
                    break
            order = self._rng.permutation(n)
            for s in range(0, n, self.batch_size):
                idx = order[s:s + self.batch_size]
                probs = softmax(self._forward(x[idx], tw, tb))
                dw, db = cross_entropy_grad(x[idx], probs, y[idx])
                if self.weight_decay:
                    dw = dw + self.weight_decay * tw
                tw, tb = self._store(tw - self.lr * dw,
                                     tb - self.lr * db if self.train_bias else tb)
        return tw, tb

    def consolidate(self, tw: np.ndarray, tb: np.ndarray, counts: dict,
                    advance: Optional[set] = None) -> None:
        """Consolidation step of Algorithm 3 for the classes in ``counts`` ({class: cur_i}).

        ``advance``: the classes whose ``past`` grows by ``cur_i`` (default: all of them);
        replayed classes are rehearsed, not new evidence, so mixed batches leave theirs alone.
        """
        classes = sorted(int(c) for c in counts)
        # Scalar mean over the batch classes' temporary units (weights and bias).
        mean_tw = float(np.mean(np.concatenate([tw[:, classes].ravel(), tb[classes]])))
        cw, cb = self.cw.astype(np.float64), self.cb.astype(np.float64)
        for i in classes:
            cur = int(counts[i])
            w_past = math.sqrt(self.past[i] / cur)
            cw[:, i] = (cw[:, i] * w_past + tw[:, i] - mean_tw) / (w_past + 1.0)
            cb[i] = (cb[i] * w_past + tb[i] - mean_tw) / (w_past + 1.0)
            if advance is None or i in advance:
                self.past[i] += cur
        self.cw, self.cb = self._store(cw, cb)

    def fit_batch(self, x: np.ndarray, y: np.ndarray) -> dict:
        """Run Algorithm 3 on one training batch; returns ``{class: cur_i}``."""
        x = np.asarray(x, np.float32)
        y = np.asarray(y, np.int64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features {x.shape} do not match head input size {self.dim}")
        if len(y) != len(x) or len(y) == 0:
            raise ValueError(f"need as many labels as features, got {len(y)} and {len(x)}")
        if y.min() < 0 or y.max() >= self.num_classes:
            raise ValueError(f"labels outside 0..{self.num_classes - 1}: {sorted(set(y.tolist()))}")
        classes, cur = np.unique(y, return_counts=True)
        counts = {int(c): int(n) for c, n in zip(classes, cur)}
        tw = np.zeros_like(self.cw)
        tb = np.zeros_like(self.cb)
        tw[:, classes] = self.cw[:, classes]
        tb[classes] = self.cb[classes]
        tw, tb = self.train_tw(x, y, *self._store(tw, tb))
        self.consolidate(tw, tb, counts)
        return counts

    def fit_mixed(self, x_new: np.ndarray, y_new: np.ndarray, x_replay: np.ndarray,
                  y_replay: np.ndarray, *, ratio: float = 4.0, batch_new: int = 8,
                  evidence: Optional[dict] = None, margin: Optional[dict] = None,
                  margin_against: Optional[Sequence[int]] = None) -> dict:
        """Algorithm 3 on mixed minibatches: new samples beside class-balanced replayed ones.

        Every SGD minibatch holds ``b <= batch_new`` new samples and ``round(ratio * b)``
        replayed ones, the replayed classes taking turns
        (:func:`bnnkws.kws.continual.memory.balanced_draw`), so the new unit learns against every
        old class and the old units keep seeing their own words. ``tw`` starts from ``cw`` for every
        class in either set (zero for a new class); the step is the same closed-form cross-entropy
        gradient as :meth:`train_tw` over the whole mixed minibatch. Consolidation then treats every
        class present, with
        ``cur_i`` = its samples in ``y_new`` (new evidence: ``past_i += cur_i``) or, for a class
        seen only in the replay, its distinct replayed samples (``past_i`` unchanged).
        ``evidence`` ({class: n}) replaces a new class's count in ``y_new``: augmented copies
        of a take are not new evidence. ``margin`` ({class: m}) trains those classes with a
        margin (LDAM, Cao et al. 2019): a sample of class ``c`` has ``m`` subtracted from its own
        logit in the loss, so SGD keeps pushing until it wins by ``m``; the head itself is
        unchanged at inference. With ``margin_against`` (class indices) the margin is taken
        against those rivals only: their logits get ``+m`` for such a sample instead. Returns
        ``{class: cur_i}``.
        """
        from bnnkws.kws.continual.memory import balanced_draw, class_members

        x_new = np.asarray(x_new, np.float32)
        y_new = np.asarray(y_new, np.int64)
        x_rep = np.asarray(x_replay, np.float32).reshape(-1, self.dim)
        y_rep = np.asarray(y_replay, np.int64).reshape(-1)
        for x, y, what in ((x_new, y_new, "new"), (x_rep, y_rep, "replayed")):
            if len(y) and (x.ndim != 2 or x.shape[1] != self.dim or len(x) != len(y)):
                raise ValueError(f"{what} features {x.shape} / labels {y.shape} do not match "
                                 f"head input size {self.dim}")
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(f"{what} labels outside 0..{self.num_classes - 1}")
        if not len(y_new):
            raise ValueError("mixed minibatches need at least one new sample")
        new_cls, new_cur = np.unique(y_new, return_counts=True)
        counts = {int(c): int(n) for c, n in zip(new_cls, new_cur)}
        for c, n in (evidence or {}).items():
            if int(c) in counts:
                counts[int(c)] = max(1, int(n))
        for c in np.unique(y_rep):
            if int(c) not in counts:
                counts[int(c)] = int(np.sum(y_rep == c))
        classes = np.array(sorted(counts))
        tw, tb = np.zeros_like(self.cw), np.zeros_like(self.cb)
        tw[:, classes], tb[classes] = self.cw[:, classes], self.cb[classes]
        tw, tb = self._store(tw, tb)
        n = len(y_new)
        members = class_members(y_rep)
        m_of = None
        rivals = None if margin_against is None else np.asarray(list(margin_against), np.int64)
        if margin:
            m_of = np.zeros(self.num_classes)
            for c, m in margin.items():
                m_of[int(c)] = float(m)
        for _ in range(self.epochs):
            order = self._rng.permutation(n)
            for s in range(0, n, batch_new):
                idx = order[s:s + batch_new]
                k = int(round(ratio * len(idx))) if len(y_rep) else 0
                r = balanced_draw(y_rep, k, self._rng, members)
                x = np.concatenate([x_new[idx], x_rep[r]])
                y = np.concatenate([y_new[idx], y_rep[r]])
                z = self._forward(x, tw, tb)
                if m_of is not None and rivals is None:
                    z[np.arange(len(y)), y] -= m_of[y]
                elif m_of is not None:
                    z[:, rivals] += m_of[y][:, None]
                dw, db = cross_entropy_grad(x, softmax(z), y)
                if self.weight_decay:
                    dw = dw + self.weight_decay * tw
                tw, tb = self._store(tw - self.lr * dw,
                                     tb - self.lr * db if self.train_bias else tb)
        self.consolidate(tw, tb, counts, advance={int(c) for c in new_cls})
        return counts

    def state(self) -> dict:
        return {"W": self.cw.copy(), "b": self.cb.copy(), "past": self.past.copy()}


# ---------------------------------------------------------------------------------------------
# plain SGD heads (baselines for the evaluation)
# ---------------------------------------------------------------------------------------------
def sgd_finetune(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, *, lr=0.05,
                 epochs=30, batch_size=16, precision: Precision = FLOAT, seed=0):
    """Naive fine-tuning: every unit trained on ``(x, y)`` only (the forgetting baseline)."""
    head = CWRStar(w, b, lr=lr, epochs=epochs, batch_size=batch_size, precision=precision,
                   seed=seed)
    return head.train_tw(np.asarray(x, np.float32), np.asarray(y, np.int64), head.cw, head.cb)


def train_joint(dim: int, num_classes: int, x: np.ndarray, y: np.ndarray, *, lr=0.05,
                epochs=60, batch_size=32, seed=0, init: Optional[Sequence[np.ndarray]] = None):
    """Joint retraining of a head on all classes' data at once (the upper bound)."""
    w = np.zeros((dim, num_classes), np.float32) if init is None else init[0]
    b = np.zeros(num_classes, np.float32) if init is None else init[1]
    head = CWRStar(w, b, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed)
    return head.train_tw(np.asarray(x, np.float32), np.asarray(y, np.int64), head.cw, head.cb)
