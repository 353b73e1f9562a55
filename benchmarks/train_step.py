"""Training throughput of the shipped recipe's model, with and without XLA (issue 38).

    TF_ENABLE_ONEDNN_OPTS=0 .venv/bin/python benchmarks/train_step.py --jit    # then without
    TF_ENABLE_ONEDNN_OPTS=0 .venv/bin/python benchmarks/train_step.py

Builds the recipe's QuickNet (stage filters 64..512, exit weights 3,2,1,1,1) with 200
auxiliary classes, compiles it as `kws train` does (Bop + Adam, `compile_model`), fits two
batches to trace (and compile), then times one epoch of ``--batches`` random batches and prints
clips/s. Run the two variants in turn, a few times each: this machine's speed drifts.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jit", action="store_true", help="compile the training step with XLA")
    p.add_argument("--batch-size", type=int, default=32, help="clips per step")
    p.add_argument("--batches", type=int, default=20, help="timed steps")
    p.add_argument("--aux", type=int, default=200, help="auxiliary classes")
    args = p.parse_args()

    import bnnkws.frontend  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
    from bnnkws.kws.data.speech_commands import LABELS12
    from bnnkws.kws.models import build_model
    from bnnkws.kws.training import train as T
    from bnnkws.kws.training.config import TrainConfig

    tc = TrainConfig(data="x", arch="quicknet", stage_filters=[64, 128, 256, 512, 512],
                     binary_bn_epsilon=1.0, exit_weights=[3, 2, 1, 1, 1], aux_vocab=True)
    cfg = T.make_model_config(tc, LABELS12, -5.0, 4.0)
    model = T.with_aux_heads(build_model(cfg), cfg, args.aux)
    T.compile_model(model, cfg, T.make_optimizer(tc, 100), aux_weight=tc.aux_weight,
                    jit_compile=args.jit)
    b, n = args.batch_size, args.batch_size * args.batches
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 98, 64)).astype("float32")
    y = {k: rng.integers(0, 12, n) for k in cfg.exit_names}
    y.update({f"aux{k[4:]}": rng.integers(0, args.aux, n) for k in cfg.exit_names})
    model.fit(x[:2 * b], {k: v[:2 * b] for k, v in y.items()}, batch_size=b, verbose=0)
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=b, epochs=1, verbose=0)
    print(f"jit={args.jit} batch={b}: {n / (time.perf_counter() - t0):.1f} clips/s")


if __name__ == "__main__":
    main()
