"""The early-exit rule (the paper's Algorithm 1), shared by evaluation and the deployed runtime.

Run the exits in order; return at the first exit whose prediction is confident enough. One
implementation serves both :func:`ExitPolicy.decide` (one clip, as on the device) and
:func:`decide_batch` (a whole test split, for the report); tests check they agree exactly.

numpy only: ``bnnkws.deploy.runtime`` imports this module on the device, where there is no
TensorFlow (and maybe no scipy, which is why temperature fitting lives in
:mod:`bnnkws.kws.evaluation.calibration`).

Conventions
-----------
* Exits are numbered from 1. ``decide`` returns the 1-based exit number.
* **Entropy criterion** (default): accept exit k when ``H(softmax(z_k / T_k)) < delta_k``.
  The comparison is *strict*, so ``delta = 0`` always runs to the last exit (entropy is never
  negative) and ``delta`` above the maximum entropy (1.0 normalised, ``log C`` in nats) always
  stops at ``min_exit``.
* **Entropy is normalised by default** (divided by ``log C``, so it lies in [0, 1]). The same
  delta then means the same thing for a 12-word and a 35-word model: 0.5 is "half as uncertain
  as a uniform guess" whatever the label count, so a delta tuned on one task transfers and the
  sweep grid {0.1, ..., 1.0} covers the whole range. ``normalized=False`` gives nats.
* **Score criterion** (the paper's alternative): accept exit k when the temperature-scaled
  maximum softmax probability is ``>= delta_k`` (here delta is a confidence threshold, so its
  direction is reversed: delta 0 stops at ``min_exit``, delta above 1 runs to the last exit).
* **Ties**: the label is ``argmax`` of the probabilities, i.e. the *first* index among equal
  maxima (numpy's convention), on the device and in evaluation alike.
* The last exit always accepts: there is nothing after it.
* Non-finite logits (NaN, +-inf) raise :class:`PolicyError` (a ``ValueError``) naming the exit,
  instead of silently producing a NaN entropy that compares False and walks to the last exit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

CRITERIA = ("entropy", "score")


class PolicyError(ValueError):
    """Invalid policy parameter or input (the message names the value at fault)."""


# -- the numbers ------------------------------------------------------------------------------
def softmax(logits, temperature=1.0, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax of ``logits / temperature`` in float64."""
    z = np.asarray(logits, dtype=np.float64) / np.asarray(temperature, dtype=np.float64)
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def entropy(p, normalized: bool = True, axis: int = -1) -> np.ndarray:
    """Shannon entropy of probability vectors along ``axis`` (0 log 0 = 0).

    ``normalized=True`` (default) divides by ``log C`` so the result is in [0, 1] for any
    number of classes C; see the module docstring for why. Returns a float for a single vector.
    """
    p = np.asarray(p, dtype=np.float64)
    if not np.all(np.isfinite(p)):
        raise PolicyError("entropy: probabilities contain NaN or inf")
    if np.any(p < 0):
        raise PolicyError("entropy: probabilities must be >= 0")
    c = p.shape[axis]
    if normalized and c < 2:
        raise PolicyError(f"entropy: normalised entropy needs >= 2 classes, got {c}")
    logp = np.log(np.where(p > 0, p, 1.0))  # 0 log 0 = 0 without a warning
    h = -np.sum(p * logp, axis=axis)
    if normalized:
        h = h / np.log(c)
    h = np.maximum(h, 0.0)  # -0.0 and rounding below zero
    return float(h) if np.ndim(h) == 0 else h


def _check_finite(logits: np.ndarray, where: str) -> None:
    if not np.all(np.isfinite(logits)):
        bad = np.asarray(logits)[~np.isfinite(logits)]
        raise PolicyError(f"{where}: logits contain non-finite values ({bad.ravel()[:3].tolist()}"
                          f"{', ...' if bad.size > 3 else ''}); the model or input is broken")


@dataclass(frozen=True)
class ExitDecision:
    """Outcome of the rule for one clip: 1-based ``exit``, predicted ``label_index``, the
    (temperature-scaled) probabilities at that exit and their entropy (as configured)."""

    exit: int
    label_index: int
    probs: np.ndarray
    entropy: float


class ExitPolicy:
    """The exit rule with its parameters.

    delta: float, or one value per exit (``delta[k-1]`` for exit k); see the module docstring
        for its meaning under each criterion.
    criterion: "entropy" (accept when entropy < delta) or "score" (accept when the max
        temperature-scaled softmax >= delta).
    normalized: entropy divided by log(C) (default) or in nats.
    min_exit: exits before this one never accept (they still run: their features feed the next
        stage); 1-based.
    temperatures: one softmax temperature per exit (calibration); None means all 1.
    """

    def __init__(self, delta, criterion: str = "entropy", normalized: bool = True,
                 min_exit: int = 1, temperatures: Optional[Sequence[float]] = None):
        if criterion not in CRITERIA:
            raise PolicyError(f"criterion {criterion!r} is not one of {list(CRITERIA)}")
        d = np.atleast_1d(np.asarray(delta, dtype=np.float64))
        if d.ndim != 1 or d.size == 0:
            raise PolicyError(f"delta must be a number or a list of numbers, got {delta!r}")
        if np.any(np.isnan(d)):
            raise PolicyError(f"delta must not be NaN, got {delta!r}")
        if np.any(d < 0):
            raise PolicyError(f"delta must be >= 0, got {delta!r}")
        if int(min_exit) != min_exit or min_exit < 1:
            raise PolicyError(f"min_exit must be an integer >= 1, got {min_exit!r}")
        self._delta = d
        self.per_exit_delta = np.ndim(delta) > 0
        self.criterion = criterion
        self.normalized = bool(normalized)
        self.min_exit = int(min_exit)
        if temperatures is not None:
            t = np.asarray(temperatures, dtype=np.float64).ravel()
            if t.size == 0 or not np.all(np.isfinite(t)) or np.any(t <= 0):
                raise PolicyError(f"temperatures must be finite and > 0, got {temperatures!r}")
            self.temperatures = t
        else:
            self.temperatures = None

    @classmethod
    def from_config(cls, cfg, delta=None, criterion: str = "entropy",
                    min_exit: Optional[int] = None) -> "ExitPolicy":
        """The policy a :class:`~bnnkws.kws.config.ModelConfig` describes (delta, temperatures,
        entropy normalisation, min_exit); ``delta``/``min_exit`` override the stored values."""
        return cls(cfg.delta if delta is None else delta, criterion=criterion,
                   normalized=cfg.entropy_normalized,
                   min_exit=cfg.min_exit if min_exit is None else min_exit,
                   temperatures=cfg.temperatures)

    # -- parameters per exit ------------------------------------------------------------------
    @property
    def delta(self):
        return self._delta.tolist() if self.per_exit_delta else float(self._delta[0])

    def delta_at(self, k: int) -> float:
        if self._delta.size == 1:
            return float(self._delta[0])
        if not 1 <= k <= self._delta.size:
            raise PolicyError(f"no delta for exit {k}: per-exit delta has {self._delta.size} "
                              "entries")
        return float(self._delta[k - 1])

    def temperature_at(self, k: int) -> float:
        if self.temperatures is None:
            return 1.0
        if not 1 <= k <= self.temperatures.size:
            raise PolicyError(f"no temperature for exit {k}: {self.temperatures.size} given")
        return float(self.temperatures[k - 1])

    def _vectors(self, num_exits: int):
        """(delta, temperature) arrays of length ``num_exits``."""
        if self._delta.size not in (1, num_exits):
            raise PolicyError(f"per-exit delta has {self._delta.size} entries but the model has "
                              f"{num_exits} exits")
        if self.temperatures is not None and self.temperatures.size < num_exits:
            raise PolicyError(f"{self.temperatures.size} temperatures for {num_exits} exits")
        d = np.broadcast_to(self._delta, (num_exits,)).astype(np.float64)
        t = (np.ones(num_exits) if self.temperatures is None
             else self.temperatures[:num_exits].astype(np.float64))
        return d, t

    # -- the rule -----------------------------------------------------------------------------
    def _passes(self, probs: np.ndarray, h: np.ndarray, delta: np.ndarray) -> np.ndarray:
        if self.criterion == "entropy":
            return h < delta
        return np.max(probs, axis=-1) >= delta

    def accept(self, k: int, logits, is_last: bool = False):
        """Should the clip leave at exit ``k`` (1-based) given that exit's logits (C,)?

        Returns ``(accepted, probs, entropy)``. ``is_last=True`` (the runtime's final stage)
        always accepts, as does the rule in :meth:`decide`.
        """
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 1:
            raise PolicyError(f"accept: exit {k} logits must be 1-D (classes,), got {z.shape}")
        _check_finite(z, f"exit {k}")
        # The streaming path calls this for every exit of every hop, so softmax and entropy
        # are fused here (a third of the numpy calls of softmax() + entropy()): with
        # d = z/T - max(z/T), s = sum(exp d), p = exp(d)/s,
        #   H = -sum p log p = -sum p (d - log s) = log s - sum p d.
        d = z / self.temperature_at(k)
        d -= d.max()
        e = np.exp(d)
        s = float(e.sum())
        probs = e / s
        h = math.log(s) - float(probs @ d)
        if self.normalized:
            c = z.shape[0]
            if c < 2:
                raise PolicyError(f"entropy: normalised entropy needs >= 2 classes, got {c}")
            h /= math.log(c)
        h = max(h, 0.0)
        if is_last:
            return True, probs, h
        if k < self.min_exit:
            return False, probs, h
        ok = bool(self._passes(probs, np.float64(h), np.float64(self.delta_at(k))))
        return ok, probs, h

    def decide(self, list_of_logits) -> ExitDecision:
        """Apply the rule to one clip's logits at every exit, in order (E arrays of shape (C,)).

        Same arithmetic as :func:`decide_batch` (it is the batch of one), so the device and the
        evaluation report agree to the bit.
        """
        z = np.asarray(list_of_logits, dtype=np.float64)
        if z.ndim != 2:
            raise PolicyError(f"decide: expected E exits x C classes, got shape {z.shape}")
        exits, labels, ents, probs = _decide(z[None], self)
        return ExitDecision(int(exits[0]), int(labels[0]), probs[0], float(ents[0]))

    def __repr__(self) -> str:
        t = None if self.temperatures is None else self.temperatures.tolist()
        return (f"ExitPolicy(delta={self.delta!r}, criterion={self.criterion!r}, "
                f"normalized={self.normalized}, min_exit={self.min_exit}, temperatures={t})")


def _stats(logits: np.ndarray, policy: ExitPolicy):
    """Probabilities (N, E, C) and entropies (N, E) with each exit's temperature."""
    n, e, c = logits.shape
    if c < 2:
        raise PolicyError(f"need >= 2 classes, got logits of shape {logits.shape}")
    for k in range(e):
        _check_finite(logits[:, k], f"exit {k + 1}")
    delta, temps = policy._vectors(e)
    probs = softmax(logits, temps[None, :, None])
    h = entropy(probs, normalized=policy.normalized)
    return probs, h, delta


def exit_table(logits, policy: ExitPolicy):
    """Per clip and exit: probabilities (N, E, C), entropies (N, E) and whether the exit would
    accept (N, E) (last exit and min_exit rule applied)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 3:
        raise PolicyError(f"expected logits of shape (clips, exits, classes), got {z.shape}")
    probs, h, delta = _stats(z, policy)
    ok = policy._passes(probs, h, delta[None, :])
    ok[:, : policy.min_exit - 1] = False
    ok[:, -1] = True
    return probs, h, ok


def _decide(z: np.ndarray, policy: ExitPolicy):
    probs, h, ok = exit_table(z, policy)
    first = np.argmax(ok, axis=1)  # first accepting exit (the last one always accepts)
    rows = np.arange(z.shape[0])
    p = probs[rows, first]
    labels = np.argmax(p, axis=-1)  # ties -> first index
    return first + 1, labels, h[rows, first], p


def decide_batch(logits, policy: ExitPolicy):
    """Vectorised :meth:`ExitPolicy.decide` over clips.

    logits: (N, E, C). Returns ``(exits, labels, entropies)``: 1-based exit (N,) int,
    label index (N,) int and entropy at the chosen exit (N,) float64, identical to calling
    ``policy.decide`` clip by clip.
    """
    exits, labels, ents, _ = _decide(np.asarray(logits, dtype=np.float64), policy)
    return exits.astype(np.int64), labels.astype(np.int64), ents


def decide_batch_probs(logits, policy: ExitPolicy):
    """Like :func:`decide_batch` plus the probabilities at the chosen exit (N, C)."""
    exits, labels, ents, probs = _decide(np.asarray(logits, dtype=np.float64), policy)
    return exits.astype(np.int64), labels.astype(np.int64), ents, probs


# -- budget mode ------------------------------------------------------------------------------
def _budget(e: int, target_avg_exit, target_latency, latencies):
    """(cost of leaving at each of the ``e`` exits, target mean cost, what it is called)."""
    if (target_avg_exit is None) == (target_latency is None):
        raise PolicyError("give exactly one of target_avg_exit and target_latency")
    if target_latency is not None:
        if latencies is None or len(latencies) != e:
            raise PolicyError(f"target_latency needs {e} cumulative latencies (one per exit), "
                              f"got {latencies!r}")
        cost = np.asarray(latencies, dtype=np.float64)
        if np.any(np.diff(cost) < 0):
            raise PolicyError(f"latencies must be cumulative (non-decreasing), got {latencies!r}")
        target, what = float(target_latency), "mean latency"
    else:
        cost = np.arange(1, e + 1, dtype=np.float64)
        target, what = float(target_avg_exit), "average exit"
    if not np.isfinite(target):
        raise PolicyError(f"budget target must be finite, got {target}")
    return cost, target, what


def delta_for_budget(logits, target_avg_exit: Optional[float] = None, *,
                     target_latency=None, latencies: Optional[Sequence[float]] = None,
                     criterion: str = "entropy", normalized: bool = True, min_exit: int = 1,
                     temperatures: Optional[Sequence[float]] = None) -> float:
    """The most accurate global delta whose cost meets a budget on (validation) logits.

    Give either ``target_avg_exit`` (mean 1-based exit, e.g. 2.5) or ``target_latency`` with
    ``latencies`` = cumulative cost of leaving at each exit (e.g. milliseconds from the
    deployment benchmark: ``latencies[k-1]`` is the time to run stages 1..k). Returns the delta
    that keeps clips longest (i.e. the most accurate setting, since later exits are more
    accurate) while the mean cost stays <= the target. The cost is monotone in delta, so this is
    a binary search over the exact thresholds where a clip changes exit.

    Raises :class:`PolicyError` when even the cheapest setting (every clip at ``min_exit``)
    exceeds the target.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 3:
        raise PolicyError(f"expected logits of shape (clips, exits, classes), got {z.shape}")
    n, e, _ = z.shape
    cost, target, what = _budget(e, target_avg_exit, target_latency, latencies)

    probe = ExitPolicy(0.0, criterion=criterion, normalized=normalized, min_exit=min_exit,
                       temperatures=temperatures)
    probs, h, _ = _stats(z, probe)
    # The per-clip statistic and the direction in which larger delta makes clips leave earlier.
    if criterion == "entropy":
        stat = h  # accept when h < delta: candidates just above each entropy value
        cands = np.unique(np.concatenate([[0.0], np.nextafter(h.ravel(), np.inf)]))
    else:
        stat = np.max(probs, axis=-1)  # accept when score >= delta: larger delta = later exits
        cands = np.unique(np.concatenate([stat.ravel(), [np.nextafter(1.0, 2.0)]]))[::-1]
    del stat

    def mean_cost(d: float) -> float:
        pol = ExitPolicy(d, criterion=criterion, normalized=normalized, min_exit=min_exit,
                         temperatures=temperatures)
        exits, _, _ = decide_batch(z, pol)
        return float(np.mean(cost[exits - 1]))

    # cands is ordered from "latest exits" (most accurate, most costly) to "earliest exits".
    cheapest = mean_cost(float(cands[-1]))
    if cheapest > target + 1e-12:
        raise PolicyError(f"budget {what} {target:g} is below the cheapest reachable "
                          f"({cheapest:.4g}, every clip at exit {min_exit})")
    lo, hi = 0, len(cands) - 1  # invariant: cands[hi] meets the budget
    if mean_cost(float(cands[0])) <= target + 1e-12:
        return float(cands[0])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mean_cost(float(cands[mid])) <= target + 1e-12:
            hi = mid
        else:
            lo = mid
    return float(cands[hi])


# A 0.05 grid over the normalised entropy: 21^4 = 194,481 settings for five exits, searched in
# a few seconds; finer grids fit the validation clips' noise, not the exits.
EXIT_DELTA_GRID = tuple(round(0.05 * i, 2) for i in range(21))


def exit_deltas_for_budget(logits, labels, target_avg_exit: Optional[float] = None, *,
                           target_latency=None, latencies: Optional[Sequence[float]] = None,
                           normalized: bool = True, min_exit: int = 1,
                           temperatures: Optional[Sequence[float]] = None,
                           grid: Sequence[float] = EXIT_DELTA_GRID) -> list:
    """One entropy threshold per exit: the most accurate setting whose cost meets a budget.

    A global delta asks every exit for the same certainty, but an exit's entropy means
    something else at each depth: early heads are rarely sure and right about the same clips
    as late ones. With ``delta_k`` per exit the rule leaves at the first ``k`` with
    ``H_k < delta_k``; over the grid ``G`` of thresholds for each exit from ``min_exit`` to the
    second-to-last (``|G|^(E - min_exit)`` settings), this returns the one maximising
    ``acc(delta) = mean_i [argmax z_{i, k_i(delta)} = y_i]`` subject to
    ``mean_i cost[k_i(delta)] <= target`` (``cost`` = ``latencies``, cumulative per exit, or
    the exit number for ``target_avg_exit``); among equally accurate settings, the cheapest.
    The last exit's entry is 0 (it always accepts); exits before ``min_exit`` get 0 too.

    Give labelled *validation* logits (N, E, C): the setting is fitted to them, and the
    accuracy it reaches there is optimistic by the selection among many settings. Entropy
    criterion only (the bundles' rule); the grid is in normalised units unless
    ``normalized=False``, when it is scaled to ``[0, log C]``.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 3:
        raise PolicyError(f"expected logits of shape (clips, exits, classes), got {z.shape}")
    n, e, c = z.shape
    if y.shape != (n,):
        raise PolicyError(f"labels shape {y.shape} does not match {n} clips")
    cost, target, what = _budget(e, target_avg_exit, target_latency, latencies)
    g = np.asarray(sorted(set(float(x) for x in grid)), dtype=np.float64)
    if g.size == 0 or np.any(g < 0):
        raise PolicyError(f"grid must hold thresholds >= 0, got {grid!r}")
    if not normalized:
        g = g * math.log(c)
    probe = ExitPolicy(0.0, normalized=normalized, min_exit=min_exit, temperatures=temperatures)
    probs, h, _ = _stats(z, probe)
    right = (np.argmax(probs, axis=-1) == y[:, None]).astype(np.float64)  # (N, E)
    free = list(range(min(max(min_exit, 1), e) - 1, e - 1))  # 0-based exits with a threshold
    if not free:
        return [0.0] * e
    cheapest = float(cost[free[0]])
    if cheapest > target + 1e-12:
        raise PolicyError(f"budget {what} {target:g} is below the cheapest reachable "
                          f"({cheapest:.4g}, every clip at exit {free[0] + 1})")
    accept = [h[:, k][None, :] < g[:, None] for k in free]  # (G, N) per free exit
    best = [-1.0, np.inf, None]  # correct clips, total cost, setting

    def search(j, left, n_right, n_cost, chosen):
        k = free[j]
        go = accept[j] & left[None, :]  # (G, N): leave at exit k
        r = n_right + go @ right[:, k]
        s = n_cost + go.sum(axis=1) * cost[k]
        if j == len(free) - 1:  # the rest leave at the last exit
            rest = left[None, :] & ~go
            r = r + rest @ right[:, -1]
            s = s + rest.sum(axis=1) * cost[-1]
            ok = s <= target * n + 1e-9
            if ok.any():
                cand = np.flatnonzero(ok)
                i = cand[np.lexsort((s[cand], -r[cand]))[0]]
                if r[i] > best[0] + 1e-9 or (abs(r[i] - best[0]) <= 1e-9 and s[i] < best[1]):
                    best[:] = [r[i], s[i], chosen + [g[i]]]
            return
        for i in range(g.size):
            search(j + 1, left & ~go[i], r[i], s[i], chosen + [g[i]])

    search(0, np.ones(n, dtype=bool), 0.0, 0.0, [])
    if best[2] is None:  # the grid's largest threshold still keeps some clips too long
        raise PolicyError(f"no setting of the grid meets the budget {what} {target:g}; "
                          f"raise the budget or extend the grid")
    out = [0.0] * e
    for k, d in zip(free, best[2]):
        out[k] = float(d)
    return out


def format_delta(delta) -> str:
    """A delta for people: ``0.25``, or per exit ``0.05/0.2/0.6/0.65/0``."""
    d = np.atleast_1d(np.asarray(delta, dtype=np.float64))
    if np.ndim(delta) == 0 or d.size == 1:
        return f"{float(d[0]):.3g}"
    return "/".join(f"{float(x):.3g}" for x in d)


def parse_delta(text: str):
    """``"0.25"`` -> 0.25; ``"0.05,0.2,0.6,0.65,0"`` (or ``/``-separated) -> a per-exit list."""
    parts = [p for p in str(text).replace("/", ",").split(",") if p.strip()]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise PolicyError(f"delta {text!r}: a number or a comma list of numbers (one per exit)")
    if not vals or any(v < 0 or v != v for v in vals):
        raise PolicyError(f"delta {text!r}: thresholds must be numbers >= 0")
    return vals[0] if len(vals) == 1 else vals


def same_delta(a, b) -> bool:
    """Whether two deltas (numbers or per-exit lists) are the same setting."""
    if a is None or b is None:
        return a is b
    x, y = np.atleast_1d(np.asarray(a, np.float64)), np.atleast_1d(np.asarray(b, np.float64))
    if x.size == 1 and y.size == 1:
        return bool(abs(x[0] - y[0]) < 1e-9)
    return x.shape == y.shape and bool(np.all(np.abs(x - y) < 1e-9))


def delta_value(delta):
    """A delta as JSON stores it: a float, or a list of floats (one per exit)."""
    if np.ndim(delta) == 0:
        return float(delta)
    return [float(x) for x in delta]


# -- the keyword-mass rule (issue 19) ---------------------------------------------------------
def keyword_mass(probs, ignored) -> np.ndarray:
    """Probability of the keywords: ``1 - sum(probs[ignored])`` along the last axis.

    ``ignored`` is a boolean mask (C,) of the labels that never fire (``_silence_``,
    ``_unknown_``). A float for one vector.
    """
    p = np.asarray(probs, dtype=np.float64)
    m = 1.0 - np.sum(p[..., np.asarray(ignored, dtype=bool)], axis=-1)
    m = np.clip(m, 0.0, 1.0)
    return float(m) if np.ndim(m) == 0 else m


class KeywordMassRule:
    """Leave an early exit when the hop is plainly not a keyword, beyond the paper's entropy rule.

    The entropy rule keeps an uncertain hop running, and background noise is uncertain between
    ``_silence_`` and ``_unknown_``: it goes deep only to end as a label that can never fire.
    This rule stops at exit k (``k <= max_exit``, never the last: it always decides anyway) when
    the keyword mass ``1 - p(_silence_) - p(_unknown_) < threshold``. It only adds stops to the
    entropy rule (``delta`` keeps its meaning); a threshold of 0 never stops.

    ``stops(k, probs) -> bool`` is the callable :meth:`bnnkws.deploy.runtime.Detector.classify`
    takes as ``stop=``.
    """

    def __init__(self, labels, threshold: float = 0.1, max_exit: Optional[int] = None,
                 ignore_labels=("_silence_", "_unknown_")):
        if not 0.0 <= float(threshold) <= 1.0:
            raise PolicyError(f"keyword-mass threshold must be in [0, 1], got {threshold!r}")
        if max_exit is not None and (int(max_exit) != max_exit or max_exit < 1):
            raise PolicyError(f"keyword-mass max_exit must be an integer >= 1, got {max_exit!r}")
        self.labels = [str(x) for x in labels]
        self.ignored = np.array([lab in set(ignore_labels) for lab in self.labels])
        if not self.ignored.any():
            raise PolicyError(f"keyword-mass rule: none of {list(ignore_labels)} is among the "
                              f"model's labels {self.labels}; there is no non-keyword mass")
        self.threshold = float(threshold)
        self.max_exit = None if max_exit is None else int(max_exit)

    def stops(self, k: int, probs) -> bool:
        if self.max_exit is not None and k > self.max_exit:
            return False
        return keyword_mass(probs, self.ignored) < self.threshold

    __call__ = stops

    def __repr__(self) -> str:
        return f"KeywordMassRule(threshold={self.threshold}, max_exit={self.max_exit})"
