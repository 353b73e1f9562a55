"""Training on more than one device or machine with TensorFlow's own ``tf.distribute``.

``--distribute none`` trains on the default device. ``mirrored`` is
``tf.distribute.MirroredStrategy``: one process, a model replica per local GPU (or, on a machine
without GPUs, per logical CPU device, which is how the tests exercise it). ``multiworker`` is
``tf.distribute.MultiWorkerMirroredStrategy``: one process per worker, the cluster described by
the ``TF_CONFIG`` environment variable exactly as TensorFlow documents it
(``{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}``).

What stays the same as on one device, by construction:

* ``--batch-size`` is the *global* batch ``B``; each of the ``R`` replicas computes its share
  ``B / R`` and Keras scales every replica's loss by ``1 / B``, so the summed gradient is the
  single-device gradient of the whole batch.
* The optimizer step sees the all-reduced gradient: larq's ``CaseOptimizer`` hands each
  sub-optimizer its variables inside ``merge_call``/``call_for_each_replica``, and Keras'
  optimizer all-reduces before applying, so Bop's moving average ``m`` and its flip test
  ``|m| > threshold`` are computed from the sum over replicas (tested), identically on every
  replica, and the binary weights never diverge between replicas.
* Batch normalisation uses the global batch's statistics (``synchronized=True`` layers while
  the model is built for more than one replica); the weights are the same variables, so a run
  trained on 8 GPUs exports and loads like any other.

Multi-worker runs write as TensorFlow's fault-tolerance guide says: every worker saves its
checkpoint (the chief into the run folder, the others into a scratch folder they delete), and
every worker restores from the chief's, so ``--out`` must be a folder all workers see (a shared
file system; on one machine, any folder). With streamed shards each worker reads and augments
only its part of every global batch (whole batches only, so all take the same steps). A worker that dies stops the step for all; restart
every worker with ``--resume`` and the run continues after the last completed epoch.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("none", "mirrored", "multiworker")


class DistributeError(ValueError):
    """A distribution setting that cannot work; the message says which and why."""


@dataclass
class Placement:
    """Where training runs: the strategy and what each process needs to know about it."""

    mode: str
    strategy: object  # tf.distribute.Strategy
    replicas: int = 1
    workers: int = 1
    task_index: int = 0
    is_chief: bool = True
    devices: list = field(default_factory=list)

    def per_replica_batch(self, global_batch: int) -> int:
        if global_batch % self.replicas:
            raise DistributeError(
                f"--batch-size {global_batch} is the global batch and must split evenly over "
                f"the {self.replicas} replicas; use a multiple of {self.replicas}")
        return global_batch // self.replicas

    def describe(self, global_batch: int) -> str:
        where = ", ".join(self.devices) or "default device"
        if self.mode == "none":
            return f"training on {where}; batch {global_batch}"
        worker = (f"worker {self.task_index} of {self.workers}"
                  f"{' (chief)' if self.is_chief else ''}; " if self.mode == "multiworker" else "")
        return (f"training with {self.mode} ({type(self.strategy).__name__}) on {worker}"
                f"{self.replicas} replicas [{where}]; global batch {global_batch} = "
                f"{self.replicas} x {self.per_replica_batch(global_batch)} per replica")


def tf_config() -> dict:
    """The parsed ``TF_CONFIG`` (empty dict when unset); a malformed one raises naming it."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DistributeError(f"TF_CONFIG is not valid JSON ({e}): {raw[:200]}") from e
    if not isinstance(cfg, dict) or "cluster" not in cfg or "task" not in cfg:
        raise DistributeError(f"TF_CONFIG needs 'cluster' and 'task' keys, got: {raw[:200]}")
    return cfg


def _cpu_replicas(tf, n: int) -> list:
    """Split the CPU into ``n`` logical devices (before TensorFlow initialises its devices)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    have = tf.config.get_logical_device_configuration(cpu)
    if have is None or len(have) != n:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
        except RuntimeError as e:
            raise DistributeError(
                f"--devices {n}: TensorFlow already initialised its devices in this process, "
                f"so the CPU cannot be split into {n} logical devices any more; start a new "
                f"process (the kws command does this first)") from e
    return [d.name for d in tf.config.list_logical_devices("CPU")][:n]


def setup(mode: str = "none", devices: int | None = None) -> Placement:
    """The :class:`Placement` for ``--distribute mode`` (``devices``: how many local devices;
    default all GPUs, or 2 logical CPU devices on a machine without GPUs for ``mirrored``).

    Call before anything else touches TensorFlow's devices: splitting the CPU into logical
    devices is only possible before that.
    """
    if mode not in MODES:
        raise DistributeError(f"--distribute {mode!r}: choose one of {', '.join(MODES)}")
    import bnnkws.frontend  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
    import tensorflow as tf

    if devices is not None and devices < 1:
        raise DistributeError(f"--devices {devices}: need at least 1")
    gpus = tf.config.list_physical_devices("GPU")
    if mode == "none":
        if devices not in (None, 1):
            raise DistributeError(f"--devices {devices} needs --distribute mirrored or "
                                  f"multiworker")
        return Placement("none", tf.distribute.get_strategy(),
                         devices=["/gpu:0" if gpus else "/cpu:0"])
    if gpus:
        n = len(gpus) if devices is None else devices
        if n > len(gpus):
            raise DistributeError(f"--devices {n}: this machine has {len(gpus)} GPU(s)")
        names = [f"/gpu:{i}" for i in range(n)]
        cross = None  # NCCL all-reduce, TensorFlow's default between GPUs
        if mode == "multiworker" and n < len(gpus):
            tf.config.set_visible_devices(gpus[:n], "GPU")  # the strategy takes every visible one
    else:
        if mode == "multiworker" and devices not in (None, 1):
            raise DistributeError(f"--devices {devices} with multiworker needs GPUs: without "
                                  f"them each worker is one CPU replica")
        n = (2 if mode == "mirrored" else 1) if devices is None else devices
        names = _cpu_replicas(tf, n) if n > 1 else ["/cpu:0"]
        cross = tf.distribute.ReductionToOneDevice(reduce_to_device="/cpu:0")
    if mode == "mirrored":
        strategy = tf.distribute.MirroredStrategy(names, cross_device_ops=cross)
        return Placement("mirrored", strategy, replicas=strategy.num_replicas_in_sync,
                         devices=names)
    cfg = tf_config()
    workers = (cfg.get("cluster") or {}).get("worker") or []
    if not workers:
        raise DistributeError(
            "--distribute multiworker needs TF_CONFIG naming the cluster and this worker, e.g. "
            "TF_CONFIG='{\"cluster\": {\"worker\": [\"host1:12345\", \"host2:12345\"]}, "
            "\"task\": {\"type\": \"worker\", \"index\": 0}}' (see the README)")
    task = cfg["task"]
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    chief = kind == "chief" or (kind == "worker" and index == 0
                                and "chief" not in cfg["cluster"])
    return Placement("multiworker", strategy, replicas=strategy.num_replicas_in_sync,
                     workers=len(workers) + len(cfg["cluster"].get("chief", [])),
                     task_index=index, is_chief=chief, devices=names)


@contextlib.contextmanager
def model_scope(placement: Placement):
    """``strategy.scope()``, with synchronised batch normalisation when there are replicas."""
    from bnnkws.kws.models import blocks

    saved = blocks.SYNC_BN
    blocks.SYNC_BN = placement.replicas > 1
    try:
        with placement.strategy.scope():
            yield
    finally:
        blocks.SYNC_BN = saved


def write_dir(out: Path, placement: Placement) -> Path:
    """Where this process writes checkpoints, weights and logs: the run folder for the chief,
    a scratch folder inside it for the other workers (removed by :func:`cleanup`)."""
    out = Path(out)
    if placement.is_chief:
        return out
    return out / f".worker{placement.task_index}-scratch"


def cleanup(out: Path, placement: Placement) -> None:
    if not placement.is_chief:
        shutil.rmtree(write_dir(out, placement), ignore_errors=True)


def shard_by_data(ds):
    """``ds`` with auto-sharding by elements: every worker builds the same global batches and
    keeps its slice of each, so a multi-worker run sees the batches a single device would.
    (Sharding by files would give each worker other clips: statistically alike, not equal.)
    This is for the in-memory pipeline and validation; streamed shards instead give each
    worker only its share to read and augment (``kws.train``, through ``DatasetCreator``)."""
    import tensorflow as tf

    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(opts)
