"""Bi-Real Net (Liu et al. 2018, larq-zoo ``literature/birealnet.py``) for a 98x64 log-mel input.

Block structure as in larq-zoo: every binary 3x3 convolution has its own shortcut (the "bi-real"
identity around each conv): ApproxSign input quantizer, magnitude-aware sign kernel quantizer,
WeightClip(1), BN, add. A block that changes width uses stride 2 in its binary conv and a
shortcut of AvgPool(2) -> real 1x1 conv -> BN. Changes for keyword spotting: the cheap stem of
:func:`blocks.stem` (25, 8) instead of 7x7 conv + max-pool, and Bi-Real-18's four sections of
four binary convolutions reshaped into five stages of 4 + 4 + 2 + 2 + 2 = 14, the last three
at 256 filters and 7x2 resolution instead of a 512-filter section (2,800 training clips, and
a 3x3 conv on a 4x1 map would be mostly padding).

Stage layout at width 1.0 (filters x binary convs, feature map):
  1: stem + 4 x 64 (25, 8)   2: 4 x 128 (13, 4)   3: 2 x 256 (7, 2)   4: 2 x 256   5: 2 x 256
"""
from __future__ import annotations

import tensorflow as tf

from .blocks import BIREALNET_Q, binary_conv, bn, channels, real_conv, stem

PLAN = [(64, 4), (128, 4), (256, 2), (256, 2), (256, 2)]


def residual_block(x, out_filters: int, binary: bool, name: str, pa=(1, 1)):
    in_filters = int(x.shape[-1])
    shortcut = x
    strides = 1
    if in_filters != out_filters:
        strides = 2
        shortcut = tf.keras.layers.AvgPool2D(2, strides=2, padding="same",
                                             name=f"{name}_sc_pool")(shortcut)
        shortcut = real_conv(shortcut, out_filters, 1, name=f"{name}_sc_conv")
        shortcut = bn(shortcut, name=f"{name}_sc_bn", momentum=0.8)
    y = binary_conv(x, out_filters, 3, BIREALNET_Q, binary, strides=strides,
                    name=f"{name}_bconv", pa=pa)
    y = bn(y, name=f"{name}_bn", momentum=0.8)
    return tf.keras.layers.Add(name=f"{name}_add")([y, shortcut])


def stage_bodies(cfg):
    bodies = []
    for k, (base, blocks) in enumerate(PLAN, start=1):
        filters = channels(base, cfg.width)

        def body(x, k=k, filters=filters, blocks=blocks, pa=cfg.stage_pa_bases[k - 1]):
            if k == 1:
                x = stem(x, filters)
            for b in range(blocks):
                x = residual_block(x, filters, cfg.binary, name=f"s{k}_b{b}", pa=pa)
            return x

        bodies.append(body)
    return bodies
