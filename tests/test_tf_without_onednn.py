"""TensorFlow-side code on a CPU where TensorFlow leaves its oneDNN kernels off.

TensorFlow turns oneDNN on by default only on some x86 CPUs, and a few ops accept arguments
only there (a depthwise convolution with unequal row/column strides, for one). The developers'
machine may have oneDNN on, so these tests start a subprocess with ``TF_ENABLE_ONEDNN_OPTS=0``
and run what users run: the log-mel layer in every DFT mode eagerly and inside ``fit`` and
``predict``, then ``kws train`` (with the distillation heads and their gathered targets, and
AM-softmax auxiliary heads) and
``kws export`` (whose bundle check runs the layer eagerly) on real clips.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, tmp_path: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "0",
           "KWS_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-5000:]}"
    # proof that the subprocess really ran TensorFlow without oneDNN: TF logs it when on
    assert "oneDNN custom operations are on" not in p.stderr
    return p


def test_log_mel_layer_every_mode_without_onednn(sc_v2, tmp_path):
    p = _run(f"""
        import json
        from pathlib import Path
        import numpy as np
        from bnnkws.frontend.audio import load_audio
        from bnnkws.frontend.config import DFT_MODES
        from bnnkws.frontend.keras_layer import LogMel, convert, frontend_model, tflite_op_names
        from bnnkws.frontend.reference import log_mel_batch
        import tensorflow as tf
        import tf_keras as keras

        files = [sorted(Path({str(sc_v2)!r}, w).glob("*.wav"))[0]
                 for w in ("yes", "stop", "_silence_", "_unknown_")]
        x = np.stack([load_audio(f, length=16000) for f in files])
        ref = log_mel_batch(x)
        out = {{}}
        for mode in DFT_MODES:
            eager = LogMel(dft=mode)(tf.constant(x)).numpy()
            model = frontend_model(dft=mode)
            pred = model.predict(x, verbose=0)
            # inside fit: a trainable layer after the frontend, one step
            head = keras.Sequential([model, keras.layers.Flatten(), keras.layers.Dense(2)])
            head.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            loss = head.fit(x, np.array([0, 1, 0, 1]), epochs=1, verbose=0).history["loss"][0]
            ops = tflite_op_names(convert(model, "lce", quiet=True))
            out[mode] = {{"eager": float(np.abs(eager - ref).max()),
                          "predict": float(np.abs(pred - ref).max()),
                          "loss": float(loss), "ops": sorted(set(ops))}}
        print(json.dumps(out))
        """, tmp_path)
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(res) == {"fourstep", "rfft", "matmul"}
    for mode, r in res.items():
        assert r["eager"] <= 1e-4 and r["predict"] <= 1e-4, (mode, r)
        assert r["loss"] == r["loss"], mode  # finite: fit ran
        assert not [o for o in r["ops"] if o.startswith("Flex")], (mode, r["ops"])
    assert "DEPTHWISE_CONV_2D" in res["fourstep"]["ops"]


def test_kws_train_and_export_without_onednn(sc_v2, tmp_path):
    p = _run(f"""
        import json
        from bnnkws.app.cli import main
        run, bundle = "run", "bundle"
        assert main(["train", "--data", {str(sc_v2)!r}, "--arch", "quicknet", "--width", "0.25",
                     "--epochs", "1", "--batch-size", "32", "--max-train-clips", "96",
                     "--no-augment", "--distill", "speech-embedding", "--quiet",
                     "--aux-vocab", "--aux-margin", "0.2",
                     "--out", run]) == 0
        assert main(["export", run, "--out", bundle, "--lean"]) == 0
        print(json.dumps(json.load(open(bundle + "/manifest.json"))["checks"]))
        """, tmp_path)
    checks = json.loads(p.stdout.strip().splitlines()[-1])
    assert checks, "the export wrote no bundle checks"
    from bnnkws.deploy.runtime import Detector
    from bnnkws.frontend.audio import load_audio

    det = Detector(tmp_path / "bundle")
    r = det.classify(audio=load_audio(sorted((sc_v2 / "yes").glob("*.wav"))[0], length=16000))
    assert r.label in det.labels and 1 <= r.exit <= len(det.bundle.exits)
