"""What an exit head computes, in numpy (no TensorFlow): CWR* and tests reproduce logits with it.

An exit k takes stage k's feature map ``fmap`` (h, w, c) and computes

    embedding = BatchNorm(mean over h, w of fmap)             # (D,)  stage output "embedding"
    z         = sign(embedding) @ sign(kernel)                 # (C,)  binary dense, no bias
    logits    = scale * z + bias                               # (C,)  stage output "logits"

with ``sign(x) = +1 if x >= 0 else -1`` (Larq's ste_sign maps 0 to +1), ``kernel`` (D, C) the
latent real weights of the QuantDense (only their signs matter), ``scale`` a learned scalar
(initialised to 1/sqrt(D), so logits start with unit spread instead of the +-D of a bare binary
dense) and ``bias`` (C,) learned. The real-valued twin (``binary=False``) skips both signs:
``logits = scale * (embedding @ kernel) + bias``.
"""
from __future__ import annotations

import numpy as np


def sign(x: np.ndarray) -> np.ndarray:
    """Larq/LCE sign: +1 for x >= 0, -1 otherwise."""
    return np.where(np.asarray(x) >= 0, 1.0, -1.0).astype(np.float32)


def exit_logits(embedding: np.ndarray, kernel: np.ndarray, scale: float, bias: np.ndarray,
                binary: bool = True) -> np.ndarray:
    """Logits of an exit head from its embedding(s) ``(..., D)`` -> ``(..., C)``."""
    e = np.asarray(embedding, dtype=np.float32)
    w = np.asarray(kernel, dtype=np.float32)
    if e.shape[-1] != w.shape[0]:
        raise ValueError(f"embedding has {e.shape[-1]} features, head kernel expects {w.shape[0]}")
    if binary:
        e, w = sign(e), sign(w)
    return (np.float32(scale) * (e @ w) + np.asarray(bias, dtype=np.float32)).astype(np.float32)
