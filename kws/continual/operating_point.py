"""Per-word operating points: a detection threshold and a minimum exit (numpy only).

A word enrolled from a few takes is a weak unit beside classes trained on thousands of clips.
Its early heads (small embeddings) may not tell it from similar speech at all, and one global
detection threshold does not fit both. So each enrolled word gets

* ``min_exit`` m: an exit before m may not *decide* for this word (the early-exit rule runs on
  to the next stage; the last exit always decides), and
* ``threshold`` t: the listener fires the word only when its averaged probability exceeds t.

:func:`decide` is the early-exit rule with per-label minimum exits; the runtime
(:class:`bnnkws.deploy.runtime.Detector`) applies the same rule clip by clip.
:func:`calibrate` picks ``(t, m)`` on negatives (the replay memory's other words and background,
the user's negatives) and augmented takes of the word: for every candidate m, t is the lowest
threshold at which the negatives' false-accept rate stays within the target, and the m with the
best recall on the takes wins (ties: the earliest, cheapest exit).

False accepts per hour become a per-window rate by counting one chance per second of stream:
``rate = target_fa_per_hour / 3600``. With a few hundred negatives that rate is below one
sample, so t is then the highest negative score: the calibration errs on the quiet side.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Optional, Sequence

import numpy as np

from bnnkws.kws.policy import ExitPolicy, entropy, softmax

DEFAULT_TARGET_FA_PER_HOUR = 2.0
THRESHOLD_FLOOR = 0.5  # never below: the smoother's averages of unrelated speech reach ~0.4
THRESHOLD_CEIL = 0.99
CONFUSABLE_SHARE = 0.5  # half the takes heard as one existing word: warn at enrolment


def decide(logits: np.ndarray, policy: ExitPolicy, min_exits: Optional[Sequence[int]] = None):
    """The early-exit rule with per-label minimum exits, over ``logits (N, E, C)``.

    Returns ``(exit (N,) 1-based, probs (N, C) at that exit)``. At exit k a clip leaves when
    ``policy`` accepts it there *and* its top label's minimum exit is <= k; the last exit
    always decides.
    """
    z = np.asarray(logits, np.float64)
    n, e, c = z.shape
    me = np.ones(c, np.int64) if min_exits is None else np.asarray(min_exits, np.int64)
    done = np.zeros(n, bool)
    exit_ = np.full(n, e, np.int64)
    probs = np.zeros((n, c))
    for k in range(e):
        p = softmax(z[:, k], policy.temperature_at(k + 1))
        if k == e - 1:
            ok = np.ones(n, bool)
        else:
            if policy.criterion == "entropy":
                ok = entropy(p, normalized=policy.normalized) < policy.delta_at(k + 1)
            else:
                ok = p.max(axis=1) >= policy.delta_at(k + 1)
            ok &= (k + 1) >= policy.min_exit
            ok &= (k + 1) >= me[np.argmax(p, axis=1)]
        take = ok & ~done
        exit_[take] = k + 1
        probs[take] = p[take]
        done |= ok
    return exit_, probs


def threshold_for_rate(neg_scores: np.ndarray, rate: float) -> float:
    """The lowest t with ``mean(neg_scores > t) <= rate``."""
    s = np.sort(np.asarray(neg_scores, np.float64))[::-1]
    if s.size == 0:
        return 0.0
    allowed = int(math.floor(rate * s.size + 1e-9))
    return float(s[allowed]) if allowed < s.size else 0.0


def calibrate(pos_logits: np.ndarray, neg_logits: np.ndarray, policy: ExitPolicy, word: int,
              min_exits: Sequence[int], *, target_fa_per_hour: float = DEFAULT_TARGET_FA_PER_HOUR,
              floor: float = THRESHOLD_FLOOR, ceil: float = THRESHOLD_CEIL) -> dict:
    """Threshold and minimum exit for label ``word`` (see the module docstring).

    ``pos_logits``/``neg_logits`` are ``(N, E, C)``; ``min_exits`` the other labels' minimum
    exits (C,). Returns ``{threshold, min_exit, recall, negative_rate, positives, negatives,
    target_fa_per_hour, per_exit: [...]}`` (recall and rate on these samples, at t).
    """
    e = np.asarray(pos_logits).shape[1]
    rate = float(target_fa_per_hour) / 3600.0
    best, rows = None, []
    for m in range(1, e + 1):
        me = np.array(min_exits, np.int64).copy()
        me[word] = m
        _, pp = decide(pos_logits, policy, me)
        _, pn = decide(neg_logits, policy, me)
        sp, sn = pp[:, word], pn[:, word]
        t = float(np.clip(threshold_for_rate(sn, rate), floor, ceil))
        rec = float(np.mean(sp > t)) if len(sp) else 0.0
        fr = float(np.mean(sn > t)) if len(sn) else 0.0
        rows.append({"min_exit": m, "threshold": t, "recall": rec, "negative_rate": fr})
        if best is None or rec > best["recall"] + 1e-9:
            best = rows[-1]
    return {**best, "positives": int(len(pos_logits)), "negatives": int(len(neg_logits)),
            "target_fa_per_hour": float(target_fa_per_hour), "per_exit": rows}


def heard_as(logits: np.ndarray, policy: ExitPolicy, labels: Sequence[str],
             min_exits: Optional[Sequence[int]] = None) -> dict:
    """``{label: count}`` (commonest first) of what :func:`decide` makes of ``logits (N, E,
    C)``: run on a new word's takes through the heads *before* it is enrolled, it says which
    existing word, if any, the model already hears in them."""
    _, p = decide(logits, policy, min_exits)
    counts = Counter(str(labels[i]) for i in np.argmax(p, axis=1))
    return dict(counts.most_common())


def confusable(heard: dict, word: str, ignore: Sequence[str] = ("_silence_", "_unknown_"),
               share: float = CONFUSABLE_SHARE) -> list:
    """The labels of ``heard`` (other than ``word`` and ``ignore``) that took at least ``share``
    of the takes: words the new one is likely to be mistaken for, and to fire on."""
    n = sum(heard.values())
    return [lab for lab, k in heard.items()
            if lab != word and lab not in ignore and n and k / n >= share]


__all__ = ["decide", "calibrate", "threshold_for_rate", "heard_as", "confusable",
           "DEFAULT_TARGET_FA_PER_HOUR"]
