"""Feature/waveform cache: correct values, keyed by frontend and files, interrupted writes
rebuilt, unreadable files reported and skipped (never fatal)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bnnkws.frontend import DEFAULT_FRONTEND, FrontendConfig
from bnnkws.frontend.audio import load_audio
from bnnkws.frontend.reference import log_mel
from bnnkws.kws.features import cache as features
from bnnkws.kws.data import load_dataset
from bnnkws.kws.features.cache import extract, feature_stats, load_waveforms
from bnnkws.kws.features.pipeline import eval_arrays


@pytest.fixture()
def clips(synth_words):
    return load_dataset(synth_words).clips


def _entries(cache: Path, prefix: str) -> list[Path]:
    return sorted(cache.glob(f"{prefix}-*.json"))


def test_extract_matches_reference_and_reuses_cache(tmp_path, clips, monkeypatch):
    X = extract(clips, DEFAULT_FRONTEND, tmp_path, progress=False)
    assert X.shape == (len(clips), 98, 64) and X.dtype == np.float32
    # Same numbers as the frontend reference on the file (within int16 storage rounding).
    for i in (0, 7, len(clips) - 1):
        ref = log_mel(load_audio(clips[i].path, length=16000, crop="center"))
        assert np.abs(X[i] - ref).max() < 0.05, i
        assert np.median(np.abs(X[i] - ref)) < 1e-3
    assert len(_entries(tmp_path, "logmel")) == 1 and len(_entries(tmp_path, "waves")) == 1

    # Second call must not decode anything: make decoding impossible and ask again.
    def boom(*a, **k):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr("bnnkws.frontend.audio.load_audio", boom)
    monkeypatch.setattr("bnnkws.frontend.reference.log_mel_batch", boom)
    X2 = extract(clips, DEFAULT_FRONTEND, tmp_path, progress=False)
    np.testing.assert_array_equal(np.asarray(X2), X)
    assert X2.flags.writeable  # an in-memory array callers may normalise in place


def test_changed_frontend_or_file_never_reuses_cache(tmp_path, clips, synth_words):
    X = extract(clips[:6], DEFAULT_FRONTEND, tmp_path, progress=False)
    cfg40 = FrontendConfig(n_mels=40)
    X40 = extract(clips[:6], cfg40, tmp_path, progress=False)
    assert X40.shape == (6, 98, 40)
    assert len(_entries(tmp_path, "logmel")) == 2
    # Replacing a file's content (new size/mtime) changes the key: new features, not stale ones.
    import shutil

    local = tmp_path / "copy"
    shutil.copytree(synth_words, local)
    mine = load_dataset(local).clips[:6]
    A = extract(mine, DEFAULT_FRONTEND, tmp_path, progress=False)
    np.testing.assert_allclose(A, X, atol=1e-6)
    target = Path(mine[0].path)
    y = load_audio(target)
    import soundfile as sf

    sf.write(target, 0.5 * y[::-1], 16000, subtype="PCM_16")
    os.utime(target, ns=(1, 1))  # even with an old mtime the size/mtime pair differs
    B = extract(mine, DEFAULT_FRONTEND, tmp_path, progress=False)
    assert not np.allclose(B[0], A[0])
    np.testing.assert_allclose(B[1:], A[1:], atol=1e-6)


@pytest.mark.parametrize("damage", ["truncate_data", "missing_meta", "truncate_meta",
                                    "zero_data"])
def test_interrupted_cache_write_is_rebuilt(tmp_path, clips, damage, caplog):
    X = np.array(extract(clips, DEFAULT_FRONTEND, tmp_path, progress=False))
    meta = _entries(tmp_path, "logmel")[0]
    data = meta.with_name(meta.stem + ".X.npy")
    if damage == "truncate_data":  # a write killed half-way through the data file
        with open(data, "r+b") as f:
            f.truncate(data.stat().st_size // 2)
    elif damage == "missing_meta":  # killed after the data, before the description
        meta.unlink()
    elif damage == "truncate_meta":
        meta.write_text(meta.read_text()[:20])
    else:
        data.write_bytes(b"")
    with caplog.at_level("WARNING"):
        X2 = extract(clips, DEFAULT_FRONTEND, tmp_path, progress=False)
    np.testing.assert_array_equal(np.asarray(X2), X)
    assert X2.flags.writeable  # an in-memory array callers may normalise in place
    if damage != "missing_meta":
        assert "rebuilding" in caplog.text
    # The rebuilt entry is complete again and is read back without rebuilding.
    assert features._load_entry(meta.with_suffix("")) is not None


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.npy"

    def fail(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        features._atomic_write(target, fail)
    assert list(tmp_path.iterdir()) == []


def test_broken_files_are_listed_and_skipped(tmp_path, broken_words):
    ds = load_dataset(broken_words)
    X, ok, problems = extract(ds.clips, DEFAULT_FRONTEND, tmp_path, progress=False,
                              return_ok=True)
    assert X.shape[0] == len(ds.clips)
    bad = {Path(p).name: msg for p, msg in problems}
    assert set(bad) == {"broken_truncated_nohash_0.wav", "broken_empty_nohash_0.wav",
                        "broken_header_nohash_0.wav"}
    assert "truncated" in bad["broken_truncated_nohash_0.wav"]
    assert "empty" in bad["broken_empty_nohash_0.wav"]
    assert "header" in bad["broken_header_nohash_0.wav"]
    assert int((~ok).sum()) == 3
    assert all(not ok[i] for i, c in enumerate(ds.clips) if Path(c.path).name in bad)
    # The problems are remembered by the cache, not forgotten on the second read.
    _, ok2, problems2 = extract(ds.clips, DEFAULT_FRONTEND, tmp_path, progress=False,
                                return_ok=True)
    assert [tuple(p) for p in problems2] == [tuple(p) for p in problems]
    np.testing.assert_array_equal(ok2, ok)
    # Evaluation arrays drop them and keep labels aligned.
    Xe, ye = eval_arrays(ds.split("train") + ds.split("validation") + ds.split("testing"),
                         labels=ds.labels, cache_dir=tmp_path, progress=False)
    assert len(Xe) == len(ds.clips) - 3 == len(ye)


def test_waveform_cache_round_trip(tmp_path, clips):
    w = load_waveforms(clips[:5], DEFAULT_FRONTEND, tmp_path, progress=False)
    for i in range(5):
        y = load_audio(clips[i].path)
        np.testing.assert_allclose(w.get(i), y, atol=1.0 / 32767)
    meta = json.loads(_entries(tmp_path, "waves")[0].read_text())
    assert meta["n"] == 5 and meta["problems"] == []


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("KWS_CACHE_DIR", str(tmp_path / "c"))
    assert features.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("KWS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert features.default_cache_dir() == tmp_path / "xdg" / "bnn-kws"


def test_prune_drops_least_recently_used_first(tmp_path, clips):
    extract(clips[:3], DEFAULT_FRONTEND, tmp_path, progress=False)
    old = _entries(tmp_path, "logmel")[0]
    os.utime(old, (1, 1))  # not used for a long time
    extract(clips[3:6], DEFAULT_FRONTEND, tmp_path, progress=False)
    sizes = {p: p.stat().st_size for p in tmp_path.iterdir()}
    old_size = sum(v for p, v in sizes.items() if p.name.startswith(old.stem + "."))
    freed = features.prune(tmp_path, max_bytes=sum(sizes.values()) - old_size)
    assert freed == old_size
    left = {p.name for p in tmp_path.iterdir()}
    assert not any(n.startswith(old.stem + ".") for n in left)
    assert len([n for n in left if n.endswith(".json")]) == 3  # the other entries stay


def test_feature_stats(clips, tmp_path):
    X = extract(clips, DEFAULT_FRONTEND, tmp_path, progress=False)
    mean, std = feature_stats(X)
    assert mean == pytest.approx(float(np.mean(X, dtype=np.float64)), rel=1e-6)
    assert std == pytest.approx(float(np.std(X, dtype=np.float64)), rel=1e-5)
    with pytest.raises(ValueError):
        feature_stats(np.zeros((0, 98, 64)))
