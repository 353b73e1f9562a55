"""Stage models and the chained early-exit model built from a :class:`ModelConfig`.

Stage k is a ``keras.Model`` named ``stage{k}`` mapping its input (stage 1: raw log-mel
(98, 64); stage k > 1: stage k-1's ``fmap``) to ``{"fmap", "embedding", "logits"}``. The last
stage has no ``fmap``; in a single-exit (E_s) model the stages before the exit have only
``fmap``. No residual or dense connection crosses a stage boundary: the feature map is the whole
state handed on, so a deployed stage can run alone.
"""
from __future__ import annotations

import importlib

import bnnkws.frontend  # noqa: F401
import tensorflow as tf

from ..config import ConfigError, ModelConfig
from .blocks import Standardize
from .exits import exit_head

ARCH_MODULES = {
    "quicknet": "quicknet",
    "birealnet": "birealnet",
    "meliusnet": "meliusnet",
    "binarydensenet": "binarydensenet",
}


def arch_module(arch: str):
    if arch not in ARCH_MODULES:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {sorted(ARCH_MODULES)}")
    return importlib.import_module(f"{__package__}.{ARCH_MODULES[arch]}")


def build_stages(cfg: ModelConfig, *, scaled_exits: bool = True) -> list:
    """The stage models 1..cfg.num_stages (see module docstring).

    ``scaled_exits=False`` drops the learned exit scale (only to measure its effect).
    """
    bodies = arch_module(cfg.arch).stage_bodies(cfg)
    if len(bodies) != cfg.num_exits:
        raise ConfigError(f"{cfg.arch} has {len(bodies)} stages; num_exits={cfg.num_exits} "
                          f"is not supported")
    frames, mels = cfg.frontend.num_frames, cfg.frontend.n_mels
    stages = []
    prev = None
    for k in range(1, cfg.num_stages + 1):
        if k == 1:
            inp = tf.keras.Input((frames, mels), name="logmel", dtype="float32")
            x = Standardize(cfg.norm_mean, cfg.norm_std, name="standardize")(inp)
            x = tf.keras.layers.Reshape((frames, mels, 1), name="add_channel")(x)
        else:
            inp = tf.keras.Input(prev.output["fmap"].shape[1:], name="fmap_in")
            x = inp
        fmap = bodies[k - 1](x)
        out = {}
        last = k == cfg.num_stages
        if not last:
            out["fmap"] = tf.keras.layers.Activation("linear", name="fmap")(fmap)
        if k in cfg.active_exits:
            emb, logits = exit_head(fmap, cfg.num_classes, binary=cfg.binary,
                                    scaled=scaled_exits, expand=cfg.head_channels[k - 1])
            out["embedding"] = emb
            out["logits"] = logits
        prev = tf.keras.Model(inp, out, name=f"stage{k}")
        stages.append(prev)
    return stages


def build_model(cfg: ModelConfig, *, stages: list | None = None, **kw) -> tf.keras.Model:
    """Chain the stages: log-mel (98, 64) float32 in, ``{"exit1": logits, ...}`` out.

    The stage models are layers of the result (``model.get_layer("stage2")``), so weights are
    shared: training the chained model trains the stages that deployment exports one by one.
    """
    stages = stages if stages is not None else build_stages(cfg, **kw)
    inp = tf.keras.Input((cfg.frontend.num_frames, cfg.frontend.n_mels), name="logmel",
                         dtype="float32")
    outputs = {}
    x = inp
    for k, stage in enumerate(stages, start=1):
        out = stage(x)
        if k in cfg.active_exits:
            outputs[f"exit{k}"] = tf.keras.layers.Activation(
                "linear", dtype="float32", name=f"exit{k}")(out["logits"])
        if "fmap" in out:
            x = out["fmap"]
    name = f"{cfg.arch}_{'bin' if cfg.binary else 'real'}_w{cfg.width:g}"
    if cfg.uses_pa:
        pairs = set(cfg.stage_pa_bases[:cfg.num_stages])
        name += f"_pa{'%dx%d' % next(iter(pairs)) if len(pairs) == 1 else ''}"
    if cfg.single_exit is not None:
        name += f"_es{cfg.single_exit}"
    return tf.keras.Model(inp, outputs, name=name)
