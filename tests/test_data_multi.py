"""Several corpora in one training run (issue 38): each keeps its own speaker-disjoint split, no
speaker is on two sides across corpora, classes can be weighed by their size, and the run says
what came from where."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bnnkws.kws.data import DatasetError, LABELS12, load_dataset, merge, same_dataset, sources


@pytest.fixture(scope="module")
def two(sc_v2, sc_extra):
    specs = [str(sc_v2), f"sc:{sc_extra}"]
    parts = [load_dataset(s, task="12", seed=0) for s in specs]
    return specs, parts, merge(parts, specs)


def test_merged_task_keeps_the_first_corpus_split_and_no_speaker_crosses(two):
    specs, (first, extra), ds = two
    assert ds.labels == LABELS12  # the fullest corpus' order, although extra has no on/off
    assert "on" not in extra.labels and "off" not in extra.labels
    assert ds.speaker_overlap() == {}
    # the first corpus is the one a run is scored on: its splits are kept whole
    for split in ("train", "validation", "testing"):
        assert {c.path for c in first.split(split)} <= {c.path for c in ds.split(split)}
    # the other corpus brings its clips, minus those of speakers the first puts elsewhere
    owner = {c.speaker: c.split for c in first.clips if c.speaker}
    kept = {c.path for c in ds.clips}
    for c in extra.clips:
        crosses = c.speaker in owner and owner[c.speaker] != c.split
        assert (c.path in kept) != crosses, c
    assert len(ds.train) > 5 * len(first.train)
    assert any("speech_commands_extra" in n and "train" in n for n in ds.notes)


def test_sources_count_what_each_corpus_gave(two):
    specs, parts, ds = two
    table = sources(parts, specs, ds)
    assert set(table) == set(specs)
    total = sum(n for spec in table.values() for split in spec.values() for n in split.values())
    assert total == len(ds)
    assert table[specs[1]]["train"].get("on", 0) == 0 and table[specs[0]]["train"]["on"] > 100


def test_a_list_of_specs_is_one_dataset_and_a_foreign_label_is_refused(two, sc_v2, fsdd):
    specs, _, ds = two
    again = load_dataset(specs, task="12", seed=0)
    assert [c.path for c in again.clips] == [c.path for c in ds.clips]
    assert same_dataset(specs, str(sc_v2)) and not same_dataset(specs, str(fsdd))
    with pytest.raises(DatasetError, match="fsdd"):
        load_dataset([str(sc_v2), f"fsdd:{fsdd}"], task="all")  # digits: no 12-class label


def test_class_weights_balance_classes_and_keep_the_loss_scale():
    from bnnkws.kws.training.train import class_weights

    n = np.array([100, 400, 1600, 0])
    assert class_weights(n, 0) is None
    full = class_weights(n, 1.0)
    assert np.allclose((n * full)[:3], (n * full)[0])  # every class weighs the same in total
    assert full[3] == 0
    for alpha in (0.5, 1.0):
        w = class_weights(n, alpha)
        assert np.isclose((n * w).sum() / n.sum(), 1.0)  # mean weight over the clips is 1
    half = class_weights(n, 0.5)
    assert np.isclose(half[0] / half[2], 4.0)  # sqrt(1600 / 100)


def test_training_on_two_corpora_records_sources_and_weights(sc_v2, sc_extra, tmp_path):
    """`kws train --data A --data B --class-balance 1`: the run trains, its split holds both
    corpora, and data_sources.json says what came from where and how classes were weighed."""
    from bnnkws.app.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--data", str(sc_v2), "--data", f"sc:{sc_extra}", "--arch", "quicknet",
               "--width", "0.25", "--single-exit", "1", "--epochs", "1", "--batch-size", "32",
               "--max-train-clips", "64", "--no-augment", "--class-balance", "1",
               "--cache-dir", os.environ.get("KWS_CACHE_DIR") or str(tmp_path / "cache"),
               "--quiet", "--out", str(out)])
    assert rc == 0
    rec = json.loads((out / "data_sources.json").read_text())
    assert set(rec["corpora"]) == {str(sc_v2), f"sc:{sc_extra}"}
    counts, weights = rec["train_clips_per_class"], rec["class_weights"]
    assert sum(counts.values()) == 64
    present = [lab for lab in counts if counts[lab]]
    totals = [counts[lab] * weights[lab] for lab in present]
    assert max(totals) == pytest.approx(min(totals), rel=1e-3)
    tc = json.loads((out / "train_config.json").read_text())
    assert tc["data"] == [str(sc_v2), f"sc:{sc_extra}"] and tc["class_balance"] == 1.0
    split = json.loads((out / "split.json").read_text())
    assert any("speech_commands_extra" in p for p in split["validation"])
    assert any("speech_commands_v2_test" in p for p in split["testing"])


def test_data_repeat_oversamples_one_corpus_and_counts_it_in_the_class_weights(sc_v2, sc_extra,
                                                                               tmp_path):
    """`--data-repeat 3,1`: the first corpus' training clips take part three times an epoch
    (the steps and the class counts behind --class-balance follow); one number per corpus."""
    from bnnkws.kws.training.train import TrainConfig, TrainError, prepare_data

    specs = [str(sc_v2), f"sc:{sc_extra}"]
    with pytest.raises(TrainError, match="one whole number >= 1 for each of the 2"):
        TrainConfig(data=specs, data_repeat=[3])
    base = dict(data=specs, max_train_clips=64, seed=0, verbose=0,
                cache_dir=os.environ.get("KWS_CACHE_DIR") or str(tmp_path / "cache"))
    once = prepare_data(TrainConfig(**base))
    thrice = prepare_data(TrainConfig(**base, data_repeat=[3, 1]))
    first = sum(p.startswith(str(sc_v2)) for p in once.split["train"])
    assert 0 < first < 64
    assert once.num_train == 64 and thrice.num_train == 64 + 2 * first
    assert sum(once.class_counts) == 64 and sum(thrice.class_counts) == 64 + 2 * first
