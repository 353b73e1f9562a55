"""`kws eval` picks what to score from the data it is given: the held-out test split of the
model's own training data, every clip of a dataset it never saw, and, for a model with enrolled
words, the classes the data has, matched to the model's labels by name."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bnnkws.app.cli import main
from bnnkws.kws.data import load_dataset, same_dataset

SHIPPED = Path(__file__).resolve().parents[1] / "app" / "default_bundle"


def test_same_dataset_matches_a_relative_record_from_another_clone(tmp_path, monkeypatch):
    data = tmp_path / "ci" / "shared" / "data" / "speech_commands_v2_test"
    data.mkdir(parents=True)
    other = tmp_path / "home" / "my_words"
    other.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    rec = "../shared/data/speech_commands_v2_test"
    assert same_dataset(rec, str(data))
    assert same_dataset(rec, f"sc:{data}")
    assert not same_dataset(rec, str(other))
    assert not same_dataset(None, str(data))
    assert same_dataset(str(other), str(other / "."))
    assert not same_dataset(str(other), str(data))


def _summary(out):
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def shipped():
    """The shipped bundle: its manifest records the data and split seed it trained with."""
    return SHIPPED


def test_eval_on_the_training_data_scores_its_test_split(shipped, sc_v2, tmp_path):
    out = tmp_path / "rep"
    assert main(["eval", str(shipped), "--data", str(sc_v2), "--out", str(out),
                 "--max-clips", "40", "--quiet"]) == 0
    d = _summary(out)["data"]
    assert d["split"] == "testing" and "test split" in d["split_reason"]
    assert d["clips_in_split"] == 350  # 13 held-out speakers of seed 0, not the whole folder
    assert "Split: the model's held-out test split" in (out / "summary.md").read_text()


def test_eval_on_other_data_scores_every_clip_and_says_why(shipped, sc_v1_sample, tmp_path,
                                                          capsys):
    out = tmp_path / "rep"
    assert main(["eval", str(shipped), "--data", str(sc_v1_sample), "--out", str(out),
                 "--max-clips", "60", "--quiet"]) == 0
    d = _summary(out)["data"]
    assert d["split"] == "all"
    every = load_dataset(str(sc_v1_sample), task="12", seed=0).clips
    assert d["clips_in_split"] == len(every) and d["clips_used"] == 60
    assert "not the data the model trained on" in d["split_reason"]
    assert "not the data the model trained on" in capsys.readouterr().out
    # --split still wins when given
    out2 = tmp_path / "rep2"
    assert main(["eval", str(shipped), "--data", str(sc_v1_sample), "--out", str(out2),
                 "--split", "testing", "--quiet"]) == 0
    assert _summary(out2)["data"]["split"] == "testing"
    assert _summary(out2)["data"]["clips_in_split"] < 300


@pytest.fixture(scope="module")
def enrolled(shipped, fsdd, tmp_path_factory):
    """A copy of the shipped bundle with two FSDD digits enrolled from 5 clips of jackson, and a
    folder holding only those words spoken by theo."""
    root = tmp_path_factory.mktemp("enrolled")
    bundle = root / "bundle"
    shutil.copytree(shipped, bundle)
    for d in (3, 7):
        take = root / f"takes{d}"
        take.mkdir()
        for n in range(5):
            shutil.copy(fsdd / f"{d}_jackson_{n}.wav", take)
        assert main(["enroll", str(bundle), "--word", f"digit{d}", "--from", str(take)]) == 0
        words = root / "newwords" / f"digit{d}"
        words.mkdir(parents=True)
        for n in range(6):
            shutil.copy(fsdd / f"{d}_theo_{n}.wav", words)
    return bundle, root / "newwords"


def test_eval_after_enrolment_on_the_original_data(enrolled, sc_v2, tmp_path):
    bundle, _ = enrolled
    out = tmp_path / "rep"
    assert main(["eval", str(bundle), "--data", str(sc_v2), "--out", str(out),
                 "--max-clips", "40", "--quiet"]) == 0
    s = _summary(out)
    assert s["data"]["split"] == "testing"
    assert s["missing_labels"] == ["digit3", "digit7"]  # reported, not fatal
    assert "`digit3`, `digit7`" in (out / "summary.md").read_text()


def test_eval_after_enrolment_on_a_folder_of_only_the_new_words(enrolled, tmp_path):
    bundle, words = enrolled
    out = tmp_path / "rep"
    assert main(["eval", str(bundle), "--data", str(words), "--out", str(out), "--quiet"]) == 0
    s = _summary(out)
    assert s["data"]["split"] == "all" and s["data"]["clips_used"] == 12
    assert "yes" in s["missing_labels"] and "digit3" not in s["missing_labels"]
    assert not s["unknown_labels"]
    assert s["models"][0]["num_clips"] == 12  # every clip scored under its enrolled label
