"""The reader on the layout of the official full Speech Commands v0.02 archive.

The full archive (105k clips) is not on this machine, so the test builds its layout from the
shared clips with symlinks: one folder per word, ``_background_noise_/``, and
``validation_list.txt`` / ``testing_list.txt`` made with the archive's own rule (TensorFlow
``speech_commands`` ``which_set``). Then it checks what ``load_dataset`` makes of it.
"""
from __future__ import annotations

import collections
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest

from bnnkws.kws.features import cache as features
from bnnkws.kws.features import shards
from bnnkws.kws.data import BACKGROUND, LABELS12, SILENCE, UNKNOWN, WORDS12, load_dataset

# The 35 words of v0.02. All of them can be made from the shared data: the ten keywords have
# folders in speech_commands_v2_test and the other 25 are hidden in its _unknown_ folder.
WORDS35 = sorted(WORDS12 + [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "backward", "forward", "follow", "learn", "visual"])

MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # ~134M, as in TensorFlow's speech_commands input_data.py


def which_set(filename: str, validation_percentage=10.0, testing_percentage=10.0) -> str:
    """The archive's split rule: a speaker's clips (name before ``_nohash_``) share a side."""
    hash_name = re.sub(r"_nohash_.*$", "", os.path.basename(filename))
    hashed = hashlib.sha1(hash_name.encode()).hexdigest()
    pct = (int(hashed, 16) % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if pct < validation_percentage:
        return "validation"
    if pct < testing_percentage + validation_percentage:
        return "testing"
    return "training"


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():  # first source wins when two name the same file
        os.symlink(src, dst)


@pytest.fixture(scope="module")
def full_archive(sc_v2, sc_v1_sample, sc_background_noise, tmp_path_factory) -> Path:
    """A v0.02-style archive of symlinks.

    The v0.02 test clips are, by construction, the archive's *testing* split (every one of them
    hashes to "testing"), so alone they would leave training and validation empty. The v0.01
    sample's clips (30 of the words, other speakers) are linked in as well, so the rule also
    puts clips into training and validation; the five v0.02-only words (backward, follow,
    forward, learn, visual) then have testing clips only, as the shared data allows.
    """
    root = tmp_path_factory.mktemp("sc_v002_full")
    for w in WORDS12:
        for p in sorted((sc_v2 / w).glob("*.wav")):
            _link(p, root / w / p.name)
    for p in sorted((sc_v2 / UNKNOWN).glob("*.wav")):  # <word>_<speaker>_nohash_<n>.wav.wav
        word, rest = p.name.split("_", 1)
        _link(p, root / word / rest.removesuffix(".wav"))
    for d in sorted(sc_v1_sample.iterdir()):
        if d.is_dir():
            for p in sorted(d.glob("*.wav")):
                _link(p, root / d.name / p.name)
    os.symlink(sc_background_noise, root / BACKGROUND)
    lists = {"validation": [], "testing": []}
    for w in sorted(os.listdir(root)):
        if w.startswith("_"):
            continue
        for name in sorted(os.listdir(root / w)):
            side = which_set(name)
            if side in lists:
                lists[side].append(f"{w}/{name}")
    (root / "validation_list.txt").write_text("".join(f"{r}\n" for r in lists["validation"]))
    (root / "testing_list.txt").write_text("".join(f"{r}\n" for r in lists["testing"]))
    return root


def _expected_split(path: str) -> str:
    side = which_set(Path(path).name)
    return "train" if side == "training" else side


def test_layout_has_the_35_words(full_archive):
    words = sorted(p.name for p in full_archive.iterdir()
                   if p.is_dir() and not p.name.startswith("_"))
    assert words == WORDS35 and len(words) == 35
    assert all((full_archive / w / n).is_symlink() for w in words[:3]
               for n in os.listdir(full_archive / w))


def test_all_words_task_follows_the_official_lists(full_archive):
    ds = load_dataset(full_archive, task="all")
    assert ds.kind == "speech_commands"
    assert ds.labels == WORDS35
    n_files = sum(len(os.listdir(full_archive / w)) for w in WORDS35)
    assert len(ds.clips) == n_files
    for c in ds.clips:
        assert c.split == _expected_split(c.path), c.path
        assert c.label == c.source == Path(c.path).parent.name
        assert c.speaker == Path(c.path).name.split("_nohash_")[0]
    counts = collections.Counter(c.split for c in ds.clips)
    assert counts["train"] > 0 and counts["validation"] > 0 and counts["testing"] > 0
    assert ds.speaker_overlap() == {}
    assert any("official" in n for n in ds.notes)
    assert len(ds.noise_paths) == 6


def test_twelve_class_task_builds_silence_and_unknown(full_archive):
    ds = load_dataset(full_archive, task="12", seed=0)
    assert ds.labels == LABELS12
    noise_dir = os.path.realpath(full_archive / BACKGROUND)
    for split in ("train", "validation", "testing"):
        part = ds.split(split)
        known = [c for c in part if c.label in WORDS12]
        unknown = [c for c in part if c.label == UNKNOWN]
        silence = [c for c in part if c.label == SILENCE]
        assert known, split
        assert all(c.source == c.label and c.split == _expected_split(c.path) for c in known)
        others = [f"{w}/{n}" for w in WORDS35 if w not in WORDS12
                  for n in os.listdir(full_archive / w) if _expected_split(n) == split]
        assert len(unknown) == min(len(others), int(np.ceil(len(known) * 0.1))) >= 1
        assert len({c.path for c in unknown}) == len(unknown)  # drawn without replacement
        assert len(silence) == int(np.ceil(len(known) * 0.1))
        for c in unknown:  # from the other words, on the side the lists give them
            assert c.source not in WORDS12 and c.source in WORDS35
            assert c.split == _expected_split(c.path)
        for c in silence:  # windows of the background-noise recordings
            assert c.source == BACKGROUND and c.speaker is None
            assert os.path.dirname(os.path.realpath(c.path)) == noise_dir
    assert ds.speaker_overlap() == {}
    # every keyword file is used exactly once
    n_kw = sum(len(os.listdir(full_archive / w)) for w in WORDS12)
    assert sum(c.label in WORDS12 for c in ds.clips) == n_kw


def test_shards_of_the_train_split_hold_what_the_reader_gave(full_archive, tmp_path):
    ds = load_dataset(full_archive, task="12", seed=0)
    train = list(ds.split("train"))
    ss = shards.build_shards(train, ds.labels, cache_dir=tmp_path, clips_per_shard=32,
                             workers=2, progress=False)
    waves = features.load_waveforms(train, cache_dir=tmp_path, progress=False, use_cache=False)
    got_w, got_l, _, got_k = shards.read_all(ss)
    assert waves.ok.all() and ss.problems == []
    assert got_k.tolist() == shards.shard_order(len(train)).tolist()
    assert got_l.tolist() == [ds.labels.index(train[k].label) for k in got_k]
    for k, w in zip(got_k, got_w):
        np.testing.assert_array_equal(w, waves.data[waves.offsets[k]:waves.offsets[k + 1]])
    assert ss.label_counts == {lab: sum(c.label == lab for c in train) for lab in ds.labels}
