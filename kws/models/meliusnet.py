"""MeliusNet (Bethge et al. 2020, larq-zoo ``literature/meliusnet.py``) for a 98x64 log-mel input.

Block structure as in larq-zoo: a MeliusNet block is a dense block (BN -> binary 3x3 conv with
``growth`` filters -> concatenate, adding capacity) followed by an improvement block (BN ->
binary 3x3 conv with ``growth`` filters -> added to the newest ``growth`` channels, improving
quality); SteSign(1.3) input and kernel quantizers, WeightClip(1.3). A transition (BN ->
MaxPool(2) -> ReLU -> real 1x1 conv) reduces width and resolution between sections. Changes for
keyword spotting: the cheap stem of :func:`blocks.stem` (25, 8) instead of the grouped stem,
growth 32 in the first two stages (64 later), and transitions placed at the *start* of stages
2 and 3 so every exit sees the full concatenated feature map of its section. Stages 3-5 share
one resolution (7x2), so, as in larq-zoo where every transition pools, they are one section
split by exits with no transition between them: a pool-less transition would only be a
real-valued 1x1 compression, and those were 70 % of the real parameters and half the real
MACs of an earlier layout (which missed the 2x speed and 15x size targets of LCE export).

Stage layout at width 1.0 (transition width, growth x blocks -> channels, feature map):
  1: stem 64, 32 x 2 -> 128 (25, 8)     2: 96, 32 x 3 -> 192 (13, 4)
  3: 128, 64 x 2 -> 256 (7, 2)          4: 64 x 2 -> 384 (7, 2)          5: 64 x 2 -> 512
"""
from __future__ import annotations

import tensorflow as tf

from .blocks import MELIUSNET_Q, AddToLastChannels, binary_conv, bn, channels, real_conv, stem

# (transition/stem width, growth, blocks, pool in the transition; None: no transition)
PLAN = [(64, 32, 2, None), (96, 32, 3, 2), (128, 64, 2, 2), (None, 64, 2, None),
        (None, 64, 2, None)]


def dense_block(x, growth: int, binary: bool, name: str, pa=(1, 1)):
    w = bn(x, name=f"{name}_bn")
    w = binary_conv(w, growth, 3, MELIUSNET_Q, binary, name=f"{name}_bconv", pa=pa)
    return tf.keras.layers.Concatenate(name=f"{name}_concat")([x, w])


def improvement_block(x, growth: int, binary: bool, name: str, pa=(1, 1)):
    w = bn(x, name=f"{name}_bn")
    w = binary_conv(w, growth, 3, MELIUSNET_Q, binary, name=f"{name}_bconv", pa=pa)
    return AddToLastChannels(name=f"{name}_merge")([x, w])


def transition_block(x, filters: int, pool: int, name: str):
    x = bn(x, name=f"{name}_bn")
    x = tf.keras.layers.MaxPool2D(pool, strides=pool, padding="same", name=f"{name}_maxpool")(x)
    x = tf.keras.layers.Activation("relu", name=f"{name}_relu")(x)
    return real_conv(x, filters, 1, name=f"{name}_pw")


def stage_bodies(cfg):
    bodies = []
    for k, (base, growth, blocks, pool) in enumerate(PLAN, start=1):
        filters = channels(base, cfg.width) if base else None
        growth = channels(growth, cfg.width)

        def body(x, k=k, filters=filters, growth=growth, blocks=blocks, pool=pool,
                 pa=cfg.stage_pa_bases[k - 1]):
            if k == 1:
                x = stem(x, filters)
            elif pool:
                x = transition_block(x, filters, pool, name=f"s{k}_trans")
            for b in range(blocks):
                x = dense_block(x, growth, cfg.binary, name=f"s{k}_b{b}_dense", pa=pa)
                x = improvement_block(x, growth, cfg.binary, name=f"s{k}_b{b}_improve", pa=pa)
            return x

        bodies.append(body)
    return bodies
