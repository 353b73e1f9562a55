"""Dataset readers and splits on the real data in ../shared/data and on generated layouts."""
from __future__ import annotations

import collections
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from bnnkws.kws.data import (LABELS12, SILENCE, SPLITS, UNKNOWN, WORDS12, Dataset, DatasetError,
                             detect_kind, load_dataset, parse_spec, speaker_from_name)
from bnnkws.kws.data.splits import split_groups, split_items


def _load(spec, **kw) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(spec, **kw)


def _assert_disjoint(ds: Dataset):
    where = collections.defaultdict(set)
    for c in ds.clips:
        if c.speaker is not None:
            where[c.speaker].add(c.split)
    shared = {s: sp for s, sp in where.items() if len(sp) > 1}
    assert not shared, f"speakers in two splits: {list(shared.items())[:5]}"
    assert ds.speaker_overlap() == {}


# ------------------------------------------------------------------ shared datasets


@pytest.mark.parametrize("name,task", [("speech_commands_v2_test", None), ("fsdd", None),
                                       ("speech_commands_v1_sample", None),
                                       ("speech_commands_v1_sample", "all")])
@pytest.mark.parametrize("seed", [0, 1])
def test_no_speaker_in_two_splits_on_shared_data(shared_data, name, task, seed):
    ds = _load(shared_data / name, task=task, seed=seed)
    _assert_disjoint(ds)
    for split in SPLITS:
        assert ds.split(split), f"{name} seed {seed}: empty {split} split"


def test_prepared_test_layout(sc_v2):
    ds = _load(sc_v2)
    assert ds.kind == "sc_test"
    assert ds.labels == LABELS12
    # Every file of every folder is read once, with its folder's label.
    assert len(ds) == 3518
    counts = collections.Counter(c.label for c in ds.clips)
    for lab in LABELS12:
        assert counts[lab] == len(list((sc_v2 / lab).iterdir())), lab
    unknown = [c for c in ds.clips if c.label == UNKNOWN]
    assert all(c.path.endswith(".wav.wav") for c in unknown)
    # The original word and the speaker come from `<word>_<speaker>_nohash_<n>.wav.wav`.
    assert all(c.source not in WORDS12 and c.source != UNKNOWN for c in unknown)
    assert {c.source for c in unknown} >= {"backward", "bed", "marvin", "sheila"}
    c = next(c for c in unknown if Path(c.path).name == "backward_0c540988_nohash_0.wav.wav")
    assert (c.speaker, c.source) == ("0c540988", "backward")
    # A speaker who says a keyword and an unknown word is one group: same split for both.
    spk_split = {}
    for c in ds.clips:
        if c.speaker:
            assert spk_split.setdefault(c.speaker, c.split) == c.split
    silence = [c for c in ds.clips if c.label == SILENCE]
    assert all(c.speaker is None for c in silence)
    # Clip shares near 80/10/10 and the silence items split exactly.
    n = len(ds)
    for split, frac in (("train", 0.8), ("validation", 0.1), ("testing", 0.1)):
        assert abs(len(ds.split(split)) / n - frac) < 0.03, (split, len(ds.split(split)))
    assert collections.Counter(c.split for c in silence) == {"train": 235, "validation": 30,
                                                             "testing": 30}
    # Every class is present in every split.
    for split, per in ds.counts().items():
        assert min(per.values()) >= 10, (split, per)
    # Noise for augmentation: the training silence clips only.
    assert ds.noise_paths and set(ds.noise_paths) == {c.path for c in silence
                                                      if c.split == "train"}


def test_prepared_test_split_is_deterministic_and_seeded(sc_v2):
    a, b, c = _load(sc_v2, seed=0), _load(sc_v2, seed=0), _load(sc_v2, seed=3)
    assert [(x.path, x.split) for x in a.clips] == [(x.path, x.split) for x in b.clips]
    assert a.speakers("testing") != c.speakers("testing")


def test_prepared_test_word_list(sc_v2):
    ds = _load(sc_v2, task="yes,no")
    assert ds.labels == [SILENCE, UNKNOWN, "yes", "no"]
    up = [c for c in ds.clips if c.source == "up"]
    assert up and all(c.label == UNKNOWN for c in up)
    with pytest.raises(ValueError, match="marvin"):
        _load(sc_v2, task="yes,marvin")


def test_fsdd(fsdd):
    ds = _load(fsdd)
    assert ds.kind == "fsdd" and len(ds) == 2000
    assert ds.labels == [str(d) for d in range(10)]
    assert ds.speakers() == {"jackson", "nicolas", "theo", "yweweler"}
    # Four speakers and 10 % shares: each non-empty split still gets a whole speaker.
    assert [len(ds.speakers(s)) for s in SPLITS] == [2, 1, 1]
    c = next(c for c in ds.clips if Path(c.path).name == "7_theo_3.wav")
    assert (c.label, c.speaker) == ("7", "theo")
    with pytest.raises(ValueError, match="task 12"):
        _load(fsdd, task="12")
    sub = _load(fsdd, task="1,2")
    assert sub.labels == [UNKNOWN, "1", "2"]
    assert collections.Counter(c.label for c in sub.clips)[UNKNOWN] == 1600


def test_speech_commands_archive_with_official_lists(sc_v1_sample):
    with pytest.warns(UserWarning, match="not present and were ignored") as rec:
        ds = load_dataset(sc_v1_sample, task="all")
    assert len([w for w in rec if "not present" in str(w.message)]) == 1  # one warning
    assert ds.kind == "speech_commands" and len(ds) == 300 and len(ds.labels) == 30
    lists = {name: set((sc_v1_sample / f"{name}_list.txt").read_text().split())
             for name in ("validation", "testing")}
    for c in ds.clips:
        rel = os.path.relpath(c.path, sc_v1_sample).replace(os.sep, "/")
        expect = ("testing" if rel in lists["testing"] else
                  "validation" if rel in lists["validation"] else "train")
        assert c.split == expect, rel
    assert any("official" in n for n in ds.notes)


def test_speech_commands_12_task_protocol(sc_v1_sample):
    ds = _load(sc_v1_sample, task="12", unknown_pct=20, silence_pct=10)
    assert ds.labels == LABELS12
    for split in SPLITS:
        clips = ds.split(split)
        known = sum(c.label in WORDS12 for c in clips)
        n_unk = sum(c.label == UNKNOWN for c in clips)
        n_sil = sum(c.label == SILENCE for c in clips)
        assert n_unk == min(int(np.ceil(known * 0.2)),
                            sum(1 for c in _load(sc_v1_sample, task="all").split(split)
                                if c.label not in WORDS12))
        assert n_sil == int(np.ceil(known * 0.1))
    unk = [c for c in ds.clips if c.label == UNKNOWN]
    assert all(c.source not in WORDS12 for c in unk)
    # No _background_noise_ here: silence is generated noise, deterministic per seed.
    sil = [c for c in ds.clips if c.label == SILENCE]
    assert all(c.path.startswith("noise:") for c in sil)
    assert [(c.path, c.start) for c in sil] == [
        (c.path, c.start) for c in _load(sc_v1_sample, task="12", unknown_pct=20).clips
        if c.label == SILENCE]


@pytest.fixture()
def sc_archive(tmp_path, synth_words):
    """A Speech Commands style archive without split lists, with a background noise file."""
    import soundfile as sf

    root = tmp_path / "sc"
    for word in ("yes", "no", "marvin"):
        shutil.copytree(synth_words / word, root / word)
    rng = np.random.default_rng(0)
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "hum.wav",
             (0.1 * rng.standard_normal(16000 * 30)).astype(np.float32), 16000)
    return root


def test_speech_commands_archive_speaker_split_and_silence_windows(sc_archive):
    ds = _load(f"sc:{sc_archive}", task="yes,no", silence_pct=50, unknown_pct=50)
    assert ds.kind == "speech_commands"
    assert ds.labels == [SILENCE, UNKNOWN, "yes", "no"]
    _assert_disjoint(ds)
    assert any("by speaker" in n for n in ds.notes)
    assert ds.noise_paths == [str(sc_archive / "_background_noise_" / "hum.wav")]
    # Silence windows of each split come from its own stretch of the noise file.
    n = 16000 * 30
    bounds = {"train": (0, 0.8 * n), "validation": (0.8 * n, 0.9 * n), "testing": (0.9 * n, n)}
    sil = [c for c in ds.clips if c.label == SILENCE]
    assert sil
    for c in sil:
        lo, hi = bounds[c.split]
        assert lo <= c.start and c.start + 16000 <= hi + 1, (c.split, c.start)
        assert 0 < c.gain <= 1


# --------------------------------------------------------------------- spec parsing


def test_parse_spec_and_detection(tmp_path, sc_v2, fsdd, sc_v1_sample, synth_words):
    assert parse_spec("sc:/a/b") == ("sc", Path("/a/b"))
    assert parse_spec("FSDD:x") == ("fsdd", Path("x"))
    assert parse_spec("folder:~/x")[1] == Path.home() / "x"
    assert parse_spec("/plain/path") == (None, Path("/plain/path"))
    assert detect_kind(sc_v2) == "sc_test"
    assert detect_kind(fsdd) == "fsdd"
    assert detect_kind(sc_v1_sample) == "sc"
    assert detect_kind(synth_words) == "folder"
    # An explicit prefix wins over detection: the v1 sample read as plain folders.
    ds = _load(f"folder:{sc_v1_sample}")
    assert ds.kind == "folder" and len(ds.labels) == 30
    _assert_disjoint(ds)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a dataset"):
        load_dataset(tmp_path / "empty")


def test_folder_reader_speakers_from_subfolders_and_loose_files(tmp_path, synth_words):
    root = tmp_path / "mine"
    files = sorted((synth_words / "yes").glob("*.wav"))
    for i, f in enumerate(files[:8]):  # root/<label>/<speaker>/x.wav
        dst = root / "hello" / f"person{i % 4}" / f"take{i}.wav"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
    for i, f in enumerate(files[:6]):  # no speaker anywhere
        (root / "bye").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / "bye" / f"clip{i}.wav")
    ds = _load(root)
    assert ds.labels == ["bye", "hello"]
    hello = [c for c in ds.clips if c.label == "hello"]
    assert {c.speaker for c in hello} == {f"person{i}" for i in range(4)}
    assert all(c.speaker is None for c in ds.clips if c.label == "bye")
    assert any("no speaker" in n for n in ds.notes)
    _assert_disjoint(ds)


def test_speaker_names():
    assert speaker_from_name("yes/0a7c2a8d_nohash_0.wav") == "0a7c2a8d"
    assert speaker_from_name("bed_28497c5b_nohash_0.wav.wav") == "28497c5b"
    assert speaker_from_name("en-gb-x-rp-m3_nohash_2.wav") == "en-gb-x-rp-m3"
    assert speaker_from_name("1024.wav") is None


def test_split_groups_fractions_and_determinism():
    groups = [f"s{i}" for i in range(200) for _ in range(i % 7 + 1)]
    a = split_groups(groups, seed=5, val_frac=0.1, test_frac=0.2)
    assert a == split_groups(groups, seed=5, val_frac=0.1, test_frac=0.2)
    share = collections.Counter(a[g] for g in groups)
    assert abs(share["testing"] / len(groups) - 0.2) < 0.02
    assert abs(share["validation"] / len(groups) - 0.1) < 0.02
    assert split_groups(["a", "b"], 0, 0.1, 0.1) == {"a": "testing", "b": "train"} or \
        split_groups(["a", "b"], 0, 0.1, 0.1) == {"b": "testing", "a": "train"}
    with pytest.raises(ValueError, match="val_frac"):
        split_groups(groups, val_frac=0.6, test_frac=0.5)
    items = split_items([f"{i}.wav" for i in range(100)], seed=1)
    assert collections.Counter(items.values()) == {"train": 80, "validation": 10, "testing": 10}


def test_clip_list_keeps_labels_through_slicing(synth_words):
    ds = _load(synth_words)
    tr = ds.split("train")
    assert tr.labels == ds.labels and tr[:3].labels == ds.labels
    both = tr + ds.split("testing")
    assert both.labels == ds.labels and len(both) == len(tr) + len(ds.split("testing"))
    assert tr[0] == list(tr)[0]
    with pytest.raises(ValueError, match="unknown split"):
        ds.split("test")


def test_folder_with_noise_is_not_mistaken_for_speech_commands(tmp_path, synth_words):
    root = tmp_path / "own"
    shutil.copytree(synth_words, root)
    (root / "_background_noise_").mkdir()
    shutil.copy(next((synth_words / "yes").glob("*.wav")), root / "_background_noise_" / "n.wav")
    ds = _load(root)
    assert ds.kind == "folder" and ds.labels == ["marvin", "no", "yes"]
    assert len(ds.noise_paths) == 1
    # Forcing the Speech Commands reader on a folder without its words says so.
    only = tmp_path / "only"
    shutil.copytree(root / "marvin", only / "marvin")
    with pytest.raises(ValueError, match="task 12 needs"):
        _load(f"sc:{only}", task="12")


def test_folder_reads_flac_and_ogg_and_fsdd_is_resampled(tmp_path, synth_words, fsdd):
    import soundfile as sf

    from bnnkws.kws.features.cache import load_waveforms

    y, sr = sf.read(next((synth_words / "yes").glob("*.wav")), dtype="float32")
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "b").mkdir(parents=True)
    sf.write(tmp_path / "d" / "a" / "s1_nohash_0.flac", y, sr)
    sf.write(tmp_path / "d" / "b" / "s2_nohash_0.ogg", y, sr, format="OGG", subtype="VORBIS")
    (tmp_path / "d" / "b" / "notes.txt").write_text("not audio")
    ds = _load(tmp_path / "d")
    assert sorted(Path(c.path).suffix for c in ds.clips) == [".flac", ".ogg"]
    w = load_waveforms(ds.clips, cache_dir=tmp_path / "cache", progress=False)
    assert w.ok.all() and list(w.lengths) == [16000, 16000]
    # FSDD is 8 kHz: clips come out at the frontend's 16 kHz, twice as many samples.
    clip = next(c for c in _load(fsdd).clips if Path(c.path).name == "0_jackson_0.wav")
    w = load_waveforms([clip], cache_dir=tmp_path / "cache", progress=False)
    assert w.lengths[0] == 2 * sf.info(clip.path).frames
