"""`kws eval` on a tiny trained model: logits agree with Keras, the report is written, the
calibration lands in the run's config.json and the budget delta meets its target."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bnnkws.app.cli import main
from bnnkws.kws.config import ModelConfig
from bnnkws.kws.policy import ExitPolicy, decide_batch


@pytest.fixture(scope="module")
def eval_run(tiny_run, tmp_path_factory):
    """A private copy of the tiny run (calibration writes into config.json)."""
    dst = tmp_path_factory.mktemp("eval_run") / "run"
    shutil.copytree(tiny_run, dst)
    return dst


@pytest.fixture(scope="module")
def loaded(eval_run):
    """(ModelConfig, keras.Model) of the run, built once for the module."""
    from bnnkws.kws.training.run import load_run

    return load_run(eval_run)


def _data_of(run):
    return json.loads((run / "train_config.json").read_text())["data"]


def test_evaluate_run_matches_keras(eval_run, loaded):
    from bnnkws.kws import data as kdata
    from bnnkws.kws.features import cache as features
    from bnnkws.kws.evaluation.evaluate import evaluate_run

    tc = json.loads((eval_run / "train_config.json").read_text())
    ds = kdata.load_dataset(tc["data"], task=tc.get("task"), seed=tc.get("seed", 0))
    clips = list(ds.testing)[:40]
    cfg, model = loaded
    res = evaluate_run(eval_run, clips, progress=False, model=model, cfg=cfg)
    assert res.exit_names == cfg.exit_names
    assert res.logits.shape == (len(res.labels), len(cfg.exit_names), cfg.num_classes)
    x = features.extract([c for c in clips if c.label in cfg.labels], cfg.frontend,
                         progress=False)
    out = model.predict(x, verbose=0)
    want = np.stack([out[n] for n in cfg.exit_names], axis=1)
    np.testing.assert_allclose(res.logits, want, rtol=1e-4, atol=1e-4)
    assert [cfg.labels[i] for i in res.labels] == [c.label for c in clips if c.label in cfg.labels]


def test_kws_eval_report_calibrate_and_budget(eval_run, loaded, tmp_path, capsys):
    out = tmp_path / "report"
    before = ModelConfig.load(eval_run / "config.json").temperatures
    rc = main(["eval", str(eval_run), "--data", _data_of(eval_run), "--out", str(out),
               "--calibrate", "--budget-exit", "3.0", "--max-clips", "120", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "per-exit accuracy" in printed and "summary.md" in printed
    s = json.loads((out / "summary.json").read_text())
    cfg = ModelConfig.load(eval_run / "config.json")
    assert set(s["per_exit_accuracy"]) == set(cfg.exit_names)
    delta0 = [r for r in s["sweep"] if r["delta"] == 0.0][0]
    assert delta0["accuracy"] == pytest.approx(s["last_exit_accuracy"])
    assert delta0["avg_exit"] == cfg.num_exits
    # calibration: fitted temperatures stored in the run and reported with ECE before/after
    cal = s["calibration"][eval_run.name]
    assert [c["temperature"] for c in cal] == pytest.approx(cfg.temperatures)
    assert cfg.temperatures != before
    assert all(c["nll_after"] <= c["nll_before"] + 0.05 for c in cal)
    # budget: the chosen delta keeps the validation average exit within 3.0
    from bnnkws.kws import data as kdata
    from bnnkws.kws.evaluation.evaluate import evaluate_run

    tc = json.loads((eval_run / "train_config.json").read_text())
    ds = kdata.load_dataset(tc["data"], task=tc.get("task"), seed=tc.get("seed", 0))
    from bnnkws.app.commands.eval import _subset

    vclips = _subset(list(ds.validation), 120, tc.get("seed", 0))  # the clips --max-clips used
    val = evaluate_run(eval_run, vclips, progress=False, model=loaded[1], cfg=loaded[0])
    exits, _, _ = decide_batch(val.logits, ExitPolicy(s["chosen_delta"],
                                                      temperatures=cfg.temperatures))
    assert exits.mean() <= 3.0
    for f in ("summary.md", "sweep.csv", "confusion.png", "accuracy_vs_delta.png",
              "exit_fractions.png", "class_exit_fractions.png", "accuracy_vs_compute.png",
              "per_exit_accuracy.png", "calibration.csv"):
        assert (out / f).is_file(), f


def test_kws_eval_user_errors(eval_run, tmp_path, capsys):
    rc = main(["eval", str(tmp_path / "nope"), "--data", _data_of(eval_run),
               "--out", str(tmp_path / "r")])
    assert rc == 2 and "no such run or bundle" in capsys.readouterr().err
    rc = main(["eval", str(eval_run), "--data", _data_of(eval_run), "--out", str(tmp_path / "r"),
               "--budget-ms", "3"])
    assert rc == 2 and "--stage-ms" in capsys.readouterr().err


def test_kws_eval_bundle_goes_through_the_runtime(tiny_bundle, tiny_bundle_keras, sc_v2,
                                                  tmp_path, capsys):
    """A bundle is scored by the deployed runtime: the report's per-exit accuracy is, exactly,
    the accuracy of the Detector's exit logits on the same clips; and the runtime's network is
    the Keras model's, compared stage by stage on these clips' log-mels (per element, see
    tests/stage_agreement.py). Comparing the two accuracies instead would count clips whose
    argmax a rounding flip moved, which depends on the trained draw (issue 36)."""
    from bnnkws.app.commands.eval import _subset
    from bnnkws.deploy.runtime import Detector
    from bnnkws.kws import data as kdata
    from bnnkws.kws.evaluation.evaluate import ModelLogits
    from bnnkws.kws.evaluation.report import per_exit_accuracy
    from bnnkws.kws.features import cache as features
    from bnnkws.kws.features.cache import read_clip
    from stage_agreement import assert_same_network, compare_stages, detector_stages, keras_stages

    out = tmp_path / "bundle_report"
    rc = main(["eval", str(tiny_bundle), "--data", str(sc_v2), "--out", str(out),
               "--max-clips", "48", "--quiet"])
    assert rc == 0
    assert "deployed runtime" in capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["models"][0]["kind"] == "bundle"
    cfg, model = tiny_bundle_keras
    clips = _subset(list(kdata.load_dataset(str(sc_v2), task="12", seed=0).testing), 48, 0)
    clips = [c for c in clips if c.label in cfg.labels]
    labels = [cfg.labels.index(c.label) for c in clips]
    det = Detector(tiny_bundle)
    z = det.exit_logits_batch(audio=np.stack([read_clip(c, det.bundle.frontend) for c in clips]))
    runtime = per_exit_accuracy(ModelLogits.from_config("b", cfg, z, labels))
    assert s["per_exit_accuracy"] == pytest.approx(runtime, abs=1e-12)
    x = features.extract(clips, cfg.frontend, progress=False)
    agree = compare_stages(detector_stages(det, "features"), keras_stages(cfg, model), x)
    assert len(agree) == len(det.stages)
    assert_same_network(agree, "bundle vs Keras on the eval clips")
    o = model.predict(x, verbose=0)
    keras = ModelLogits.from_config("k", cfg, np.stack([o[n] for n in cfg.exit_names], 1), labels)
    print("per-exit accuracy: runtime", runtime, "Keras", per_exit_accuracy(keras))


def test_runtime_decisions_equal_the_report_rule(tiny_bundle, sc_v2):
    """The device's exit choice (Detector.classify) is decide() on the same exit logits."""
    from bnnkws.deploy.runtime import Detector
    from bnnkws.frontend.audio import load_audio

    paths = [sorted((sc_v2 / w).glob("*.wav"))[i] for w in ("yes", "stop", "_silence_")
             for i in range(3)]
    for delta in (0.0, 0.3, 0.8, 2.0):
        det = Detector(tiny_bundle, delta=delta)
        for p in paths:
            y = load_audio(p, length=16000)
            r = det.classify(audio=y)
            d = det.policy.decide(list(det.exit_logits(audio=y)))
            assert (r.exit, r.label_index) == (d.exit, d.label_index), (p, delta)
            assert r.entropy == pytest.approx(d.entropy, abs=1e-9)
        if delta == 0.0:
            assert r.exit == max(det.exits)
        if delta == 2.0:
            assert r.exit == min(det.exits)
