"""Audio in and log-mel features: one parameter set, three implementations that agree.

Nothing here imports TensorFlow at package import: the deployed runtime needs only numpy.
The Keras layer lives in :mod:`bnnkws.frontend.keras_layer` and is imported on demand.
"""
import os

# Larq needs Keras 2; this must be set before TensorFlow is first imported anywhere.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from .config import FrontendConfig, DEFAULT_FRONTEND  # noqa: E402

__all__ = ["FrontendConfig", "DEFAULT_FRONTEND"]
