"""A bundle's exit heads in their linear form, and the embeddings that feed them (numpy +
interpreter).

Head arithmetic is the bundle's (:func:`bnnkws.deploy.bundle.head_logits`): ``logits = scale *
(s_in(embedding) @ s_k(kernel)) + bias``. For CWR* an exported binary head is folded into its
real linear form ``W = scale * sign(kernel)`` on ``sign(embedding)`` (:func:`linear_head`);
CWR* then learns real columns, and the head is written back with ``sign_kernel=False, scale=1``
(:func:`cwr_head`) - the same runtime code path computes old and enrolled words. Enrolment
(:mod:`bnnkws.deploy.enroll`) and the replay memory's build (:mod:`bnnkws.deploy.memory`) both
start here.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .bundle import Bundle, normalize_head


def linear_head(head) -> tuple:
    """An exported head as ``(W (D, C), b (C,), sign_input)`` with ``logits = s(x) @ W + b``.

    The binary kernel and its scale fold into a real matrix ``W = scale * sign(kernel)``; the
    input sign (if any) stays, since CWR* trains on what the head sees.
    """
    h = normalize_head(head)
    w = h["kernel"]
    if h["sign_kernel"]:
        w = np.where(w >= 0, 1.0, -1.0).astype(np.float32)
    return (np.float32(h["scale"]) * w).astype(np.float32), h["bias"], bool(h["sign_input"])


def head_input(sign_input: bool) -> Callable[[np.ndarray], np.ndarray]:
    """What the linear part of a head sees: the (signed) stage ``embedding``."""
    if sign_input:
        return lambda e: np.where(np.asarray(e) >= 0, 1.0, -1.0).astype(np.float32)
    return lambda e: np.asarray(e, np.float32)


def cwr_head(w, b, sign_input: bool) -> dict:
    """A CWR* head in the bundle's head format (real kernel, scale 1)."""
    return {"kernel": np.asarray(w, np.float32), "bias": np.asarray(b, np.float32),
            "scale": 1.0, "sign_input": bool(sign_input), "sign_kernel": False}


class Embedder:
    """Per-exit embeddings of 1 s clips through the bundle's interpreter (no TensorFlow)."""

    def __init__(self, bundle: Bundle, detector=None, backend: str = "auto"):
        self.bundle = bundle
        if detector is None:
            from .runtime import Detector

            detector = Detector(bundle, backend=backend)
        self.detector = detector
        self.exits = bundle.exits

    def one(self, audio: np.ndarray) -> list:
        out = self.detector.embeddings(audio=np.asarray(audio, np.float32))
        if isinstance(out, dict):
            return [np.asarray(out[k], np.float32).reshape(-1) for k in sorted(out)]
        return [np.asarray(e, np.float32).reshape(-1) for e in out]

    def __call__(self, clips: np.ndarray, progress: bool = False) -> list:
        """``(n, samples)`` -> list per exit of ``(n, D_k)`` embeddings."""
        it = clips
        if progress:
            from tqdm import tqdm

            it = tqdm(clips, desc="embedding", unit="clip", leave=False)
        rows = [self.one(c) for c in it]
        return [np.stack([r[i] for r in rows]) for i in range(len(self.exits))]
