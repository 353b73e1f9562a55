"""A few-shot column beside many-shot ones: imprinting, weight aligning, a bias/scale correction
(numpy only).

An enrolled word has 5 takes of one voice; the exported words and ``_unknown_`` were trained on
thousands of clips. Every exit head is linear on a 1-bit embedding ``x`` in {-1, +1}^D, so
``||x|| = sqrt(D)`` for every clip and a few results of the few-shot literature become plain
column operations that fold into the head (no runtime change):

* **cosine / normalised columns** (Qi et al., CVPR 2018; Hou et al., CVPR 2019): ``cos(x, w) =
  x . w / (sqrt(D) ||w||)``; with a constant ``||x||``, comparing cosines is comparing
  logits of columns rescaled to one norm (:func:`align_norm`, which is also *weight aligning*,
  Zhao et al., CVPR 2020: the new column gets the old columns' mean norm);
* **imprinting / prototype** (Qi et al. 2018; Snell et al. 2017): the new column is the
  normalised mean of the positives' codes (:func:`imprint`). For ``±1`` codes the mean
  Hamming distance to the takes is ``(D - x . mean(t)) / 2``, so the prototype column *is*
  matching against the takes' own 1-bit codes by popcount, averaged over the takes;
* **bias correction** (BiC, Wu et al., CVPR 2019): the new logit becomes ``a * z + c``, two
  numbers fitted by class-balanced cross-entropy on held-out samples with every other logit
  fixed (:func:`fit_affine`; convex, Newton's method).

:func:`few_shot_column` applies them in one call: what ``deploy.enroll`` runs per exit head.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

RULES = ("cwr", "cwr+align", "cwr+bic", "imprint", "imprint+cwr", "imprint+cwr+bic")


def old_norm(w: np.ndarray, cols: Sequence[int]) -> float:
    """Mean L2 norm of the columns ``cols`` of ``w (D, C)`` (the many-shot reference)."""
    w = np.asarray(w, np.float64)
    return float(np.mean(np.linalg.norm(w[:, list(cols)], axis=0)))


def prototype(x: np.ndarray) -> np.ndarray:
    """Unit-norm mean of the positives' head inputs ``x (n, D)`` (their class mean)."""
    m = np.asarray(x, np.float64).mean(axis=0)
    n = np.linalg.norm(m)
    return m / n if n > 0 else m


def imprint(x_pos: np.ndarray, norm: float) -> np.ndarray:
    """A column of norm ``norm`` along the positives' prototype (weight imprinting)."""
    return (prototype(x_pos) * float(norm)).astype(np.float32)


def align_norm(w: np.ndarray, b: np.ndarray, col: int, norm: float, scale_bias: bool = True):
    """Weight aligning: column ``col`` of ``w`` rescaled to ``norm`` (its bias by the same factor
    when ``scale_bias``: the whole logit is rescaled). Returns new ``(w, b)``."""
    w, b = np.array(w, np.float32), np.array(b, np.float32)
    n = float(np.linalg.norm(w[:, col]))
    if n > 0:
        g = float(norm) / n
        w[:, col] *= g
        if scale_bias:
            b[col] *= g
    return w, b


def fit_affine(z: np.ndarray, y: np.ndarray, col: int, *, iters: int = 50,
               ridge: float = 1e-3, a_min: float = 0.05) -> tuple:
    """BiC's correction of one class: ``(a, c)`` minimising the class-balanced cross-entropy of
    ``z'`` = ``z`` with ``z'[:, col] = a * z[:, col] + c`` on held-out logits ``z (n, C)`` with
    labels ``y (n,)``, every other logit fixed. Convex in ``(a, c)``; Newton with a small ridge
    towards ``(1, 0)``; ``a`` stays >= ``a_min`` (the class's own score may not turn
    around). Each class present weighs the same in total."""
    z = np.asarray(z, np.float64)
    y = np.asarray(y, np.int64)
    if not len(y) or not np.any(y == col) or np.all(y == col):
        return 1.0, 0.0
    classes, counts = np.unique(y, return_counts=True)
    wt = 1.0 / counts[np.searchsorted(classes, y)]
    wt = wt / wt.sum()
    s = z[:, col].copy()
    rest = np.delete(z, col, axis=1)
    m = rest.max(axis=1)
    lse_rest = m + np.log(np.exp(rest - m[:, None]).sum(axis=1))
    pos = (y == col).astype(np.float64)
    a, c = 1.0, 0.0
    for _ in range(iters):
        t = a * s + c
        p = 1.0 / (1.0 + np.exp(-(t - lse_rest)))  # softmax share of the class
        g = wt * (p - pos)
        h = wt * p * (1 - p)
        grad = np.array([g @ s + ridge * (a - 1), g.sum() + ridge * c])
        hess = np.array([[h @ (s * s) + ridge, h @ s], [h @ s, h.sum() + ridge]])
        step = np.linalg.solve(hess, grad)
        a, c = max(a - step[0], a_min), c - step[1]
        if np.abs(step).max() < 1e-6:
            break
    return float(a), float(c)


def apply_affine(w: np.ndarray, b: np.ndarray, col: int, a: float, c: float):
    """Fold ``a * z + c`` for column ``col`` into the head: new ``(w, b)``."""
    w, b = np.array(w, np.float32), np.array(b, np.float32)
    w[:, col] *= a
    b[col] = a * b[col] + c
    return w, b


def learn_column(head, rule: str, target: int, x_new: np.ndarray, y_new: np.ndarray,
                 replay: tuple, positives: np.ndarray, held_out: Optional[tuple], *,
                 takes: int, ratio: float, batch_new: int, evidence: dict,
                 margin: float = 0.0, margin_against: Optional[Sequence[int]] = None) -> None:
    """Teach ``head`` (a :class:`bnnkws.kws.continual.cwr.CWRStar` that already has the
    ``target`` column) the word by ``rule`` (:data:`RULES`), in place.

    ``x_new``/``y_new``: the takes, their augmented copies and the user's negatives;
    ``replay``: ``(x, y)`` memory samples to rehearse; ``positives``: every sample of the word
    (takes, copies, its memory samples) for imprinting; ``held_out``: ``(x, y)`` samples kept
    out of training (fresh copies of the takes, held-out memory) for BiC's fit, or None.
    ``imprint`` sets the column to the positives' prototype (the old columns' mean norm,
    their mean bias) and trains nothing, so the old words stay exactly as they were;
    ``imprint+cwr`` starts CWR* there; ``cwr+align`` rescales the CWR* column to the old norm;
    ``...+bic`` fits ``a z + c`` on ``held_out``. ``margin`` (> 0) trains the word with that
    margin (against ``margin_against`` only, when given: :meth:`CWRStar.fit_mixed`)."""
    others = [c for c in range(head.num_classes) if c != target]
    ref = old_norm(head.cw, others)
    if rule.startswith("imprint"):
        head.cw[:, target] = imprint(positives, ref)
        head.cb[target] = float(np.mean(head.cb[others]))
    if rule == "imprint":
        head.past[target] += int(takes)
    else:
        mkw = {"margin": {target: margin}, "margin_against": margin_against} if margin else {}
        head.fit_mixed(x_new, y_new, replay[0], replay[1], ratio=ratio, batch_new=batch_new,
                       evidence=evidence, **mkw)
    if rule == "cwr+align":
        head.cw, head.cb = align_norm(head.cw, head.cb, target, ref)
    if rule.endswith("bic") or rule == "imprint":
        if held_out is not None:
            zc = np.asarray(held_out[0], np.float64) @ head.cw + head.cb
            head.cw, head.cb = apply_affine(head.cw, head.cb, target,
                                            *fit_affine(zc, held_out[1], target))


def parse_rule(rule: Optional[str]) -> str:
    r = "cwr" if rule is None else str(rule).strip().lower()
    if r not in RULES:
        raise ValueError(f"enrolment rule {rule!r} is not one of {', '.join(RULES)}")
    return r


__all__ = ["RULES", "old_norm", "prototype", "imprint", "align_norm", "fit_affine",
           "apply_affine", "learn_column", "parse_rule"]
