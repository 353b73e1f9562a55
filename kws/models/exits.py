"""Exit heads: global average pooling -> BatchNorm ("embedding") -> binary dense -> scale ("logits").

The exact arithmetic (reproducible in numpy) is documented and implemented in
:mod:`bnnkws.kws.models.head_math`. Why the learned scale: a bare binary dense outputs integers in
[-D, D]; with D = 64..256 the softmax is one-hot and its entropy ~0 at every exit, which defeats
the entropy exit rule. ``scale`` starts at 1/sqrt(D) and is learned with the real-valued
variables, so the softmax can become calibrated (temperature scaling then fine-tunes it).
"""
from __future__ import annotations

import math

import bnnkws.frontend  # noqa: F401
import larq as lq
import numpy as np
import tensorflow as tf

from . import head_math
from .blocks import batch_norm


@tf.keras.utils.register_keras_serializable(package="bnnkws")
class ExitScale(tf.keras.layers.Layer):
    """``logits = scale * z + bias`` with a learned scalar ``scale`` and per-class ``bias``."""

    def __init__(self, init_scale: float = 1.0, learn_scale: bool = True, **kw):
        super().__init__(**kw)
        self.init_scale = float(init_scale)
        self.learn_scale = bool(learn_scale)

    def build(self, input_shape):
        self.scale = self.add_weight(
            "scale", shape=(), initializer=tf.keras.initializers.Constant(self.init_scale),
            trainable=self.learn_scale)
        self.bias = self.add_weight("bias", shape=(int(input_shape[-1]),), initializer="zeros",
                                    trainable=True)
        super().build(input_shape)

    def call(self, z):
        return z * self.scale + self.bias

    def get_config(self):
        return {**super().get_config(), "init_scale": self.init_scale,
                "learn_scale": self.learn_scale}


def global_pool(x, name="pool"):
    """Global average pooling as AveragePooling2D + Flatten (faster than GAP in LCE; larq-zoo)."""
    h, w = int(x.shape[1]), int(x.shape[2])
    x = tf.keras.layers.AveragePooling2D(pool_size=(h, w), name=name)(x)
    return tf.keras.layers.Flatten(name=f"{name}_flat")(x)


def exit_head(fmap, num_classes: int, binary: bool = True, scaled: bool = True,
              expand: int = 0):
    """Return ``(embedding, logits)`` tensors for a stage's feature map.

    ``expand > 0`` puts a binary 1x1 convolution (ReLU) to ``expand`` channels before the
    pooling: stage 1's 64 pooled channels are all that exit 1 otherwise sees. ``scaled=False``
    drops the learned scale (plain binary dense + bias) and exists only to measure what the
    scale buys; models are always built with it.
    """
    if expand:
        from .blocks import QUICKNET_Q, binary_conv

        fmap = binary_conv(fmap, int(expand), 1, QUICKNET_Q, binary, activation="relu",
                           name="exit_expand")
    x = global_pool(fmap, name="exit_pool")
    emb = batch_norm(momentum=0.9, epsilon=1e-5, name="embedding")(x)
    d = int(emb.shape[-1])
    if binary:
        dense = lq.layers.QuantDense(
            num_classes, use_bias=False, name="exit_dense",
            input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip", kernel_initializer="glorot_normal")
    else:
        dense = lq.layers.QuantDense(num_classes, use_bias=False, name="exit_dense",
                                     kernel_initializer="glorot_normal")
    z = dense(emb)
    if scaled:
        logits = ExitScale(1.0 / math.sqrt(d) if binary else 1.0, name="logits")(z)
    else:
        logits = ExitScale(1.0, learn_scale=False, name="logits")(z)
    return emb, logits


def head_params(stage_model) -> dict:
    """The head's numpy parameters of a stage model: kernel (D, C), scale, bias, binary.

    ``head_math.exit_logits(embedding, **head_params(stage))`` reproduces the stage's logits.
    """
    dense = stage_model.get_layer("exit_dense")
    scale_layer = stage_model.get_layer("logits")
    binary = dense.kernel_quantizer is not None
    return {
        "kernel": np.asarray(dense.kernel.numpy()),
        "scale": float(scale_layer.scale.numpy()),
        "bias": np.asarray(scale_layer.bias.numpy()),
        "binary": binary,
    }


__all__ = ["ExitScale", "exit_head", "global_pool", "head_params", "head_math"]
