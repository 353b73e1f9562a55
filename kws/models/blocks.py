"""Building blocks shared by the architectures: binary convolutions, the stem, small layers.

Every binary convolution goes through :func:`binary_conv` so the rules that make a layer
convertible to LCE's ``LceBconv2d`` hold in one place: a binary input quantizer applied directly
to a BatchNorm / residual output (never after a ReLU, which would make every input +1), a binary
kernel quantizer with a weight-clip constraint, no bias, and ``pad_values=1.0`` with "same"
padding (LCE's fast path; +1 padding is exact for sign inputs).

``pa=(M, N)`` (ModelConfig.pa_bases) builds the piecewise-approximation variant of a binary
convolution, M weight and N activation bases (:mod:`bnnkws.kws.models.pa`).

``binary=False`` builds the real-valued twin with the same graph: the kernel is unquantised and
unconstrained, and the input sign is replaced by its straight-through surrogate, the hard tanh
``clip(x, -1, 1)`` (a twin with no input activation at all would be a linear network inside
BiRealNet/MeliusNet sections, which is no fair ceiling).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import bnnkws.frontend  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import larq as lq
import numpy as np
import tensorflow as tf

from bnnkws.kws import tf_setup  # noqa: F401  (Keras' loop is not re-transpiled per process)


# ---------------------------------------------------------------------------------------------
# quantizer sets per architecture (true to larq-zoo)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuantSpec:
    """Which quantizers an architecture's binary layers use."""

    input_quantizer: str  # "ste_sign" | "approx_sign"
    kernel_quantizer: str  # "ste_sign" | "magnitude_aware_sign"
    clip_value: float  # SteSign gradient clip and WeightClip bound

    def make_input_quantizer(self):
        if self.input_quantizer == "ste_sign":
            return lq.quantizers.SteSign(clip_value=self.clip_value)
        return lq.quantizers.get(self.input_quantizer)

    def make_kernel_quantizer(self):
        if self.kernel_quantizer == "ste_sign":
            return lq.quantizers.SteSign(clip_value=self.clip_value)
        return lq.quantizers.get(self.kernel_quantizer)

    def make_constraint(self):
        return lq.constraints.WeightClip(clip_value=self.clip_value)


QUICKNET_Q = QuantSpec("ste_sign", "ste_sign", 1.25)
BIREALNET_Q = QuantSpec("approx_sign", "magnitude_aware_sign", 1.0)
MELIUSNET_Q = QuantSpec("ste_sign", "ste_sign", 1.3)
DENSENET_Q = QuantSpec("ste_sign", "ste_sign", 1.3)


@tf.keras.utils.register_keras_serializable(package="bnnkws")
def hard_tanh(x):
    """Real-valued twin's stand-in for sign: the STE surrogate clip(x, -1, 1)."""
    return tf.clip_by_value(x, -1.0, 1.0)


def channels(base: int, width: float, multiple: int = 8) -> int:
    """Scale a channel count by the width multiplier, rounded to a multiple of 8 (>= 8).

    At width 1.0 the bases are multiples of 32, the bit-packing word of LCE's binary kernels.
    """
    return max(multiple, int(round(base * width / multiple)) * multiple)


# ---------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------
def binary_conv(x, filters: int, kernel, q: QuantSpec, binary: bool, *, strides=1,
                activation=None, name: Optional[str] = None, pa=(1, 1)):
    """A binary convolution (LceBconv2d after conversion), or its real twin.

    ``pa = (M, N)`` with M or N > 1 makes it a piecewise-approximation convolution
    (:class:`bnnkws.kws.models.pa.PAConv2D`, M x N LceBconv2d after conversion): M kernel
    bases and N input bases; a side with one base keeps the architecture's 1-bit quantizer.
    (1, 1) is the plain binary convolution. The real twin ignores ``pa``.
    """
    m, n = (int(v) for v in pa)
    if binary and (m > 1 or n > 1):
        from .pa import PAActivation, PAConv2D, PAWeight

        return PAConv2D(
            filters, kernel, strides=strides, padding="same", pad_values=1.0,
            input_quantizer=PAActivation(n) if n > 1 else q.make_input_quantizer(),
            kernel_quantizer=PAWeight(m) if m > 1 else q.make_kernel_quantizer(),
            kernel_constraint=q.make_constraint(),
            kernel_initializer="glorot_normal", use_bias=False, activation=activation,
            name=name)(x)
    if binary:
        return lq.layers.QuantConv2D(
            filters, kernel, strides=strides, padding="same", pad_values=1.0,
            input_quantizer=q.make_input_quantizer(),
            kernel_quantizer=q.make_kernel_quantizer(),
            kernel_constraint=q.make_constraint(),
            kernel_initializer="glorot_normal", use_bias=False, activation=activation,
            name=name)(x)
    return lq.layers.QuantConv2D(
        filters, kernel, strides=strides, padding="same",
        input_quantizer=hard_tanh, kernel_quantizer=None, kernel_constraint=None,
        kernel_initializer="glorot_normal", use_bias=False, activation=activation,
        name=name)(x)


# Set by bnnkws.kws.training.distribute.synchronized_batch_norm() while a model is built for more
# than one replica: each replica then normalises with the statistics of the *global* batch, so a
# distributed run computes what one device would (plain BatchNormalization would use each
# replica's share of the batch). The variables are the same, so weights load either way.
SYNC_BN = False


def batch_norm(momentum=0.9, epsilon=1e-5, name=None, **kw):
    """``BatchNormalization`` (synchronised across replicas when :data:`SYNC_BN` is set)."""
    if SYNC_BN:
        kw["synchronized"] = True
    return tf.keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, name=name,
                                              **kw)


def bn(x, name=None, momentum=0.9, epsilon=1e-5, **kw):
    return batch_norm(momentum=momentum, epsilon=epsilon, name=name, **kw)(x)


def real_conv(x, filters, kernel, strides=1, name=None, padding="same"):
    """A real-valued convolution (stem, 1x1 transitions/shortcuts): keep these few and small."""
    return tf.keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                                  use_bias=False, kernel_initializer="he_normal", name=name)(x)


@tf.keras.utils.register_keras_serializable(package="bnnkws")
class BlurPool(tf.keras.initializers.Initializer):
    """Fixed anti-aliasing kernel of QuickNet's transition (Zhang 2019), as in larq-zoo."""

    def __call__(self, shape, dtype=None, **kwargs):
        ksize, filters = shape[0], shape[2]
        k = {2: np.array([1, 1]), 3: np.array([1, 2, 1]), 5: np.array([1, 4, 6, 4, 1])}[ksize]
        k = np.outer(k, k).astype("float32")
        k = k / np.sum(k)
        k = np.repeat(k[:, :, None], filters, axis=-1)
        return tf.constant(np.reshape(k, shape), dtype=dtype or "float32")


blurpool_initializer = BlurPool()


@tf.keras.utils.register_keras_serializable(package="bnnkws")
class Standardize(tf.keras.layers.Layer):
    """Fixed log-mel normalisation ``(x - mean) / std`` (constants from ModelConfig, no weights)."""

    def __init__(self, mean: float = 0.0, std: float = 1.0, **kw):
        super().__init__(**kw)
        self.mean = float(mean)
        self.std = float(std)

    def call(self, x):
        return (x - self.mean) * (1.0 / self.std)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@tf.keras.utils.register_keras_serializable(package="bnnkws")
class AddToLastChannels(tf.keras.layers.Layer):
    """MeliusNet's improvement block merge: add ``w`` to the last ``w.channels`` of ``x``."""

    def call(self, inputs):
        x, w = inputs
        f_in, f_w = x.shape[-1], w.shape[-1]
        return x + tf.pad(w, [[0, 0], [0, 0], [0, 0], [f_in - f_w, 0]])


def stem(x, filters: int, name: str = "stem"):
    """Real-valued stem for a (98, 64, 1) log-mel map: /4 in time, /8 in frequency, cheap.

    QuickNet's stem shape (conv to filters/4 + BN + ReLU, 3x3 s2 depthwise, 1x1 conv + BN) for
    every architecture: with one input channel the ImageNet 7x7 / grouped stems would be most
    of the real-valued MACs of the whole network. The first conv is 3x5 with stride (2, 4):
    64 mel bands carry more frequency detail than keyword spotting needs, and every binary layer
    after it costs in proportion to the positions left. Output (25, 8, filters).
    """
    mid = max(8, filters // 4)
    x = real_conv(x, mid, (3, 5), strides=(2, 4), name=f"{name}_conv")
    x = bn(x, name=f"{name}_bn1")
    x = tf.keras.layers.Activation("relu", name=f"{name}_relu")(x)
    x = tf.keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False,
                                        name=f"{name}_dw")(x)
    x = bn(x, name=f"{name}_bn2", scale=False, center=False)
    x = real_conv(x, filters, 1, name=f"{name}_pw")
    return bn(x, name=f"{name}_bn3")
