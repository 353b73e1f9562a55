"""Per-exit cost of an early-exit model: cumulative MACs, parameters and sizes.

Counts use ``larq.models.summary``'s own arithmetic (``larq.models.ModelProfile``): a MAC is
binary when both the layer's input quantizer and its kernel have precision 1; sizes count 1 bit
per binary weight and 32 bits per real one (BatchNorm counted as its two fused constants), and
the float-32 equivalent counts every weight at 32 bits. Exit k's figures are those of stages
1..k, i.e. what a forward pass that stops at exit k computes and stores.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import bnnkws.frontend  # noqa: F401
import larq as lq
import tensorflow as tf

from ..config import ModelConfig


@dataclass
class ExitCost:
    exit: int
    binary_macs: int
    real_macs: int
    binary_params: int
    real_params: int
    binary_size_bytes: int  # 1 bit per binary weight, 32 per real
    float32_size_bytes: int  # every weight at 32 bits

    @property
    def params(self) -> int:
        return self.binary_params + self.real_params


class Description(list):
    """List of :class:`ExitCost` (one per exit, cumulative) that prints as a table."""

    title = ""

    def table(self) -> str:
        head = ["exit", "binary MACs", "real MACs", "binary params", "real params",
                "size (kB)", "float32 (kB)"]
        rows = [[f"exit{c.exit}", f"{c.binary_macs / 1e6:.2f} M", f"{c.real_macs / 1e6:.3f} M",
                 f"{c.binary_params:,}", f"{c.real_params:,}",
                 f"{c.binary_size_bytes / 1024:.1f}", f"{c.float32_size_bytes / 1024:.1f}"]
                for c in self]
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        fmt = lambda r: "  ".join(s.rjust(w) for s, w in zip(r, widths))  # noqa: E731
        lines = ([self.title] if self.title else []) + [fmt(head), fmt(["-" * w for w in widths])]
        return "\n".join(lines + [fmt(r) for r in rows])

    def __str__(self) -> str:
        return self.table()

    def to_dicts(self) -> list:
        return [asdict(c) for c in self]


def stage_profile(stage: tf.keras.Model) -> dict:
    """Non-cumulative counts of one stage model (larq-summary arithmetic).

    Piecewise-approximation convolutions (:mod:`.pa`) are counted by
    :func:`.pa.layer_cost` instead: M x N binary MACs per MAC and M bits per weight (larq's
    profile would file their M- or N-bit MACs under neither 1 nor 32 bits).
    """
    from .pa import PAConv2D, layer_cost

    p = lq.models.ModelProfile(stage)
    total_params = p.weight_count()
    binary_params = p.weight_count(bitwidth=1)
    out = {
        "binary_macs": int(p.op_count("mac", 1)),
        "real_macs": int(p.op_count("mac", 32)),
        "binary_params": int(binary_params),
        "real_params": int(total_params - binary_params),
        "binary_size_bits": int(p.memory),
        "float32_size_bits": int(p.fp_equivalent_memory),
    }
    for lp in p.layer_profiles:
        if not isinstance(lp._layer, PAConv2D):
            continue
        binary = lp.weight_count(bitwidth=1)
        larq_counts = {"binary_macs": lp.op_count("mac", 1) or 0,
                       "real_macs": lp.op_count("mac", 32) or 0,
                       "binary_params": binary, "real_params": lp.weight_count() - binary,
                       "binary_size_bits": lp.memory,
                       "float32_size_bits": lp.fp_equivalent_memory}
        for key, v in layer_cost(lp._layer).items():
            out[key] += int(v) - int(larq_counts[key])
    return out


def describe(cfg_or_model, stages: list | None = None) -> Description:
    """Per exit cumulative costs for a :class:`ModelConfig`, a chained model or stage list.

    A single-exit model yields one row (its exit), with the cost of all stages it runs.
    """
    if isinstance(cfg_or_model, ModelConfig):
        from .build import build_stages
        cfg = cfg_or_model
        stages = stages or build_stages(cfg)
        exits = cfg.active_exits
        title = f"{cfg.arch} width {cfg.width:g} {'binary' if cfg.binary else 'real-valued'}"
    else:
        model = cfg_or_model
        stages = [lay for lay in model.layers if isinstance(lay, tf.keras.Model)
                  and lay.name.startswith("stage")]
        if not stages:
            raise ValueError(f"model {model.name!r} has no stage sub-models (stage1..stageN)")
        exits = [int(n[4:]) for n in model.output_names if n.startswith("exit")]
        title = model.name
    out = Description()
    out.title = title
    acc = dict.fromkeys(["binary_macs", "real_macs", "binary_params", "real_params",
                         "binary_size_bits", "float32_size_bits"], 0)
    for k, stage in enumerate(stages, start=1):
        for key, v in stage_profile(stage).items():
            acc[key] += v
        if k in exits:
            out.append(ExitCost(
                exit=k, binary_macs=acc["binary_macs"], real_macs=acc["real_macs"],
                binary_params=acc["binary_params"], real_params=acc["real_params"],
                binary_size_bytes=(acc["binary_size_bits"] + 7) // 8,
                float32_size_bytes=acc["float32_size_bits"] // 8))
    return out


class _CallableModule(type(__import__("sys"))):
    """Importing this submodule rebinds the package attribute ``models.describe`` from the
    function to the module; making the module callable keeps ``models.describe(cfg)`` working."""

    def __call__(self, *args, **kw):
        return describe(*args, **kw)


__import__("sys").modules[__name__].__class__ = _CallableModule
