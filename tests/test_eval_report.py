"""The evaluation report's numbers and files, on synthetic early-exit logits (fast, exact)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from bnnkws.kws.data import Clip
from bnnkws.kws.evaluation.evaluate import EvalError, ModelLogits, match_labels
from bnnkws.kws.policy import ExitPolicy, decide_batch
from bnnkws.kws.evaluation.report import (COARSE_DELTAS, confusion, delta_within, per_exit_accuracy,
                                          sweep_point, write_report)

LABELS = ["yes", "no", "up", "down", "_silence_", "_unknown_"]


def synthetic(n=300, e=4, seed=0, name="em", macs=True):
    """Logits where later exits are more often right and more confident."""
    rng = np.random.default_rng(seed)
    c = len(LABELS)
    y = rng.integers(0, c, n)
    z = rng.normal(0, 1, (n, e, c))
    for k in range(e):
        z[np.arange(n), k, y] += 0.8 + 0.9 * k
    m = None
    if macs:
        b = [1e6 * (k + 1) for k in range(e)]
        r = [1e5 * (k + 1) for k in range(e)]
        m = {"binary": b, "real": r, "total": [x + w for x, w in zip(b, r)]}
    return ModelLogits(name=name, logits=2 * z, labels=y, model_labels=LABELS,
                       exit_numbers=list(range(1, e + 1)), num_exits=e, macs=m,
                       unknown={"bed": 7, "cat": 2}, kind="synthetic")


def test_numbers_follow_the_rule():
    ml = synthetic()
    acc = per_exit_accuracy(ml)
    pred = ml.logits.argmax(-1)
    assert acc == {f"exit{k + 1}": float(np.mean(pred[:, k] == ml.labels)) for k in range(4)}
    assert acc["exit4"] > acc["exit1"]
    # delta 0: everything at the last exit, same accuracy as the last exit
    r0 = sweep_point(ml, 0.0)
    assert r0["avg_exit"] == 4.0 and r0["accuracy"] == acc["exit4"]
    assert r0["exit_fractions"]["exit4"] == 1.0 and r0["macs_saved"] == pytest.approx(0.0)
    r = sweep_point(ml, 0.5)
    exits, labels, _ = decide_batch(ml.logits, ExitPolicy(0.5))
    assert r["avg_exit"] == pytest.approx(exits.mean())
    assert r["accuracy"] == pytest.approx(np.mean(labels == ml.labels))
    assert r["mean_macs"] == pytest.approx(np.mean(np.take(ml.macs["total"], exits - 1)))
    assert sum(r["exit_fractions"].values()) == pytest.approx(1.0)
    cm = confusion(ml, 0.5)
    assert cm.sum() == len(ml.labels) and np.trace(cm) == np.sum(labels == ml.labels)


def test_delta_within_one_point():
    rows = [{"delta": 0.0, "accuracy": 0.90}, {"delta": 0.1, "accuracy": 0.895},
            {"delta": 0.2, "accuracy": 0.87}, {"delta": 0.3, "accuracy": 0.895}]
    assert delta_within(rows, 0.90)["delta"] == 0.1  # stops at the first drop beyond 1 point
    assert delta_within(rows, 0.95) is None


def test_label_matching_by_name_counts_unknown():
    clips = [Clip(f"/x/{i}.wav", lab, "s", "testing", lab)
             for i, lab in enumerate(["no", "yes", "bed", "no", "cat", "bed"])]
    idx, unknown, missing = match_labels(clips, LABELS)
    assert idx.tolist() == [1, 0, -1, 1, -1, -1]
    assert unknown == {"bed": 2, "cat": 1}
    assert missing == ["up", "down", "_silence_", "_unknown_"]


def test_mismatched_shapes_are_rejected():
    with pytest.raises(EvalError, match="exit numbers"):
        ModelLogits(name="m", logits=np.zeros((3, 2, 6)), labels=np.zeros(3, int),
                    model_labels=LABELS, exit_numbers=[1, 2, 3], num_exits=3)


def test_report_files(tmp_path):
    em = synthetic()
    es = ModelLogits(name="es2", logits=em.logits[:, 1:2] * 1.2, labels=em.labels,
                     model_labels=LABELS, exit_numbers=[2], num_exits=4, single_exit=2,
                     macs={k: [v[1]] for k, v in em.macs.items()})
    em2 = synthetic(seed=1, name="em_wide")
    s = write_report([es, em, em2], tmp_path, delta=0.5)
    names = {p.name for p in tmp_path.iterdir()}
    for f in ("summary.md", "summary.json", "per_exit_accuracy.csv", "sweep.csv",
              "exit_fractions_by_class.csv", "confusion.csv", "compute.csv",
              "per_exit_accuracy.png", "accuracy_vs_delta.png", "exit_fractions.png",
              "class_exit_fractions.png", "confusion.png", "accuracy_vs_compute.png",
              "reliability.png"):
        assert f in names, f
    assert not [n for n in names if n.endswith(".tmp")]
    j = json.loads((tmp_path / "summary.json").read_text())
    assert j["model"] == "em"  # the first early-exit model is the primary one
    assert j["per_exit_accuracy"] == pytest.approx(per_exit_accuracy(em))
    assert j["last_exit_accuracy"] == pytest.approx(per_exit_accuracy(em)["exit4"])
    assert j["unknown_labels"] == {"bed": 7, "cat": 2}
    deltas = [r["delta"] for r in j["sweep"]]
    assert all(any(abs(d - c) < 1e-9 for d in deltas) for c in COARSE_DELTAS)
    assert len(deltas) > 30 and deltas == sorted(deltas)
    avg = [r["avg_exit"] for r in j["sweep"]]
    assert all(a >= b for a, b in zip(avg, avg[1:]))  # larger delta, earlier exits
    for r in j["sweep"]:
        assert set(r) >= {"delta", "accuracy", "avg_exit", "mean_macs", "exit_fractions"}
    assert set(j["ece"]) == {"exit1", "exit2", "exit3", "exit4"}
    assert j["chosen_delta"] == 0.5
    assert [m["name"] for m in j["models"]] == ["es2", "em", "em_wide"]
    with open(tmp_path / "compute.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} == {"es2", "em", "em_wide"}
    assert [r for r in rows if r["model"] == "es2"][0]["kind"] == "E_s"
    with open(tmp_path / "per_exit_accuracy.csv") as f:
        pe = list(csv.DictReader(f))
    assert len(pe) == 1 + 4 + 4
    md = (tmp_path / "summary.md").read_text()
    assert "9 clips not scored" in md and "`bed` (7)" in md
    assert "| es2 | E_s | - |" in md
    for png in [n for n in names if n.endswith(".png")]:
        import matplotlib.image as mpimg

        img = mpimg.imread(tmp_path / png)
        assert img.shape[0] > 200 and img.shape[1] > 300, png
        assert img[..., :3].std() > 0.05, f"{png} looks blank"


def test_report_without_macs_says_so(tmp_path):
    ml = synthetic(macs=False)
    ml.macs_note = "MACs unavailable (test); compute axis is the exit"
    s = write_report([ml], tmp_path)
    assert s["sweep"][0]["mean_macs"] is None
    assert "MACs unavailable (test)" in (tmp_path / "summary.md").read_text()
    assert s["chosen_delta"] == ml.delta
