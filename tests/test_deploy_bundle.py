"""Bundle layout, hashes and refusal of damaged or incompatible bundles (deploy, issue 6)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat

import numpy as np
import pytest

from bnnkws.deploy.bundle import FORMAT_VERSION, Bundle, BundleError
from bnnkws.deploy.interpreters import open_file


def test_bundle_files_manifest_and_hashes(tiny_bundle):
    b = Bundle.load(tiny_bundle)
    m = b.manifest
    n = len(b.stages)
    expected = {"stage1.tflite", "stage1_features.tflite", "portable/stage1.tflite",
                "portable/stage1_features.tflite", "float32/stage1.tflite", "heads.npz"}
    expected |= {f"stage{k}.tflite" for k in range(2, n + 1)}
    expected |= {f"portable/stage{k}.tflite" for k in range(2, n + 1)}
    assert expected <= set(m["files"])
    for name, info in m["files"].items():
        data = (tiny_bundle / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"], name
    assert m["format_version"] == FORMAT_VERSION
    for key in ("labels", "frontend", "model_config", "temperatures", "delta", "policy", "tools",
                "enrolment", "created", "exits"):
        assert key in m, key
    assert m["tools"]["larq-compute-engine"] and m["tools"]["tensorflow"]
    assert m["frontend"]["n_mels"] == 64 and len(m["labels"]) == 12
    # LCE stages are binary (custom ops), portable ones are not and are much larger
    lce = sum(m["files"][f"stage{k}.tflite"]["bytes"] for k in range(2, n + 1))
    port = sum(m["files"][f"portable/stage{k}.tflite"]["bytes"] for k in range(2, n + 1))
    assert port > 4 * lce, (lce, port)
    # the export's own check ran on its synthetic clip and recorded its figures; its numpy heads
    # reproduce the TFLite logits exactly (same embedding). Whether LCE, portable and Keras compute
    # the same network is judged stage by stage in test_deploy_runtime.py: top-1 on one clip after
    # five stages can differ through one rounding flip, depending on the trained draw (issue 36).
    c = m["checks"]
    assert {"heads_vs_tflite_logits_max_abs", "lce_vs_portable_logits_max_abs",
            "lce_vs_keras_logits_max_abs", "top1_lce_eq_portable", "top1_lce_eq_keras"} <= set(c)
    assert c["heads_vs_tflite_logits_max_abs"] <= 1e-4
    assert isinstance(c["top1_lce_eq_portable"], bool) and isinstance(c["top1_lce_eq_keras"], bool)
    # written in a private temporary directory, but shared like a folder made by mkdir
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(tiny_bundle.stat().st_mode) == 0o777 & ~umask


def _copy(tiny_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_corrupted_file_is_refused_naming_it(tiny_bundle, tmp_path):
    dst = _copy(tiny_bundle, tmp_path)
    p = dst / "stage2.tflite"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"stage2\.tflite.*SHA-256 mismatch"):
        Bundle.load(dst)


def test_missing_and_truncated_files_are_refused(tiny_bundle, tmp_path):
    dst = _copy(tiny_bundle, tmp_path)
    (dst / "portable" / "stage3.tflite").unlink()
    with pytest.raises(BundleError, match=r"stage3\.tflite.*missing"):
        Bundle.load(dst)
    dst2 = tmp_path / "c"
    shutil.copytree(tiny_bundle, dst2)
    p = dst2 / "heads.npz"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"heads\.npz"):
        Bundle.load(dst2)


def test_wrong_format_version_and_bad_manifest_are_refused(tiny_bundle, tmp_path):
    dst = _copy(tiny_bundle, tmp_path)
    m = json.loads((dst / "manifest.json").read_text())
    m["format_version"] = FORMAT_VERSION + 1
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"manifest\.json.*format version"):
        Bundle.load(dst)
    (dst / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest\.json.*not valid JSON"):
        Bundle.load(dst)
    with pytest.raises(BundleError, match="not a bundle"):
        Bundle.load(tmp_path)


def test_stage_outputs_are_found_by_name(tiny_bundle):
    """Every stage file's outputs carry our names, and the name->position map is right: the
    'logits' output equals the numpy head applied to the 'embedding' output."""
    b = Bundle.load(tiny_bundle)
    rng = np.random.default_rng(0)
    x = rng.normal(-6, 2, size=(1, 98, 64)).astype(np.float32)
    files = [b.stages[0].features_file] + [s.file for s in b.stages[1:]]
    stages = b.stages
    for i, (spec, name) in enumerate(zip(stages, files)):
        _, outs = b.io(name)
        names = {o.name for o in outs}
        last = i == len(stages) - 1
        assert names == ({"embedding", "logits"} if last else {"fmap", "embedding", "logits"})
        r = open_file(b, name, "lce")
        o = r.run(x)
        assert o["logits"].shape == (1, len(b.labels))
        from bnnkws.deploy.bundle import head_logits

        np.testing.assert_allclose(head_logits(b.heads[spec.exit], o["embedding"])[0],
                                   o["logits"][0], atol=1e-4)
        if not last:
            assert o["fmap"].ndim == 4
            x = o["fmap"]


def test_write_heads_enrolment_keeps_bundle_valid(tiny_bundle, tmp_path):
    from bnnkws.deploy.runtime import Detector

    dst = _copy(tiny_bundle, tmp_path)
    b = Bundle.load(dst)
    heads = {}
    for k, h in b.heads.items():
        w = np.concatenate([np.where(h["kernel"] >= 0, 1.0, -1.0) * h["scale"],
                            np.zeros((h["kernel"].shape[0], 1))], axis=1)
        heads[k] = (w, np.concatenate([h["bias"], [-100.0]]))
    b.write_heads(heads, b.labels + ["marvin"], {"kind": "test"})
    b2 = Bundle.load(dst)
    assert b2.labels[-1] == "marvin" and len(b2.manifest["enrolment"]) == 1
    det = Detector(b2)
    clip = np.random.default_rng(1).normal(0, 0.05, 16000).astype(np.float32)
    z = det.exit_logits(audio=clip)
    assert z.shape == (len(b2.exits), 13)
    # the old classes' logits are unchanged by the new (sign_input, real kernel) form
    z_old = Detector(tiny_bundle).exit_logits(audio=clip)
    np.testing.assert_allclose(z[:, :12], z_old, atol=1e-4)


def test_cli_errors_name_the_path(tmp_path, capsys):
    from bnnkws.app.cli import main

    assert main(["bench", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not a bundle" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert f"{tmp_path}: not a training run" in capsys.readouterr().err
    assert main(["deploy", str(tmp_path), "--target", "pi", "--out", str(tmp_path / "d")]) == 2
    assert "neither a bundle" in capsys.readouterr().err


def test_bundle_remembers_its_training_split_for_eval_and_bench(tiny_run, sc_v2, tmp_path):
    """A model trained with split seed 1 must be scored on seed 1's test speakers, not seed 0's
    (some of which it trained on)."""
    from bnnkws.deploy.bench import load_clips
    from bnnkws.deploy.export import training_split

    tc = json.loads((tiny_run / "train_config.json").read_text())
    assert training_split(tiny_run) == {"data": tc["data"], "task": tc["task"], "seed": tc["seed"]}
    assert training_split(tmp_path) is None and training_split(None) is None
    assert Bundle(tmp_path, {"source": {"run": None}}).split_seed == 0  # older bundles
    assert Bundle(tmp_path, {"source": {"split": {"seed": 1}}}).split_seed == 1
    labels = ["yes", "no"]
    a0, _ = load_clips(sc_v2, labels, "testing", split_seed=0)
    a1, _ = load_clips(sc_v2, labels, "testing", split_seed=1)
    t0 = {x.tobytes() for x in a0}
    assert len(t0 ^ {x.tobytes() for x in a1}) > 0  # other speakers are held out


def test_exported_manifest_records_the_split(tiny_bundle_keras, tiny_run, tmp_path):
    from bnnkws.deploy.export import export_bundle

    cfg, model = tiny_bundle_keras
    out = export_bundle(tmp_path / "b", cfg=cfg, model=model, run_dir=tiny_run, progress=False,
                        include_full=False, twins=False, check=False)
    b = Bundle.load(out)
    # the split seed the run recorded: 0 for the session's tiny run (seed 0), but a run reused
    # through KWS_TEST_TINY_RUN may have been trained with another seed
    from bnnkws.kws.training.run import split_seed

    seed = split_seed(json.loads((tiny_run / "train_config.json").read_text()))
    assert b.manifest["source"]["split"]["seed"] == b.split_seed == seed
