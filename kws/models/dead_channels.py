"""Fold dead channels of the batch norms that follow binary convolutions, before conversion.

A channel whose binary convolution output never passes its ReLU (QuickNet's block: bconv ->
ReLU -> BN) reaches its BN as a constant 0, so BN learns a moving variance of ~0 and a
multiplier gamma / sqrt(var + eps) of ~300. LCE fuses that BN into the binary convolution's
output transform, rewritten around the popcount (out = (K - 2 popcount) * m + b, i.e. a bias of
K * m ~ 7e5 for K = 3*3*256), where float32's spacing is 0.0625: the channel's constant output
comes out 0.05 off, the following sign flips, and LCE's predictions then disagree with Keras on
~2 % of clips at the last exit (measured on the shipped QuickNet: 97.6 % top-1 agreement at
exit 5; after folding: see the export check). Replacing such a channel's BN by its constant
(gamma = 0, beta = the value it always outputs) is exact for every input the channel ever saw
in training and removes the huge multiplier.
"""
from __future__ import annotations

import numpy as np

# A binary convolution's output is an integer; after the ReLU any nonzero value is >= 1, so a
# variance below this means the channel fired at under ~0.1 % of positions in training.
DEAD_VARIANCE = 1e-3


def fold_dead_channels(model, threshold: float = DEAD_VARIANCE) -> int:
    """Fold dead channels in place; return how many channels were folded.

    Only batch norms whose input layer is a binary (quantized-kernel) convolution are touched:
    there the input is integer-valued, so a near-zero variance really means a constant input.
    """
    import larq as lq
    import tensorflow as tf

    from .pa import PAConv2D

    folded = 0
    for layer in _all_layers(model):
        if not isinstance(layer, tf.keras.layers.BatchNormalization):
            continue
        src = _input_layer(layer)
        if not (isinstance(src, lq.layers.QuantConv2D) and src.kernel_quantizer is not None):
            continue
        if isinstance(src, PAConv2D):  # a sum of scaled bconvs: not a count, and LCE cannot
            continue                   # fuse the BN into one bconv's output transform anyway
        gamma = layer.gamma.numpy() if layer.gamma is not None else None
        beta = layer.beta.numpy() if layer.beta is not None else None
        mean, var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
        if gamma is None or beta is None:
            continue
        dead = var < threshold
        if not dead.any():
            continue
        # The value the channel outputs for its (constant) mean input: exactly Keras's output.
        const = beta - mean * gamma / np.sqrt(var + layer.epsilon)
        layer.gamma.assign(np.where(dead, 0.0, gamma).astype(gamma.dtype))
        layer.beta.assign(np.where(dead, const, beta).astype(beta.dtype))
        layer.moving_mean.assign(np.where(dead, 0.0, mean).astype(mean.dtype))
        layer.moving_variance.assign(np.where(dead, 1.0, var).astype(var.dtype))
        folded += int(dead.sum())
    return folded


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):  # nested stage models
            yield from _all_layers(layer)
        yield layer


def _input_layer(layer):
    try:
        node = layer._inbound_nodes[0]
        inbound = node.inbound_layers
    except (AttributeError, IndexError):
        return None
    if isinstance(inbound, (list, tuple)):
        return inbound[0] if len(inbound) == 1 else None
    return inbound
