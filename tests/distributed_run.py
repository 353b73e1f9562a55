"""One short training run through ``run_training`` for the distribution tests (run as a script).

The tests start it as 1 process (``--distribute none`` or ``mirrored``) or as 2 localhost
workers (``multiworker``, ``TF_CONFIG`` set by the test) and compare the saved weights. The
network is a small stand-in with the real model's interface (log-mel in, ``exit1..exit5``
logits out, batch normalisation built by ``blocks.batch_norm`` so it is synchronised across
replicas like the real one): the full QuickNet takes a minute to trace per process, and with
``--binary`` its sign activations turn float round-off into flipped activations (measured: 1
step on 2 replicas flips a few per cent of stage-1 feature cells), which would hide a real
divergence behind chaos. ``--binary`` uses a binary-kernel dense layer on real-valued inputs:
Bop trains it, but no activation is binarised, so the forward pass is exact up to summation
order and Bop's flips can be compared across device counts.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def tiny_model(cfg, binary: bool):
    import larq as lq
    import tensorflow as tf

    from bnnkws.kws.models.blocks import Standardize, batch_norm

    inp = tf.keras.Input((cfg.frontend.num_frames, cfg.frontend.n_mels), name="logmel")
    x = Standardize(cfg.norm_mean, cfg.norm_std, name="standardize")(inp)
    x = tf.keras.layers.AveragePooling1D(7, name="pool")(x)
    x = tf.keras.layers.Flatten(name="flat")(x)
    if binary:
        x = lq.layers.QuantDense(48, kernel_quantizer="ste_sign",
                                 kernel_constraint="weight_clip", use_bias=False,
                                 kernel_initializer="glorot_normal", name="bdense")(x)
    else:
        x = tf.keras.layers.Dense(48, use_bias=False, name="dense")(x)
    x = batch_norm(name="bn")(x)
    x = tf.keras.layers.Activation("relu")(x)
    out = {f"exit{k}": tf.keras.layers.Dense(cfg.num_classes, name=f"exit{k}")(x)
           for k in range(1, cfg.num_exits + 1)}
    return tf.keras.Model(inp, out, name="tiny")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--distribute", default="none")
    p.add_argument("--devices", type=int, default=None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--binary", action="store_true", help="Bop on a binary-kernel layer")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--pipeline", default="memory",
                   help="memory: cached arrays, no augmentation; shards: TFRecord shards "
                        "with the TensorFlow augmentation on (every draw keyed by clip)")
    p.add_argument("--epoch-sleep", type=float, default=0.0,
                   help="seconds to wait after each epoch (gives a test time to kill a worker)")
    a = p.parse_args(argv)

    from bnnkws.kws.training.train import TrainConfig, run_training

    tc = TrainConfig(data=a.data, width=0.25, epochs=a.epochs, batch_size=32,
                     max_train_clips=128, augment=a.pipeline == "shards", seed=3,
                     pipeline=a.pipeline,
                     real_valued=not a.binary, optimizer="bop" if a.binary else "adam",
                     lr=3e-3, bop_gamma=1e-2, bop_threshold=1e-5, bop_gamma_decay="none",
                     distribute=a.distribute, devices=a.devices, out=a.out, resume=a.resume,
                     cache_dir=a.cache_dir, verbose=2)
    import tensorflow as tf

    class Sleep(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print(f"epoch {epoch + 1} done", file=sys.stderr, flush=True)
            time.sleep(a.epoch_sleep)

    out = run_training(tc, model_fn=lambda cfg: tiny_model(cfg, a.binary),
                       extra_callbacks=[Sleep()])
    print(json.dumps({"out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
