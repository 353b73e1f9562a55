"""Process-wide TensorFlow settings the package relies on; imported for its effect, once.

AutoGraph rewrites every Python function a ``tf.function`` calls unless its module is on the
do-not-convert list. That list names ``keras`` (Keras 2 used to live there) but not
``tf_keras``, where Keras 2 lives since TensorFlow 2.16 (``TF_USE_LEGACY_KERAS=1``), so every
``fit``/``predict`` transpiled Keras' own training loop, losses and metrics again: measured
35 s of the 44 s first epoch of a tiny model on this 2-core machine, in every process. Keras'
code is written to run as a graph without AutoGraph (which is how TensorFlow <= 2.15 ran it),
so it joins the list; our own layers and Larq's are still converted.
"""
from __future__ import annotations

import bnnkws.frontend  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)


def skip_autograph_for_tf_keras() -> bool:
    """Put ``tf_keras`` on AutoGraph's do-not-convert list (idempotent); False if this
    TensorFlow has no such list (then nothing changes but speed)."""
    try:
        from tensorflow.python.autograph.core import config
    except ImportError:  # a TensorFlow without this private module: only slower
        return False
    rule = config.DoNotConvert("tf_keras")
    if not any(getattr(r, "_prefix", None) == "tf_keras" for r in config.CONVERSION_RULES):
        config.CONVERSION_RULES = (rule,) + tuple(config.CONVERSION_RULES)
    return True


ACTIVE = skip_autograph_for_tf_keras()
