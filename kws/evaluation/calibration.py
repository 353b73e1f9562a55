"""Temperature scaling (Guo et al., 2017) per exit, and expected calibration error.

Early exits are trained with the same loss as the last exit but see less of the network, and
their softmax is usually over- or under-confident in its own way. The exit rule thresholds a
confidence (entropy or max probability), so one temperature per exit, fitted on the validation
split, makes one delta mean the same at every exit. The temperatures are stored in the run's
``ModelConfig.temperatures`` and travel into the exported bundle.

numpy + scipy; no TensorFlow.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnnkws.kws.policy import PolicyError, softmax

ECE_BINS = 15
# Search range for T: far beyond anything a sane network needs, narrow enough that the
# bounded optimiser's tolerance (on log T) is tight.
LOG_T_BOUNDS = (np.log(1e-2), np.log(1e2))


def _check(logits, labels):
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2:
        raise PolicyError(f"expected logits of shape (clips, classes), got {z.shape}")
    if y.shape != (z.shape[0],):
        raise PolicyError(f"labels shape {y.shape} does not match {z.shape[0]} clips")
    if z.shape[0] == 0:
        raise PolicyError("no clips to calibrate on")
    if not np.all(np.isfinite(z)):
        raise PolicyError("logits contain NaN or inf")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= z.shape[1]:
        raise PolicyError(f"labels must be class indices in 0..{z.shape[1] - 1}")
    return z, y.astype(np.int64)


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (nats) of ``labels`` under ``softmax(logits / T)``."""
    z, y = _check(logits, labels)
    s = z / float(temperature)
    m = np.max(s, axis=1, keepdims=True)
    lse = (m + np.log(np.sum(np.exp(s - m), axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - s[np.arange(len(y)), y]))


def fit_temperature(logits, labels) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(logits / T)`` on (N, C) logits.

    Optimised over log T (scipy's bounded scalar minimiser), so T stays positive and the search
    is as fine for T = 0.5 as for T = 5. NLL is convex in 1/T, so there is one minimum.
    """
    from scipy.optimize import minimize_scalar

    z, y = _check(logits, labels)
    res = minimize_scalar(lambda lt: nll(z, y, np.exp(lt)), bounds=LOG_T_BOUNDS,
                          method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def fit_temperatures(logits, labels) -> list:
    """One temperature per exit for (N, E, C) logits."""
    z = np.asarray(logits)
    if z.ndim != 3:
        raise PolicyError(f"expected logits of shape (clips, exits, classes), got {z.shape}")
    return [fit_temperature(z[:, k], labels) for k in range(z.shape[1])]


def expected_calibration_error(probs, labels, n_bins: int = ECE_BINS) -> float:
    """ECE: sum over equal-width confidence bins of |accuracy - mean confidence| weighted by the
    bin's share of clips. ``probs`` (N, C) are probabilities (apply the temperature first)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise PolicyError(f"probs (N, C) and labels (N,) expected, got {p.shape} and {y.shape}")
    if p.shape[0] == 0:
        raise PolicyError("no clips for the calibration error")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bins (lo, hi]; confidence is >= 1/C > 0 so the first bin's open end never matters
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def reliability(probs, labels, n_bins: int = ECE_BINS):
    """Per bin: (bin centres, accuracy, mean confidence, counts) for a reliability diagram;
    empty bins have NaN accuracy and confidence."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    acc = np.full(n_bins, np.nan)
    cf = np.full(n_bins, np.nan)
    cnt = np.zeros(n_bins, dtype=np.int64)
    for b in range(n_bins):
        m = idx == b
        cnt[b] = m.sum()
        if cnt[b]:
            acc[b] = correct[m].mean()
            cf[b] = conf[m].mean()
    return (edges[:-1] + edges[1:]) / 2, acc, cf, cnt


@dataclass
class ExitCalibration:
    """Calibration of one exit: fitted temperature, ECE and NLL before (T=1) and after."""

    exit: str
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def calibrate_exits(logits, labels, exit_names, fit_on=None) -> list:
    """Fit per-exit temperatures on ``fit_on = (logits, labels)`` (the validation split; by
    default the data given) and measure ECE/NLL on ``(logits, labels)`` before and after."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    fz, fy = (z, y) if fit_on is None else (np.asarray(fit_on[0], np.float64), fit_on[1])
    out = []
    for k, name in enumerate(exit_names):
        t = fit_temperature(fz[:, k], fy)
        out.append(ExitCalibration(
            exit=name, temperature=t,
            ece_before=expected_calibration_error(softmax(z[:, k]), y),
            ece_after=expected_calibration_error(softmax(z[:, k], t), y),
            nll_before=nll(z[:, k], y, 1.0), nll_after=nll(z[:, k], y, t)))
    return out


def store_temperatures(config_path, temperatures, exit_numbers=None):
    """Write fitted temperatures into a run's ``config.json`` (atomically, via ModelConfig).

    ``exit_numbers`` (1-based) says which exits the values belong to (a single-exit E_s model
    has one); the other exits keep their stored temperature. Returns the saved ModelConfig.
    """
    from bnnkws.kws.config import ModelConfig

    cfg = ModelConfig.load(config_path)
    temps = list(cfg.temperatures)
    nums = exit_numbers or list(range(1, len(temperatures) + 1))
    if len(nums) != len(temperatures):
        raise PolicyError(f"{len(temperatures)} temperatures for exits {nums}")
    for k, t in zip(nums, temperatures):
        temps[k - 1] = float(t)
    cfg = cfg.replace(temperatures=temps)
    cfg.save(config_path)
    return cfg
