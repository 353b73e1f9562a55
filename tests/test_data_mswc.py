"""The MSWC reader (`mswc:PATH`) on an MSWC-layout corpus re-encoded from real recordings.

MSWC itself is not in ../shared; tests/mswc_layout.py lays the Speech Commands v0.01 sample
out the way MSWC publishes a language (48 kHz Opus clips, a splits CSV naming word and speaker).
"""
from __future__ import annotations

import csv

import numpy as np
import pytest

from bnnkws.app.cli import main
from bnnkws.frontend.audio import load_audio
from bnnkws.frontend.reference import log_mel
from bnnkws.kws.data import UNKNOWN, WORDS12, DatasetError, detect_kind, load_dataset
from mswc_layout import make_mswc, speaker_set

WORDS = WORDS12 + ["marvin", "sheila"]
SETS = {"TRAIN": "train", "DEV": "validation", "TEST": "testing"}


@pytest.fixture(scope="module")
def mswc(sc_v1_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("mswc")
    rows = make_mswc(sc_v1_sample, out, words=WORDS)
    return out, rows


def test_published_split_task_12_and_the_audio(mswc):
    root, rows = mswc
    assert detect_kind(root) == detect_kind(root / "en") == "mswc"
    ds = load_dataset(f"mswc:{root}")  # the corpus folder with one language in it
    assert ds.kind == "mswc" and ds.labels == ["_silence_", "_unknown_"] + WORDS12
    assert any("published MSWC split" in n for n in ds.notes), ds.notes
    assert not ds.speaker_overlap()
    # every command clip listed is there, on the side its SET row says
    want = sorted((r["WORD"], r["SPEAKER"], SETS[r["SET"]]) for r in rows
                  if r["WORD"] in WORDS12)
    got = sorted((c.label, c.speaker, c.split) for c in ds.clips if c.label in WORDS12)
    assert got == want and len(want) == 100
    # _unknown_ is drawn from the other words (10 % of each split's keyword clips)
    unk = [c for c in ds.clips if c.label == UNKNOWN]
    assert unk and {c.source for c in unk} <= {"marvin", "sheila"}
    for split in ("train", "validation", "testing"):
        n_kw = sum(c.split == split and c.label in WORDS12 for c in ds.clips)
        assert sum(c.split == split for c in unk) == min(
            -(-n_kw // 10), sum(r["WORD"] in ("marvin", "sheila") and SETS[r["SET"]] == split
                                for r in rows))
    # a 48 kHz Opus clip reads back at 16 kHz as the recording it was made from
    clip = next(c for c in ds.clips if c.label == "yes")
    src = next(r["source"] for r in rows if clip.path.endswith(r["LINK"]))
    a, b = (load_audio(p, sr=16000, length=16000) for p in (src, clip.path))
    assert np.corrcoef(log_mel(a).ravel(), log_mel(b).ravel())[0, 1] > 0.98
    assert 10 * np.log10(np.sum(a ** 2) / np.sum((a - b) ** 2)) > 10  # dB, Opus is lossy


def test_a_split_that_shares_speakers_is_redone_by_speaker(sc_v1_sample, tmp_path):
    sets = ("TRAIN", "DEV", "TEST")
    rows = make_mswc(sc_v1_sample, tmp_path, words=["yes", "no", "up"], per_word=10,
                     set_of=lambda spk, i: sets[i % 3])  # by clip: speakers straddle splits
    spk_sets = {}
    for r in rows:
        spk_sets.setdefault(r["SPEAKER"], set()).add(r["SET"])
    assert any(len(s) > 1 for s in spk_sets.values())  # the premise
    ds = load_dataset(tmp_path / "en", task="all", seed=3)
    assert ds.labels == ["no", "up", "yes"]
    assert len(ds.clips) == len(rows) and not ds.speaker_overlap()
    assert any("re-split by speaker (seed 3" in n for n in ds.notes), ds.notes


def test_task_word_list_min_clips_and_aux_vocabulary(mswc):
    root, rows = mswc
    ds = load_dataset(f"mswc:{root}", task="marvin,sheila")
    assert ds.labels == ["_silence_", "_unknown_", "marvin", "sheila"]
    from bnnkws.kws.data.mswc import load_mswc

    assert len(load_mswc(root, task="all", min_clips=10).labels) == len(WORDS)  # 10 each
    with pytest.raises(ValueError, match="no word has 11 or more clips"):
        load_mswc(root, task="all", min_clips=11)
    # as --aux-data: every clip keeps its word, the holdout and the task's held-out speakers
    # stay out, and --aux-min-clips drops the words that are left with fewer clips
    from bnnkws.kws.data import vocab
    from bnnkws.kws.data import LABELS12

    gone = next(r["SPEAKER"] for r in rows if r["WORD"] == "stop")
    extra, notes = vocab.extra_clips([f"mswc:{root}"], LABELS12, exclude_speakers={gone},
                                     holdout=["marvin"])
    assert {c.source for c in extra} == set(WORDS) - {"marvin"}
    assert all(c.speaker != gone and c.split == "train" for c in extra)
    assert {c.label for c in extra if c.source == "sheila"} == {UNKNOWN}
    short = {r["WORD"] for r in rows if r["SPEAKER"] == gone} - {"marvin"}
    assert "stop" in short
    assert vocab.vocabulary(extra, ["marvin"]) == sorted(set(WORDS) - {"marvin"})
    assert vocab.vocabulary(extra, ["marvin"], min_clips=10) == sorted(
        set(WORDS) - {"marvin"} - short)
    # as --aux-only (alias of --aux-synth): the non-task words train the auxiliary heads only
    from bnnkws.app import cli
    from bnnkws.app.commands.train import config_from_args

    spec = f"mswc:{root}"
    args = cli.build_parser().parse_args(["train", "--data", "x", "--aux-vocab",
                                          "--aux-only", spec, "--aux-min-clips", "10"])
    tc = config_from_args(args)
    assert tc.aux_synth == [spec] and tc.aux_min_clips == 10
    only, _ = vocab.extra_clips(None, LABELS12, holdout=["marvin"], aux_only=tc.aux_synth)
    assert {c.label for c in only if c.source == "sheila"} == {vocab.AUX_ONLY}
    assert {c.label for c in only if c.source == "yes"} == {"yes"}


def test_errors_name_the_file_and_what_is_wrong(sc_v1_sample, tmp_path):
    rows = make_mswc(sc_v1_sample, tmp_path / "one", words=["yes"], per_word=3)
    splits = tmp_path / "one" / "en" / "en_splits.csv"
    # a missing clip: the lists point where nothing is
    (tmp_path / "one" / "en" / "clips" / rows[0]["LINK"]).unlink()
    with pytest.raises(DatasetError, match=r"sampled clips named by the split lists are "
                                           r"missing, e.g. .*common_voice_en_1000\.opus"):
        load_dataset(f"mswc:{tmp_path / 'one'}", task="all")
    # a list without the SPEAKER column
    text = splits.read_text().replace("SPEAKER", "WHO")
    splits.write_text(text)
    with pytest.raises(ValueError, match=r"en_splits\.csv: no column SPEAKER"):
        load_dataset(f"mswc:{tmp_path / 'one'}", task="all")
    # two languages: say which folder to name
    make_mswc(sc_v1_sample, tmp_path / "two", lang="en", words=["yes"], per_word=2)
    make_mswc(sc_v1_sample, tmp_path / "two", lang="de", words=["no"], per_word=2)
    with pytest.raises(ValueError, match=r"MSWC languages de, en; name one"):
        load_dataset(f"mswc:{tmp_path / 'two'}", task="all")
    assert {r["WORD"] for r in csv.DictReader(open(tmp_path / "two" / "de" / "de_splits.csv"))} \
        == {"no"}
    assert speaker_set("abc") in ("TRAIN", "DEV", "TEST")


def test_data_summary_cli_reads_mswc(mswc, capsys):
    root, rows = mswc
    assert main(["data", "summary", f"mswc:{root / 'en'}", "--task", "all"]) == 0
    out = capsys.readouterr().out
    assert "(mswc)" in out and "speakers in two splits: none" in out
    assert "48000 Hz: %d" % len(rows) in out and "every file decodes" in out


def test_training_streams_mswc_opus_clips_through_shards(mswc, tmp_path):
    root, rows = mswc
    run = tmp_path / "run"
    assert main(["train", "--data", f"mswc:{root}", "--task", "all", "--pipeline", "shards",
                 "--arch", "quicknet", "--width", "0.25", "--epochs", "1", "--no-augment",
                 "--quiet", "--cache-dir", str(tmp_path / "cache"), "--out", str(run)]) == 0
    import json

    assert json.loads((run / "config.json").read_text())["labels"] == sorted(WORDS)
    assert list((tmp_path / "cache").glob("shards-*/*")), "no shard written"
    # the run trained and tested on the published split's clips, decoded from Opus
    split = json.loads((run / "split.json").read_text())
    for key, name in (("train", "TRAIN"), ("testing", "TEST")):
        assert sorted(split[key]) == sorted(str(root / "en" / "clips" / r["LINK"])
                                            for r in rows if r["SET"] == name)
    assert len((run / "history.csv").read_text().splitlines()) == 2  # header + 1 epoch
