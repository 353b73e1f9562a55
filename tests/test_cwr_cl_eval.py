"""`kws cl-eval` end to end on a small protocol: real speech, every method, reports written."""
from __future__ import annotations

import csv
import json

import numpy as np


def test_cl_eval_small_protocol(app_bundle, sc_v1_sample, sc_v2, tmp_path, capsys):
    from bnnkws.app.cli import main

    out = tmp_path / "cl"
    rc = main(["cl-eval", str(app_bundle), "--out", str(out), "--words", "marvin,sheila,wow,tree",
               "--experiences", "2", "--words-per-experience", "2", "--old-test-per-class", "5",
               "--old-train-per-class", "5", "--memory", "60", "--bits", "8,16,float",
               "--epochs", "20", "--old-data", str(sc_v2), "--new-data", str(sc_v1_sample),
               "--no-stage-retrain"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    assert {r["method"] for r in rows} == {"cwr", "cwr_replay", "naive", "joint"}
    assert [r["classes"] for r in rows if r["method"] == "cwr"] == [14, 16]
    # Speaker-disjoint new-word splits: no speaker both learnt from and tested on.
    for exp in res["counts"]["per_experience"]:
        spk = lambda fs: {f.split("/")[-1].split("_")[0] + f.split("/")[-2] for f in fs}
        assert not spk(exp["train_files"]) & spk(exp["test_files"])
        assert exp["train"] == 10 and exp["test"] == 10
    by = {(r["method"], r["experience"]): r for r in rows}
    # CWR* never touches the old units: old-class accuracy cannot fall below naive
    # fine-tuning's, which trains every unit on new words only (forgetting).
    assert by[("cwr", 2)]["acc_old"] >= by[("naive", 2)]["acc_old"]
    for r in rows:
        assert 0 <= r["acc_all"] <= 1 and r["update_seconds"] > 0 and r["peak_bytes"] > 0
    # Quantization grid lp x hp over {8, 16, float}; float/float equals the CWR* run.
    q = res["quantization"]
    assert len(q) == 9
    ff = [x for x in q if x["lp"] == "float" and x["hp"] == "float"][0]
    assert np.isclose(ff["acc_all"], by[("cwr", 2)]["acc_all"])
    # 1-bit memory: 32x smaller than float32 up to the 2-byte label.
    mem = res["replay_memory"][0]
    n = int(np.prod(mem["latent_shape"]))
    assert mem["bytes_per_sample"] == (n + 7) // 8 + 2
    assert mem["float32_bytes_per_sample"] == 4 * n + 2
    with open(out / "table.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    md = (out / "table.md").read_text()
    assert "CWR* + latent replay" in md and "quantization" in md
    assert (out / "cl_eval.png").stat().st_size > 10_000


def test_old_class_test_clips_come_from_the_models_own_speaker_split(sc_v2, sc_v1_sample):
    """A model trained with --seed 1 has a different speaker split; its old-class test must be
    that split's test speakers, none of whom it trained on (seed 0's test speakers are partly
    seed 1's training speakers, which would flatter it)."""
    from bnnkws.kws.evaluation.cl_eval import CLEvalConfig, old_class_items
    from bnnkws.kws.data import load_dataset

    labels = load_dataset(str(sc_v2), task="12", seed=0).labels
    for seed in (0, 1):
        ds = load_dataset(str(sc_v2), task="12", seed=seed)
        trained = {c.speaker for c in ds.train} - {None}  # _silence_ clips have no speaker
        cfg = CLEvalConfig(old_data=str(sc_v2), new_data=str(sc_v1_sample), split_seed=seed)
        _, test = old_class_items(cfg, labels)
        assert len(test) > 100
        assert not {i.speaker for i in test} & trained, seed
        assert {i.speaker for i in test} & {c.speaker for c in ds.testing}
    other = load_dataset(str(sc_v2), task="12", seed=1)
    assert {c.speaker for c in load_dataset(str(sc_v2), task="12", seed=0).testing} & \
        {c.speaker for c in other.train}  # the two splits do differ, so the check above bites
