"""BinaryDenseNet (Bethge et al. 2019, larq-zoo ``literature/densenet.py``) for 98x64 log-mel.

Block structure as in larq-zoo: densely connected layer = BN -> binary 3x3 conv (``growth``
filters; SteSign(1.3), WeightClip(1.3)) -> concatenate; transition = BN -> MaxPool(2) -> ReLU ->
real 1x1 conv reducing the width. Changes for keyword spotting: the cheap stem of
:func:`blocks.stem` (25, 8), growth 32 in the first two stages (64 later), five stages of four
layers, transitions at the start of stages 2-5 (4 and 5 without pooling at 7x2).

Stage layout at width 1.0 (transition width, growth x layers -> channels, feature map):
  1: stem 64, 32 x 4 -> 192 (25, 8)     2: 96, 32 x 4 -> 224 (13, 4)
  3: 128, 64 x 4 -> 384 (7, 2)          4: 192, 64 x 4 -> 448    5: 224, 64 x 4 -> 480
"""
from __future__ import annotations

import tensorflow as tf

from .blocks import DENSENET_Q, binary_conv, bn, channels, stem
from .meliusnet import transition_block

PLAN = [(64, 32, 4, None), (96, 32, 4, 2), (128, 64, 4, 2), (192, 64, 4, 1), (224, 64, 4, 1)]


def densely_connected_block(x, growth: int, binary: bool, name: str, pa=(1, 1)):
    y = bn(x, name=f"{name}_bn")
    y = binary_conv(y, growth, 3, DENSENET_Q, binary, name=f"{name}_bconv", pa=pa)
    return tf.keras.layers.Concatenate(name=f"{name}_concat")([x, y])


def stage_bodies(cfg):
    bodies = []
    for k, (base, growth, layers, pool) in enumerate(PLAN, start=1):
        filters, growth = channels(base, cfg.width), channels(growth, cfg.width)

        def body(x, k=k, filters=filters, growth=growth, layers=layers, pool=pool,
                 pa=cfg.stage_pa_bases[k - 1]):
            if k == 1:
                x = stem(x, filters)
            else:
                x = transition_block(x, filters, pool, name=f"s{k}_trans")
            for b in range(layers):
                x = densely_connected_block(x, growth, cfg.binary, name=f"s{k}_l{b}", pa=pa)
            return x

        bodies.append(body)
    return bodies
