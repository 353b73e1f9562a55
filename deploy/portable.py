"""Portable TFLite twins: the same binary model without LCE custom ops.

The stock ``tf.lite.TFLiteConverter`` applied to a Larq model lowers every quantizer to builtin
ops: a weight quantizer on a constant kernel is constant-folded, so the binary kernels are
stored as +-1 floats (times the per-channel magnitude for BiRealNet's magnitude-aware sign), and
input quantizers become SIGN/ADD (Larq's ``sign(sign(x) + 0.1)``, which maps 0 to +1 exactly as
LCE's bit packing does). ``pad_values=1`` padding becomes PADV2. The result runs on any TFLite
runtime (ai-edge-litert on aarch64 Linux), computes what the LCE file computes up to float
rounding, and is ~30x larger and slower than the LCE file.
"""
from __future__ import annotations

import bnnkws.frontend  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from bnnkws.frontend.keras_layer import tflite_op_names


class PortableError(RuntimeError):
    pass


def convert_portable(model) -> bytes:
    """Builtin-ops-only TFLite flatbuffer of a Larq/Keras model (raises if a custom op remains)."""
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flat = conv.convert()
    check_builtin_only(flat, getattr(model, "name", "model"))
    return flat


def convert_float(model) -> bytes:
    """Float-32 TFLite of a real-valued model with the stock converter (same as the twin)."""
    return convert_portable(model)


def custom_ops(flatbuffer: bytes) -> set:
    """Names of non-builtin ops in a flatbuffer (LceBconv2d, LceQuantize, Flex...)."""
    from tensorflow.lite.python import schema_py_generated as schema

    names = set(tflite_op_names(flatbuffer))
    builtin = {k for k in vars(schema.BuiltinOperator) if not k.startswith("_")}
    return {n for n in names if n not in builtin}


def check_builtin_only(flatbuffer: bytes, what: str) -> None:
    bad = custom_ops(flatbuffer)
    if bad:
        raise PortableError(f"{what}: portable conversion left custom ops {sorted(bad)}")
