"""Keras callbacks for BNN training: flip ratio, hyper-parameter logging, checkpoints, Ctrl-C.

Callbacks that add entries to the epoch logs must come before CSVLogger / TensorBoard in the
callback list (Keras hands the same dict down the list; its progress bar comes last).
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time
from pathlib import Path

import bnnkws.frontend  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from bnnkws.kws.training import optim
from bnnkws.kws.fileio import atomic_path

FLIP_EPS = 1e-9


def flip_ratio(flips: float, num_params: int) -> float:
    """``ln(flips / binary params + 1e-9)``, the Bop reproduction report's flip ratio."""
    return math.log(flips / max(1, num_params) + FLIP_EPS)


class FlipCounter(tf.keras.callbacks.Callback):
    """Counts sign flips of the binary kernels, batch by batch, and logs them per epoch.

    ``flips``: total sign changes over the epoch (summed per batch, so a weight flipping twice
    counts twice); ``flip_ratio = ln(flips / binary params + 1e-9)``; ``flip_ratio_step`` the same
    per training step (comparable across data set sizes). With Bop a healthy run starts high
    and decays with gamma; a ratio stuck near ln(1e-9) = -20.7 means Bop has stopped learning,
    one near 0 means every weight flips every epoch (noise).

    The previous signs live in non-trainable variables and the comparison runs as one graph
    function per batch, so counting costs no host copy of the weights.
    """

    def __init__(self, variables):
        super().__init__()
        self.variables = [getattr(v, "latent_variable", v) for v in variables]
        self.num_params = int(sum(v.shape.num_elements() for v in self.variables))
        self._prev = [tf.Variable(tf.zeros(v.shape, tf.bool), trainable=False)
                      for v in self.variables]
        # Accumulated on the device: reading it every batch would stall the training loop.
        self._total = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._steps = 0

    @tf.function
    def _snapshot(self):
        self._total.assign(0)
        for v, p in zip(self.variables, self._prev):
            p.assign(v >= 0)

    @tf.function
    def _count(self):
        for v, p in zip(self.variables, self._prev):
            now = v >= 0
            self._total.assign_add(tf.math.count_nonzero(tf.not_equal(now, p), dtype=tf.int64))
            p.assign(now)

    def on_epoch_begin(self, epoch, logs=None):
        self._steps = 0
        self._snapshot()

    def on_train_batch_end(self, batch, logs=None):
        self._count()
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        flips = int(self._total.numpy())
        logs["flips"] = float(flips)
        logs["flip_ratio"] = flip_ratio(flips, self.num_params)
        logs["flip_ratio_step"] = flip_ratio(flips / max(1, self._steps), self.num_params)


class HyperLogger(tf.keras.callbacks.Callback):
    """Logs the learning rate and Bop's gamma/threshold in effect during the epoch."""

    def __init__(self, optimizer):
        super().__init__()
        self.optimizer = optimizer
        self._at_begin = {}

    def on_epoch_begin(self, epoch, logs=None):
        self._at_begin = optim.current_hypers(self.optimizer)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self._at_begin)


class EpochTimer(tf.keras.callbacks.Callback):
    """Logs ``epoch_seconds``: wall time of the epoch's training and validation (the first
    epoch of a process also includes tracing the graph)."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self._t0 = None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        dt = time.perf_counter() - self._t0
        self.seconds.append(dt)
        if logs is not None:
            logs["epoch_seconds"] = dt


def atomic_save_weights(model, path) -> Path:
    """``model.save_weights`` to a temp file, then rename: a crash never leaves half a file."""
    path = Path(path)
    with atomic_path(path, suffix=".tmp.h5") as tmp:
        model.save_weights(str(tmp))
    return path


class EpochCheckpoint(tf.keras.callbacks.Callback):
    """Saves model + optimizer (Bop's moving averages, step counters) + epoch every epoch.

    ``tf.train.CheckpointManager`` writes the new checkpoint's files first and only then
    atomically rewrites the ``checkpoint`` index, so a process killed mid-write leaves the index
    pointing at the previous, complete checkpoint. ``weights.h5`` (last epoch) is refreshed
    too, atomically.
    """

    def __init__(self, manager: tf.train.CheckpointManager, epoch_var: tf.Variable,
                 last_weights: Path | None = None, save_model=None):
        super().__init__()
        self.manager = manager
        self.epoch_var = epoch_var
        self.last_weights = last_weights
        # The model whose weights go to last_weights (default: the one being fit); training
        # with auxiliary heads saves the task model that shares their stages.
        self.save_model = save_model

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_var.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)
        if self.last_weights is not None:
            atomic_save_weights(self.save_model or self.model, self.last_weights)


class BestWeights(tf.keras.callbacks.Callback):
    """Keeps the weights with the best ``monitor`` value (max) in ``path``.

    The best value and its epoch are variables so the checkpoint carries them across a resume.
    Must run before :class:`EpochCheckpoint` so the checkpoint records this epoch's verdict.
    """

    def __init__(self, path: Path, monitor: str, best_var: tf.Variable, best_epoch: tf.Variable,
                 save_model=None):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.best_var = best_var
        self.best_epoch = best_epoch
        self.save_model = save_model  # as in EpochCheckpoint

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        if value > float(self.best_var.numpy()) or not self.path.exists():
            self.best_var.assign(value)
            self.best_epoch.assign(epoch + 1)
            atomic_save_weights(self.save_model or self.model, self.path)


class GracefulInterrupt(tf.keras.callbacks.Callback):
    """First Ctrl-C: finish the current epoch, checkpoint, stop. Second Ctrl-C: stop now.

    Place it after :class:`EpochCheckpoint` so the stop happens after the save. Stopping at an
    epoch boundary keeps ``--resume`` exact; the second Ctrl-C raises KeyboardInterrupt and the
    last completed epoch's checkpoint is untouched.
    """

    def __init__(self):
        super().__init__()
        self.requested = False
        self.stopped_epoch = None
        self._old = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this epoch's checkpoint (press Ctrl-C again to abort "
              "now; the last checkpoint stays intact)", file=sys.stderr, flush=True)

    def on_train_begin(self, logs=None):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)

    def on_train_end(self, logs=None):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None

    def on_epoch_end(self, epoch, logs=None):
        if self.requested:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True
