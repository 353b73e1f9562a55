"""The run directory: everything later steps (eval, export, deploy, CWR*) need from training.

Layout::

    RUN/
      config.json         ModelConfig (arch, width, labels in order, exits, norm_mean/std, frontend)
      train_config.json   the TrainConfig that produced the run (data spec, optimizer, seed...)
      split.json          clip paths per split ({"train": [...], "validation": [...], ...})
      checkpoints/        tf.train.Checkpoint: model + optimizer + epoch (for --resume)
      weights.h5          weights after the last completed epoch
      best.h5             weights with the best validation accuracy at the last exit
      history.csv         one row per epoch: loss/accuracy per exit (train and val), flip ratio
      tb/                 TensorBoard logs
      test_metrics.json   per-exit accuracy on the test split at the end of training

Only the json helpers here are TensorFlow-free; :func:`load_run` imports the models lazily.
"""
from __future__ import annotations

import json
from pathlib import Path

from bnnkws.kws.fileio import atomic_write_json

CONFIG = "config.json"
TRAIN_CONFIG = "train_config.json"
SPLIT = "split.json"
CHECKPOINTS = "checkpoints"
WEIGHTS = "weights.h5"
BEST = "best.h5"
HISTORY = "history.csv"
TENSORBOARD = "tb"
TEST_METRICS = "test_metrics.json"


class RunError(FileNotFoundError):
    """A run directory (or a file in it) is missing or unusable; the message names it."""


def write_json(path, obj) -> Path:
    """Write JSON atomically (temp file in the same folder + rename)."""
    return atomic_write_json(path, obj, indent=2, sort_keys=True)


def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: not valid JSON ({e})") from e


def read_train_config(run_dir) -> dict:
    """The run's ``train_config.json`` as a dict; {} when it is missing or unreadable (runs made
    before it existed, or a model directory that was not made by ``kws train``)."""
    try:
        return read_json(Path(run_dir) / TRAIN_CONFIG)
    except RunError:
        return {}


def split_seed(train_config: dict) -> int:
    """The speaker split's seed recorded in a ``train_config.json`` dict: ``split_seed``, or
    ``seed`` for runs that had one seed for both (and 0 when neither is recorded)."""
    s = train_config.get("split_seed")
    return int(s if s is not None else train_config.get("seed") or 0)


def check_run_dir(run_dir) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory not found: {run_dir}")
    if not (run_dir / CONFIG).is_file():
        raise RunError(f"{run_dir} is not a training run: {CONFIG} missing")
    return run_dir


def weights_path(run_dir, which: str = "best") -> Path:
    """``best.h5`` (falls back to ``weights.h5`` if there is no best yet) or ``weights.h5``."""
    run_dir = Path(run_dir)
    if which not in ("best", "last", "final"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    if which == "best" and (run_dir / BEST).is_file():
        return run_dir / BEST
    if (run_dir / WEIGHTS).is_file():
        return run_dir / WEIGHTS
    raise RunError(f"{run_dir} holds no weights ({BEST} / {WEIGHTS}); has it trained an epoch?")


def load_config(run_dir):
    from bnnkws.kws.config import ModelConfig

    return ModelConfig.load(check_run_dir(run_dir) / CONFIG)


def load_run(run_dir, which: str = "best"):
    """``(ModelConfig, keras.Model)`` rebuilt from ``config.json`` with the chosen weights."""
    from bnnkws.kws.models import build_model

    cfg = load_config(run_dir)
    path = weights_path(run_dir, which)
    model = build_model(cfg)
    try:
        model.load_weights(str(path))
    except (ValueError, OSError) as e:
        raise RunError(f"{path}: weights do not fit the model in {CONFIG} ({e})") from e
    return cfg, model


def load_split(run_dir) -> dict:
    return read_json(check_run_dir(run_dir) / SPLIT)
