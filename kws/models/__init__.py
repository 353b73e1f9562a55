"""Early-exit binary networks (QuickNet, BiRealNet, MeliusNet, BinaryDenseNet) for KWS.

Importing this package does not import TensorFlow (the deployed runtime and CWR* import
:mod:`bnnkws.kws.models.head_math` on numpy alone); the builders load it on first call.
"""


def build_stages(cfg, **kw):
    """Stage models ``stage1..stageN`` (see :mod:`bnnkws.kws.models.build`)."""
    from .build import build_stages as _f
    return _f(cfg, **kw)


def build_model(cfg, **kw):
    """Chained early-exit model with outputs ``exit1..exitN`` (logits)."""
    from .build import build_model as _f
    return _f(cfg, **kw)


def describe(cfg_or_model, **kw):
    """Per-exit cumulative MACs, parameters and sizes (see :mod:`bnnkws.kws.models.describe`)."""
    from .describe import describe as _f
    return _f(cfg_or_model, **kw)


__all__ = ["build_stages", "build_model", "describe"]
