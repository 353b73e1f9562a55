import os

# Larq needs Keras 2; set before TensorFlow is first imported (no-op if already set).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
