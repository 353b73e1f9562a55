"""Measuring a trained model: per-exit logits over a split (``evaluate``), the report with the
δ sweep, confusion and accuracy-versus-compute (``report``), temperature calibration
(``calibration``), the frozen-embedding transfer benchmark (``transfer``) and the
continual-learning protocol for CWR* and its baselines (``cl_eval``).

Evaluation takes providers (functions from clips to logits), never a bundle, so ``kws`` does not
import ``deploy``.
"""
