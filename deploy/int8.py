"""The int8 twin: full-integer post-training quantization of the float-32 twin (issue 19).

What a user would deploy instead of a binary network: the real-valued graph with int8 weights
and activations. ``tf.lite.TFLiteConverter`` with ``Optimize.DEFAULT`` and a representative
dataset calibrates every activation's range; ``TFLITE_BUILTINS_INT8`` makes every op integer
(the float input/output get a QUANTIZE/DEQUANTIZE at the edges, so the runtime feeds it like
the other twins). Batch 1 and static shapes (the export's ``named_io_model``), so XNNPACK's
int8 kernels take the whole graph.

The float twin of a *binary* run carries the latent binary weights: its int8 twin stands in
for the latency of the architecture only. For the accuracy int8 would give, quantize a
``kws train --real-valued`` run the same way (export it in full).

Calibration data: ``n`` training clips of the run (``split.json``), as raw audio for stage 1
(frontend inside) and as log-mels for the log-mel-input stage 1; stage k > 1 is calibrated on
the float twin's stage k-1 feature maps of the same clips.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import bnnkws.frontend  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

DEFAULT_CALIBRATION_CLIPS = 300


def calibration_audio(run_dir, fcfg, n: int = DEFAULT_CALIBRATION_CLIPS, seed: int = 0):
    """``(audio (n, samples) float32, description)``: random training clips of the run, or
    speech-like synthetic clips when there is no run (tests, a model passed in directly)."""
    from bnnkws.frontend.audio import load_audio

    split = Path(run_dir) / "split.json" if run_dir is not None else None
    if split is not None and split.is_file():
        # Generated-noise silence clips (``noise:white``, a corpus without _background_noise_)
        # are named by kind alone in split.json, without their seed: not audio to re-read.
        paths = [p for p in json.loads(split.read_text()).get("train") or []
                 if not p.startswith("noise:")]
        if paths:
            rng = np.random.default_rng(seed)
            pick = sorted(rng.choice(len(paths), min(n, len(paths)), replace=False))
            audio = np.stack([load_audio(paths[i], sr=fcfg.sample_rate, length=fcfg.clip_samples)
                              for i in pick]).astype(np.float32)
            return audio, f"{len(pick)} training clips of {run_dir} (split.json, seed {seed})"
    from .bench import speechlike_clip

    rng = np.random.default_rng(seed)
    audio = np.stack([speechlike_clip(fcfg, i) * rng.uniform(0.2, 3.0) for i in range(n)])
    return audio.astype(np.float32), f"{n} synthetic speech-like clips (no run directory)"


def stage_inputs(fstages, logmels) -> list:
    """Per stage, its float-twin input on the calibration clips: stage 1 the log-mels, stage k
    the float stage k-1's ``fmap`` (batched through Keras)."""
    xs, x = [], logmels
    for st in fstages:
        xs.append(x)
        out = st.predict(x, batch_size=32, verbose=0)
        x = out.get("fmap") if isinstance(out, dict) else None
        if x is None:
            break
    return xs


def convert_int8(model, samples) -> tuple[bytes, str]:
    """Full-integer TFLite flatbuffer of a batch-1 Keras model; ``samples`` (n, ...) float32
    calibrate it. Returns ``(flatbuffer, mode)``: ``"int8"`` when every op is integer, or
    ``"int8+float"`` when some op has no int8 kernel and the converter had to keep it float."""
    import tensorflow as tf

    samples = np.asarray(samples, np.float32)

    def representative():
        for i in range(samples.shape[0]):
            yield [samples[i : i + 1]]

    def conv(ops):
        c = tf.lite.TFLiteConverter.from_keras_model(model)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = representative
        c.target_spec.supported_ops = ops
        return c.convert()

    try:
        return conv([tf.lite.OpsSet.TFLITE_BUILTINS_INT8]), "int8"
    except Exception:  # noqa: BLE001 - the converter raises ConverterError or RuntimeError
        return conv([tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]), \
            "int8+float"
