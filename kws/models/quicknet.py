"""QuickNet (Bannink et al. 2021, larq-zoo ``sota/quicknet.py``) for a 98x64 log-mel input.

Block structure as in larq-zoo: residual block = binary 3x3 conv (SteSign(1.25) input and
kernel, WeightClip(1.25), ReLU on the conv output) -> BN -> add the identity; transition block
(whenever the width changes) = ReLU -> MaxPool(2, stride 1) -> fixed blur-pool 3x3 depthwise
(stride 2) -> real 1x1 conv -> BN. Changes for keyword spotting: the stem (see
:func:`blocks.stem`) reduces (98, 64) to (25, 8); five stages instead of four sections, so that
each exit sees a full stage. Stage k's feature map is the residual stream after its last block.

Stage layout at width 1.0 (filters, residual blocks, feature map):
  1: stem + 3 x 64   (25, 8)      2: transition + 3 x 128 (13, 4)
  3: transition + 2 x 256 (7, 2)  4: 2 x 256 (7, 2)          5: 2 x 256 (7, 2)
"""
from __future__ import annotations

import tensorflow as tf

from .blocks import QUICKNET_Q, binary_conv, blurpool_initializer, bn, channels, real_conv, stem

# (filters at width 1, residual blocks, stride of the transition into the stage)
PLAN = [(64, 3, None), (128, 3, 2), (256, 2, 2), (256, 2, 1), (256, 2, 1)]


def residual_block(x, binary: bool, name: str, bn_epsilon: float, pa=(1, 1)):
    y = binary_conv(x, int(x.shape[-1]), 3, QUICKNET_Q, binary, activation="relu",
                    name=f"{name}_bconv", pa=pa)
    y = bn(y, name=f"{name}_bn", epsilon=bn_epsilon)
    return tf.keras.layers.Add(name=f"{name}_add")([x, y])


def transition_block(x, filters: int, strides: int, name: str):
    x = tf.keras.layers.Activation("relu", name=f"{name}_relu")(x)
    if strides > 1:
        x = tf.keras.layers.MaxPool2D(pool_size=strides, strides=1, padding="same",
                                      name=f"{name}_maxpool")(x)
        x = tf.keras.layers.DepthwiseConv2D(
            3, depthwise_initializer=blurpool_initializer, padding="same", strides=strides,
            trainable=False, use_bias=False, name=f"{name}_blurpool")(x)
    x = real_conv(x, filters, 1, name=f"{name}_pw")
    return bn(x, name=f"{name}_bn")


def stage_bodies(cfg):
    """One callable per stage: tensor in -> feature map out (stage 1 gets (98, 64, 1)).

    ``cfg.stage_filters`` replaces the plan's filters; a stage whose width differs from the
    previous one starts with a transition block (stride 1 where the plan keeps the resolution).
    """
    bases = cfg.stage_filters or [base for base, _, _ in PLAN]
    bodies = []
    for k, ((_, blocks, stride), base) in enumerate(zip(PLAN, bases), start=1):
        filters = channels(base, cfg.width)

        def body(x, k=k, filters=filters, blocks=blocks, stride=stride,
                 pa=cfg.stage_pa_bases[k - 1]):
            if k == 1:
                x = stem(x, filters)
            elif filters != int(x.shape[-1]) or stride > 1:
                x = transition_block(x, filters, stride, name=f"s{k}_trans")
            for b in range(blocks):
                x = residual_block(x, cfg.binary, name=f"s{k}_b{b}",
                                   bn_epsilon=cfg.binary_bn_epsilon, pa=pa)
            return x

        bodies.append(body)
    return bodies
