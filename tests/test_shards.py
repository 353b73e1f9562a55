"""On-disk waveform shards (kws/shards.py) on real Speech Commands clips: contents equal the
in-memory cache sample for sample, epochs are deterministic permutations, builds resume."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from bnnkws.frontend import DEFAULT_FRONTEND
from bnnkws.kws.features import cache as features
from bnnkws.kws.features import shards
from bnnkws.kws.data import BACKGROUND, SILENCE, Clip, load_dataset

PER_SHARD = 64


@pytest.fixture(scope="module")
def clips(sc_v2, sc_background_noise):
    """~290 clips of all 12 classes (every 12th of the train split) plus two silence windows
    cut from a background-noise file (the segment path of read_clip)."""
    ds = load_dataset(sc_v2, task="12", seed=0)
    picked = list(ds.split("train"))[::12]
    noise = str(sc_background_noise / "running_tap.wav")
    picked += [Clip(noise, SILENCE, None, "train", BACKGROUND, 16000 * k, 0.5) for k in (3, 7)]
    return picked, list(ds.labels)


@pytest.fixture(scope="module")
def built(clips, tmp_path_factory):
    """The clips sharded by two worker processes, with an aux label on every third clip."""
    cl, labels = clips
    aux = np.where(np.arange(len(cl)) % 3 == 0, np.arange(len(cl)) % 7, -1)
    cache = tmp_path_factory.mktemp("shards")
    ss = shards.build_shards(cl, labels, aux=aux, cache_dir=cache, clips_per_shard=PER_SHARD,
                             workers=2, progress=False)
    return ss, aux, cache


def _keys(ds) -> list[int]:
    return [int(el["key"]) for el in ds.as_numpy_iterator()]


def test_contents_equal_in_memory_cache(clips, built, tmp_path):
    cl, labels = clips
    ss, aux, _ = built
    waves = features.load_waveforms(cl, DEFAULT_FRONTEND, cache_dir=tmp_path, progress=False,
                                    use_cache=False)
    assert waves.ok.all()
    got_w, got_l, got_a, got_k = shards.read_all(ss)
    # shuffle=False: file order, record order, which is the fixed shard order
    assert got_k.tolist() == shards.shard_order(len(cl)).tolist()
    assert sorted(got_k.tolist()) == list(range(len(cl)))
    for k, w in zip(got_k, got_w):
        assert w.dtype == np.int16
        np.testing.assert_array_equal(w, waves.data[waves.offsets[k]:waves.offsets[k + 1]])
    assert got_l.tolist() == [labels.index(cl[k].label) for k in got_k]
    assert got_a.tolist() == aux[got_k].tolist()
    # The clip list is grouped by word; every shard must still be a mix of the classes.
    first = got_l[:PER_SHARD]
    assert len(set(first.tolist())) >= min(len(labels), 6), sorted(set(first.tolist()))
    assert len(ss.files) == -(-len(cl) // PER_SHARD) >= 4
    assert ss.num_clips == len(ss) == len(cl) and ss.labels == labels
    assert ss.sample_rate == DEFAULT_FRONTEND.sample_rate
    want = {lab: sum(c.label == lab for c in cl) for lab in labels}
    assert ss.label_counts == want
    index = json.loads((ss.path / "index.json").read_text())
    assert index["total_clips"] == len(cl) and index["problems"] == []
    assert index["num_aux_labelled"] == int((aux >= 0).sum())


def test_record_is_a_tf_example():
    import tensorflow as tf

    wave = np.array([0, 1, -1, 32767, -32768], np.int16)
    ex = tf.train.Example.FromString(shards._example_bytes(wave, 11, -1, 2**40 + 3))
    f = ex.features.feature
    assert np.frombuffer(f["wave"].bytes_list.value[0], "<i2").tolist() == wave.tolist()
    assert (f["label"].int64_list.value[0], f["aux"].int64_list.value[0],
            f["key"].int64_list.value[0]) == (11, -1, 2**40 + 3)


def test_epochs_are_deterministic_permutations(built):
    import tensorflow as tf

    ss, _, _ = built
    n = ss.num_clips
    e0 = _keys(ss.dataset(epoch=0, seed=1, shuffle_buffer=128))
    assert sorted(e0) == list(range(n))  # every clip exactly once
    assert _keys(ss.dataset(epoch=0, seed=1, shuffle_buffer=128)) == e0  # a new pipeline
    e1 = _keys(ss.dataset(epoch=1, seed=1, shuffle_buffer=128))
    assert sorted(e1) == list(range(n)) and e1 != e0
    assert _keys(ss.dataset(epoch=0, seed=2, shuffle_buffer=128)) != e0
    assert e0 != list(range(n))
    tensor_epoch = _keys(ss.dataset(epoch=tf.constant(1, tf.int64), seed=1, shuffle_buffer=128))
    assert tensor_epoch == e1

    # epochs(): Dataset.range(...).flat_map with a symbolic epoch, same orders as one by one
    els = list(ss.epochs(0, 3, seed=1, shuffle_buffer=128).as_numpy_iterator())
    assert len(els) == 3 * n
    assert [int(e["key"]) for e in els[:n]] == e0
    assert [int(e["key"]) for e in els[n:2 * n]] == e1
    assert sorted(int(e["key"]) for e in els[2 * n:]) == list(range(n))
    assert [int(e["epoch"]) for e in els] == [0] * n + [1] * n + [2] * n
    el = els[0]
    assert el["wave"].dtype == np.int16 and el["wave"].ndim == 1
    assert el["label"].dtype == np.int32 and el["aux"].dtype == np.int32
    assert el["key"].dtype == np.int64 and el["epoch"].dtype == np.int64


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_resume_builds_only_missing_shards(clips, tmp_path, monkeypatch):
    cl, labels = clips
    kw = dict(cache_dir=tmp_path, clips_per_shard=PER_SHARD, workers=1, progress=False)
    built_shards = []
    real = shards._encode_shard

    def counting(task):
        built_shards.append(task["shard"])
        if task["shard"] == 3 and interrupt:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during shard 3
        return real(task)

    monkeypatch.setattr(shards, "_encode_shard", counting)
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        shards.build_shards(cl, labels, **kw)
    folder = next(tmp_path.glob("shards-*"))
    assert not (folder / "index.json").exists()
    assert sorted(p.name for p in folder.glob("*.tfrecord")) == [shards.shard_name(i)
                                                                 for i in range(3)]
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]  # no half-written shard
    with pytest.raises(FileNotFoundError, match=folder.name):
        shards.ShardSet.open(folder)

    stale = folder / ".shard-00003.tfrecord.abc123.tmp"  # as left by a SIGKILLed build
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))
    interrupt = False
    built_shards.clear()
    ss = shards.build_shards(cl, labels, **kw)
    n_shards = len(ss.files)
    assert built_shards == list(range(3, n_shards))
    assert not stale.exists()

    # a shard lost later (file deleted): only that one is decoded again
    before = _mtimes(folder)
    (folder / shards.shard_name(1)).unlink()
    (folder / "index.json").unlink()
    built_shards.clear()
    ss2 = shards.build_shards(cl, labels, **kw)
    assert built_shards == [1]
    after = _mtimes(folder)
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {"shard-00001.tfrecord", "shard-00001.json", "index.json"}
    assert shards.read_all(ss2)[3].tolist() == shards.shard_order(len(cl)).tolist()

    # a complete set is opened without decoding anything
    built_shards.clear()
    assert shards.build_shards(cl, labels, **kw).files == ss2.files
    assert built_shards == []


def test_broken_files_are_listed_and_skipped(broken_words, tmp_path):
    ds = load_dataset(broken_words, seed=0)
    cl = list(ds.clips)
    ss = shards.build_shards(cl, ds.labels, cache_dir=tmp_path, clips_per_shard=16, workers=2,
                             progress=False)
    bad = {os.path.basename(p) for p, _ in ss.problems}
    assert bad == {"broken_truncated_nohash_0.wav", "broken_empty_nohash_0.wav",
                   "broken_header_nohash_0.wav"}
    assert all(text for _, text in ss.problems)
    assert ss.num_clips == len(cl) - 3 and ss.total_clips == len(cl)
    keys = shards.read_all(ss)[3].tolist()
    assert keys == [int(i) for i in shards.shard_order(len(cl))
                    if os.path.basename(cl[i].path) not in bad]
    index = json.loads((ss.path / "index.json").read_text())
    assert len(index["problems"]) == 3


def test_key_follows_files_labels_aux_and_rate(sc_v2, tmp_path):
    for i, src in enumerate(sorted((sc_v2 / "yes").glob("*.wav"))[:3]):
        shutil.copy(src, tmp_path / f"spk{i}_nohash_0.wav")
    files = sorted(tmp_path.glob("*.wav"))
    cl = [Clip(str(p), "yes", p.stem, "train", "yes") for p in files]
    key = shards.shard_key(cl, ["yes", "no"])
    assert shards.shard_key(cl, ["yes", "no"]) == key
    assert shards.shard_key(cl, ["no", "yes"]) != key  # label index changes
    assert shards.shard_key(cl, ["yes", "no"], aux=[0, -1, -1]) != key
    assert shards.shard_key(cl, ["yes", "no"], clips_per_shard=2) != key
    assert shards.shard_key(cl, ["yes", "no"],
                            dataclasses.replace(DEFAULT_FRONTEND, sample_rate=22050)) != key
    st = files[1].stat()
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    touched = shards.shard_key(cl, ["yes", "no"])
    assert touched != key
    with open(files[2], "ab") as f:  # grown
        f.write(b"\0\0")
    assert shards.shard_key(cl, ["yes", "no"]) not in (key, touched)
    with pytest.raises(ValueError, match="'maybe'"):
        shards.shard_key(cl + [Clip(str(files[0]), "maybe", None, "train", "maybe")], ["yes"])


def test_open_names_the_folder_when_incomplete_or_damaged(clips, built, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path.name)):
        shards.ShardSet.open(tmp_path)
    ss, _, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(ss.path, copy)
    with open(copy / shards.shard_name(0), "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="shard-00000.tfrecord"):
        shards.ShardSet.open(copy)
    shutil.copy(ss.files[0], copy / shards.shard_name(0))
    assert shards.ShardSet.open(copy).num_clips == ss.num_clips
    (copy / shards.shard_name(2)).unlink()
    with pytest.raises(FileNotFoundError, match="shard-00002.tfrecord"):
        shards.ShardSet.open(copy)
