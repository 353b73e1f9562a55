"""Optimizers and schedules for binary networks: Bop + Adam, Adam on latent weights, two-stage.

Bop (Helwegen et al. 2019) keeps a moving average ``m`` of each binary weight's gradient with
adaptivity rate ``gamma`` and flips the weight when ``|m| > threshold`` and ``m`` agrees in sign
with it. Its ImageNet setting (gamma 1e-4, threshold 1e-8) assumes ~10^4 steps per epoch; a
keyword-spotting set of a few thousand clips gives ~20 steps per epoch, so the moving average
never warms up and the flips are pure noise (a probe collapsed below chance by epoch 10). A
larger gamma (1e-3) with a larger threshold (1e-6) learns, then drifts once the flips keep
going at full rate, so gamma decays by default (``gamma_decay="exp"``: multiplied by
``gamma_final_ratio`` over the run, stepwise per epoch).

Larq's ``Bop`` accepts a ``LearningRateSchedule`` for ``gamma`` (and ``threshold``) and evaluates
it at its own ``iterations`` counter, which :class:`larq.optimizers.CaseOptimizer` advances only
for Bop's own updates, i.e. once per training step; that counter lives in the checkpoint, so a
resumed run continues the schedule where it stopped.
"""
from __future__ import annotations

import math

import bnnkws.frontend  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import larq as lq
import tensorflow as tf

from bnnkws.kws.training.config import GAMMA_DECAYS, LR_SCHEDULES, OPTIMIZERS  # noqa: F401

Schedule = tf.keras.optimizers.schedules.LearningRateSchedule


def decay_schedule(initial: float, kind: str, total_steps: int, steps_per_epoch: int,
                   final_ratio: float = 0.01):
    """A value that starts at ``initial`` and ends near ``initial * final_ratio``.

    ``exp`` decays stepwise once per epoch (the rate stays constant within an epoch, as Bop's
    paper decays gamma per epoch); ``cosine`` decays smoothly per step to exactly
    ``initial * final_ratio``; ``none``/``constant`` returns the float itself.
    """
    total_steps = max(1, int(total_steps))
    steps_per_epoch = max(1, int(steps_per_epoch))
    if kind in ("none", "constant"):
        return float(initial)
    if not 0 < final_ratio <= 1:
        raise ValueError(f"final ratio must be in (0, 1], got {final_ratio}")
    if kind == "exp":
        epochs = max(1, math.ceil(total_steps / steps_per_epoch))
        # Reach final_ratio at the start of the last epoch (epochs - 1 decays happen).
        rate = final_ratio ** (1.0 / max(1, epochs - 1))
        return tf.keras.optimizers.schedules.ExponentialDecay(
            float(initial), decay_steps=steps_per_epoch, decay_rate=rate, staircase=True)
    if kind == "cosine":
        return tf.keras.optimizers.schedules.CosineDecay(
            float(initial), decay_steps=total_steps, alpha=final_ratio)
    raise ValueError(f"unknown schedule {kind!r}; expected one of exp, cosine, none")


def schedule_value(value, step: int) -> float:
    """The value of a float or schedule at ``step`` (for logging)."""
    if isinstance(value, Schedule):
        return float(value(step))
    if hasattr(value, "numpy"):  # a (possibly mirrored) hyper-parameter variable
        return float(value.numpy())
    return float(value)


def adam(lr) -> tf.keras.optimizers.Optimizer:
    # The legacy Keras optimizer: CaseOptimizer and Bop are built on it.
    return tf.keras.optimizers.legacy.Adam(learning_rate=lr)


def bop_case_optimizer(*, gamma, threshold, lr):
    """Bop for the binary kernels (``precision == 1``), Adam for everything else."""
    return lq.optimizers.CaseOptimizer(
        (lq.optimizers.Bop.is_binary_variable, lq.optimizers.Bop(threshold=threshold, gamma=gamma)),
        default_optimizer=adam(lr),
    )


def find_bop(optimizer):
    """The Bop inside a CaseOptimizer (or the optimizer itself), else None."""
    if isinstance(optimizer, lq.optimizers.Bop):
        return optimizer
    for sub in getattr(optimizer, "optimizers", []) or []:
        if isinstance(sub, lq.optimizers.Bop):
            return sub
    return None


def binary_variables(model) -> list:
    """The model's trainable binary kernels (the variables Bop claims)."""
    return [v for v in model.trainable_variables if lq.optimizers.Bop.is_binary_variable(v)]


def current_hypers(optimizer) -> dict:
    """Learning rate and Bop gamma/threshold at the optimizer's current step (for logging)."""
    out = {}
    bop = find_bop(optimizer)
    adam_opt = None
    if bop is not None:
        for sub in optimizer.optimizers:
            if sub is not bop:
                adam_opt = sub
        step = int(bop.iterations.numpy())
        out["bop_gamma"] = schedule_value(bop._get_hyper("gamma"), step)
        out["bop_threshold"] = schedule_value(bop._get_hyper("threshold"), step)
    else:
        adam_opt = optimizer
    if adam_opt is not None:
        lr = adam_opt._get_hyper("learning_rate")
        out["lr"] = schedule_value(lr, int(adam_opt.iterations.numpy()))
    return out


# ---------------------------------------------------------------------------------------------
# clipping switches for the two-stage recipe (Alizadeh et al., ICLR 2019)
# ---------------------------------------------------------------------------------------------
def disable_clipping(model) -> list:
    """Turn the STE gradient clip and the binary kernels' weight clip off.

    "An Empirical Study of Binary Neural Networks' Optimisation" found both clips slow early
    training: stage 1 trains with a vanilla STE and unconstrained latent weights, stage 2 turns
    them back on. Quantizers read ``clip_value`` when the training function is traced, so the
    caller recompiles after switching. Returns what :func:`restore_clipping` needs.
    """
    saved = []
    seen = set()
    for layer in _all_layers(model):
        for attr in ("input_quantizer", "kernel_quantizer"):
            q = getattr(layer, attr, None)
            if q is not None and hasattr(q, "clip_value") and id(q) not in seen:
                seen.add(id(q))
                saved.append((q, "clip_value", q.clip_value))
                q.clip_value = None
    for v in model.trainable_variables:
        latent = getattr(v, "latent_variable", v)
        if getattr(latent, "_constraint", None) is not None:
            saved.append((latent, "_constraint", latent._constraint))
            latent._constraint = None
    return saved


def restore_clipping(saved: list) -> None:
    for obj, attr, value in saved:
        setattr(obj, attr, value)


def set_bn_momentum(model, momentum: float) -> None:
    """Stage 2 of the two-stage recipe averages BatchNorm statistics more slowly."""
    for layer in _all_layers(model):
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = momentum


def _all_layers(model):
    out = []
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        out.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return out
