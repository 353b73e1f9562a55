"""Augmentation and the tf.data training pipeline."""
from __future__ import annotations

import numpy as np
import pytest

from bnnkws.frontend import DEFAULT_FRONTEND
from bnnkws.kws.features.augment import (AugmentConfig, NoiseBank, augment_waveforms, place,
                                         spec_augment)
from bnnkws.kws.data import load_dataset
from bnnkws.kws.features.pipeline import BatchMaker, eval_arrays, train_dataset


def test_place_centres_crops_and_shifts():
    rng = np.random.default_rng(0)
    short = np.ones(8000, np.float32)
    Y = place([short], 16000, None)
    assert Y[0, :4000].sum() == 0 and Y[0, 4000:12000].all() and Y[0, 12000:].sum() == 0
    # Time shift: the burst moves by at most max_shift, zero filled, never wrapped around.
    shifts = []
    for _ in range(50):
        Y = place([short], 16000, rng, max_shift=1600)
        nz = np.flatnonzero(Y[0])
        shifts.append(nz[0] - 4000)
        assert len(nz) == 8000 and nz[-1] - nz[0] == 7999
    assert max(np.abs(shifts)) <= 1600 and len(set(shifts)) > 10
    # A long clip is cropped at a random place in training, in the middle otherwise.
    long = np.arange(32000, dtype=np.float32)
    assert place([long], 16000, None)[0, 0] == 8000
    starts = {place([long], 16000, rng)[0, 0] for _ in range(10)}
    assert len(starts) > 5
    # Shifting out of the window at the edges loses samples rather than wrapping them.
    full = np.ones(16000, np.float32)
    Y = place([full], 16000, rng, max_shift=1600)
    assert 16000 - 1600 <= np.count_nonzero(Y[0]) <= 16000


def test_noise_mixing_hits_the_snr_range():
    rng = np.random.default_rng(1)
    t = np.arange(16000) / 16000
    clean = np.tile(0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32), (64, 1))
    cfg = AugmentConfig(gain=False, noise_prob=1.0, snr_db=(5.0, 15.0))
    noisy = augment_waveforms(clean.copy(), cfg, rng, NoiseBank())
    n = noisy - clean
    snr = 10 * np.log10(np.mean(clean**2, axis=1) / np.mean(n**2, axis=1))
    assert snr.min() > 4.9 and snr.max() < 15.1 and snr.std() > 1.0
    # Silence gets noise at an absolute level, not an SNR of nothing.
    quiet = augment_waveforms(np.zeros((16, 16000), np.float32), cfg, rng, NoiseBank())
    dbfs = 10 * np.log10(np.mean(quiet**2, axis=1))
    assert dbfs.min() > -61 and dbfs.max() < -19
    # noise_prob 0 and noise=False leave the signal alone.
    same = augment_waveforms(clean.copy(), AugmentConfig(gain=False, noise_prob=0.0), rng,
                             NoiseBank())
    np.testing.assert_array_equal(same, clean)


def test_noise_bank_uses_dataset_noise(tmp_path):
    import soundfile as sf

    rng = np.random.default_rng(0)
    hum = (0.2 * np.sin(2 * np.pi * 50 * np.arange(16000 * 12) / 16000)).astype(np.float32)
    sf.write(tmp_path / "hum.wav", hum, 16000)
    (tmp_path / "bad.wav").write_bytes(b"nope")
    bank = NoiseBank.from_files([tmp_path / "hum.wav", tmp_path / "bad.wav"], DEFAULT_FRONTEND)
    assert not bank.generated and len(bank.arrays) == 1
    assert len(bank.arrays[0]) == int(0.8 * len(hum))  # long file: training stretch only
    seg = bank.sample(4, rng)
    assert seg.shape == (4, 16000)
    np.testing.assert_allclose(np.sqrt(np.mean(seg**2, axis=1)), 1.0, rtol=1e-3)
    # 50 Hz hum, not white noise: almost all energy in the lowest FFT bins.
    spec = np.abs(np.fft.rfft(seg[0])) ** 2
    assert spec[:60].sum() / spec.sum() > 0.95
    assert NoiseBank.from_files([], DEFAULT_FRONTEND).generated


def test_spec_augment_masks():
    rng = np.random.default_rng(0)
    X = np.random.default_rng(1).normal(-5, 2, (8, 98, 64)).astype(np.float32)
    cfg = AugmentConfig(time_masks=1, time_mask_frames=10, freq_masks=1, freq_mask_bins=8)
    Y = spec_augment(X.copy(), cfg, rng)
    changed = Y != X
    for i in range(8):
        rows = np.flatnonzero(changed[i].all(axis=1))
        cols = np.flatnonzero(changed[i].all(axis=0))
        assert len(rows) <= 10 and len(cols) <= 8
        assert np.allclose(Y[i][changed[i]], X[i].mean(), atol=1e-4)
    assert changed.any()


@pytest.fixture(scope="module")
def synth_ds(synth_words):
    return load_dataset(synth_words, val_frac=0.2, test_frac=0.2)


def test_batch_maker_is_reproducible_and_varies_by_epoch(synth_ds, tmp_path):
    tr = synth_ds.split("train")
    a = BatchMaker(tr, augment=AugmentConfig(), seed=3, cache_dir=tmp_path, progress=False)
    b = BatchMaker(tr, augment=AugmentConfig(), seed=3, cache_dir=tmp_path, progress=False)
    (xa, ya), = [next(iter(a.epoch(8, epoch=0)))]
    xb, yb = next(iter(b.epoch(8, epoch=0)))
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    xc, _ = next(iter(a.epoch(8, epoch=1)))
    assert not np.array_equal(xa, xc)
    # An epoch covers every readable clip exactly once.
    seen = np.concatenate([y for _, y in a.epoch(5, epoch=2)])
    assert len(seen) == len(tr)
    assert sorted(seen) == sorted(a.y.tolist())


def test_batch_maker_draws_part_of_a_pool_afresh_each_epoch(synth_ds, tmp_path):
    """--aux-only-per-epoch: the pooled clips take part n at a time, the others every epoch."""
    tr = synth_ds.split("train")
    pool = np.arange(len(tr)) % 3 == 0
    n = int(pool.sum()) // 2
    ids = np.arange(len(tr))  # carried as the per-clip aux channel, so batches name their clips

    def maker():
        return BatchMaker(tr, augment=AugmentConfig(), seed=3, cache_dir=tmp_path,
                          progress=False, aux=ids, pool_per_epoch=(pool, n))

    a = maker()
    assert len(a) == int((~pool).sum()) + n
    drawn = []
    for e in range(3):
        seen = np.concatenate([aux for _, _, aux in a.epoch(7, epoch=e)])
        assert len(seen) == len(set(seen)) == len(a)
        assert set(np.flatnonzero(~pool)) <= set(seen)
        drawn.append(frozenset(seen[pool[seen]]))
        assert len(drawn[-1]) == n
    assert len(set(drawn)) == 3, "each epoch draws other pool clips"
    again = np.concatenate([aux for _, _, aux in maker().epoch(7, epoch=1)])
    assert frozenset(again[pool[again]]) == drawn[1], "a resumed run draws the same"


def test_batch_maker_repeats_clips_within_an_epoch(synth_ds, tmp_path):
    """--data-repeat: a clip with repeat k takes part k times an epoch, each augmented anew."""
    tr = synth_ds.split("train")
    reps = np.where(np.arange(len(tr)) < 5, 3, 1)
    a = BatchMaker(tr, augment=AugmentConfig(), seed=3, cache_dir=tmp_path, progress=False,
                   aux=np.arange(len(tr)), repeats=reps)
    assert len(a) == len(tr) + 10
    batches = list(a.epoch(len(a), epoch=0))
    (x, _, seen), = batches
    np.testing.assert_array_equal(np.bincount(seen, minlength=len(tr)), reps)
    rows = np.flatnonzero(seen == 0)
    assert not np.array_equal(x[rows[0]], x[rows[1]]), "each repeat has its own draw"
    with pytest.raises(ValueError, match="repeats"):
        BatchMaker(tr, augment=AugmentConfig(), cache_dir=tmp_path, progress=False,
                   repeats=np.zeros(len(tr), int))


def test_train_dataset_shapes_labels_and_epochs(synth_ds, tmp_path):
    import tensorflow as tf

    tr = synth_ds.split("train")
    ds = train_dataset(tr, DEFAULT_FRONTEND, batch_size=8, augment=AugmentConfig(), seed=0,
                       cache_dir=tmp_path, progress=False)
    assert int(ds.cardinality()) == -(-len(tr) // 8)
    batches = list(ds)
    x, y = batches[0]
    assert x.shape[1:] == (98, 64) and x.dtype == tf.float32 and y.dtype == tf.int32
    assert sum(int(b[1].shape[0]) for b in batches) == len(tr)
    ys = np.concatenate([b[1].numpy() for b in batches])
    expect = sorted(synth_ds.labels.index(c.label) for c in tr)
    assert sorted(ys.tolist()) == expect
    # A second pass is a new epoch: different order and augmentation.
    x2, _ = next(iter(ds))
    assert not np.array_equal(x.numpy(), x2.numpy())
    # Without augmentation the batches are the cached evaluation features, shuffled.
    plain = train_dataset(tr, batch_size=64, augment=None, seed=0, cache_dir=tmp_path,
                          progress=False)
    xp, yp = next(iter(plain))
    X, yv = eval_arrays(tr, cache_dir=tmp_path, progress=False)
    order = np.lexsort((X.reshape(len(X), -1)[:, 0], yv))
    order_p = np.lexsort((xp.numpy().reshape(len(xp), -1)[:, 0], yp.numpy()))
    np.testing.assert_array_equal(xp.numpy()[order_p], X[order])


def test_augmented_features_stay_close_to_clean_ones(synth_ds, tmp_path):
    """Augmentation perturbs, it does not destroy: mild settings keep features near the clean
    log-mel (a bug such as misaligned labels or garbage noise would not)."""
    tr = synth_ds.split("train")
    clean = BatchMaker(tr, augment=AugmentConfig.off(), cache_dir=tmp_path, progress=False)
    mild = BatchMaker(tr, augment=AugmentConfig(time_shift=False, gain=False, spec_augment=False,
                                                snr_db=(30.0, 40.0)),
                      cache_dir=tmp_path, progress=False)
    xc, yc = clean.batch(np.arange(8), np.random.default_rng(0))
    xm, ym = mild.batch(np.arange(8), np.random.default_rng(0))
    np.testing.assert_array_equal(yc, ym)
    X, _ = eval_arrays(tr, cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(xc, X[:8], atol=1e-4)
    loud = xc > np.percentile(xc, 50)
    assert np.abs(xm - xc)[loud].mean() < 0.5


def test_labels_required_for_plain_lists(synth_ds, tmp_path):
    with pytest.raises(ValueError, match="labels"):
        eval_arrays(list(synth_ds.split("testing")), cache_dir=tmp_path, progress=False)
    X, y = eval_arrays(list(synth_ds.split("testing")), labels=synth_ds.labels,
                       cache_dir=tmp_path, progress=False)
    assert len(X) == len(y) == len(synth_ds.split("testing"))


def test_augment_config_round_trip():
    cfg = AugmentConfig(snr_db=(1.0, 2.0), spec_augment=False)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    off = AugmentConfig.off()
    assert not (off.any_waveform or off.spec_augment)


def test_features_carry_the_labels_on_speaker_disjoint_split(sc_v2, tmp_path):
    """End to end on real speech: cached features of the training split predict the labels of
    unseen speakers well above chance with a nearest-centroid rule (misaligned labels, wrong
    crops or a broken split would drop this to chance)."""
    ds = load_dataset(sc_v2)
    Xtr, ytr = eval_arrays(ds.split("train")[::3], cache_dir=tmp_path, progress=False)
    Xte, yte = eval_arrays(ds.split("testing"), cache_dir=tmp_path, progress=False)

    def summary(X):  # mean log-mel over four quarters of the second
        return np.concatenate([q.mean(axis=1) for q in np.array_split(np.asarray(X), 4, 1)], 1)

    A, B = summary(Xtr), summary(Xte)
    mu, sd = A.mean(0), A.std(0)
    A, B = (A - mu) / sd, (B - mu) / sd
    k = len(ds.labels)

    def accuracy(labels):
        C = np.stack([A[labels == i].mean(0) for i in range(k)])
        return float((np.argmin(((B[:, None] - C[None]) ** 2).sum(-1), 1) == yte).mean())

    acc = accuracy(ytr)
    assert acc > 2.5 / k, acc  # measured 0.30 on the full training split, chance 1/12
    assert accuracy(np.random.default_rng(0).permutation(ytr)) < acc - 0.08


def test_band_limit_by_hand():
    """Tones below the roll-off pass unchanged, tones above the cutoff vanish, a tone inside the
    roll-off gets the raised cosine's gain; only the drawn share of rows is touched."""
    from bnnkws.kws.features.augment import BAND_EDGE_HZ, band_limit

    t = np.arange(16000) / 16000
    tone = lambda hz: np.sin(2 * np.pi * hz * t)  # noqa: E731
    Y = np.stack([tone(1000) + tone(3900) + tone(6000)] * 8).astype(np.float32)
    cfg = AugmentConfig(band_limit_prob=1.0, band_limit_hz=(4000.0, 4000.0))
    Z = band_limit(Y.copy(), cfg, np.random.default_rng(0), 16000)
    F = np.abs(np.fft.rfft(Z, axis=1)) / 8000  # 1 s: bin k is k Hz, a unit tone gives 1
    x = (3900 - (4000 - BAND_EDGE_HZ)) / BAND_EDGE_HZ
    np.testing.assert_allclose(F[:, 1000], 1.0, atol=1e-4)
    np.testing.assert_allclose(F[:, 3900], 0.5 * (1 + np.cos(np.pi * x)), atol=1e-4)
    np.testing.assert_allclose(F[:, 6000], 0.0, atol=1e-4)
    half = band_limit(Y.copy(), AugmentConfig(band_limit_prob=0.5), np.random.default_rng(1),
                      16000)
    touched = np.abs(half - Y).max(axis=1) > 1e-3
    assert 0 < touched.sum() < 8
    same = band_limit(Y.copy(), AugmentConfig(), np.random.default_rng(0), 16000)
    assert np.array_equal(same, Y)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg


def test_band_limited_batches_have_no_energy_above_the_cutoff(sc_v2, tmp_path):
    """Real training clips through BatchMaker with noise and gain, every row band-limited at
    3.4-4 kHz: the mel bands wholly above 4 kHz lose (nearly) all their energy, as in an 8 kHz
    recording, while the speech bands keep theirs."""
    from bnnkws.frontend.reference import mel_matrix

    tr = load_dataset(sc_v2).train
    pick = [c for c in tr if c.label in ("yes", "stop")][:16]
    plain = AugmentConfig(spec_augment=False)
    limited = AugmentConfig(spec_augment=False, band_limit_prob=1.0,
                            band_limit_hz=(3400.0, 4000.0))
    out = {}
    for name, cfg in (("plain", plain), ("limited", limited)):
        maker = BatchMaker(pick, augment=cfg, labels=tr.labels, seed=0, cache_dir=tmp_path,
                           progress=False)
        out[name] = maker.batch(np.arange(len(pick)), np.random.default_rng(0))[0]
    M = mel_matrix(DEFAULT_FRONTEND)
    hz = np.fft.rfftfreq(DEFAULT_FRONTEND.n_fft, 1 / 16000)
    lowest = np.array([hz[np.flatnonzero(M[:, j])[0]] for j in range(M.shape[1])])
    highest = np.array([hz[np.flatnonzero(M[:, j])[-1]] for j in range(M.shape[1])])
    above, speech = lowest > 4100, highest < 3300
    assert above.sum() >= 10 and speech.sum() >= 30
    drop = out["plain"] - out["limited"]  # natural-log power, per clip, frame and band
    assert np.median(drop[:, :, above]) > np.log(100)  # at least 20 dB less above 4 kHz
    assert np.abs(np.median(drop[:, :, speech])) < np.log(1.1)  # the speech bands stay


def test_speed_perturb_by_hand():
    """A 1 kHz tone of 0.5 s played at speed 1.1 lasts 0.5/1.1 s at 1.1 kHz, at 0.9 lasts
    0.5/0.9 s at 0.9 kHz; only the drawn share of clips is touched; off draws nothing."""
    from bnnkws.kws.features.augment import speed_perturb

    tone = np.sin(2 * np.pi * 1000 * np.arange(8000) / 16000).astype(np.float32)
    for s in (0.9, 1.1):
        cfg = AugmentConfig(speed_prob=1.0, speed_range=(s, s))
        out = speed_perturb([tone] * 3, cfg, np.random.default_rng(0), 16000)
        for y in out:
            assert abs(len(y) - 8000 / s) <= 1
            f = np.fft.rfftfreq(len(y), 1 / 16000)[np.argmax(np.abs(np.fft.rfft(y)))]
            assert f == pytest.approx(1000 * s, abs=3)
    half = speed_perturb([tone] * 40, AugmentConfig(speed_prob=0.5), np.random.default_rng(1),
                         16000)
    assert 5 < sum(len(y) != len(tone) for y in half) < 35
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    assert AugmentConfig(speed_prob=0.3).any_waveform


def test_speed_perturbed_batches_move_the_spectrum_of_real_words(sc_v2, tmp_path):
    """Real training clips through BatchMaker, every clip at speed 1.15 and then at 0.87: the
    energy-weighted mean mel band of the speech moves up and down against the same clips at
    speed 1 (a formant shift of about +-2.6 mel bands near 1 kHz), labels unchanged."""
    tr = load_dataset(sc_v2).train
    pick = [c for c in tr if c.label in ("yes", "stop", "down")][:18]
    out = {}
    for name, s in (("slow", 0.87), ("plain", 1.0), ("fast", 1.15)):
        cfg = AugmentConfig.off()
        cfg.speed_prob, cfg.speed_range = (1.0 if s != 1.0 else 0.0), (s, s)
        maker = BatchMaker(pick, augment=cfg, labels=tr.labels, seed=0, cache_dir=tmp_path,
                           progress=False)
        X, y = maker.batch(np.arange(len(pick)), np.random.default_rng(0))
        assert list(y) == [tr.labels.index(c.label) for c in pick]
        power = np.exp(X)
        out[name] = (power * np.arange(X.shape[2])).sum(axis=(1, 2)) / power.sum(axis=(1, 2))
    assert np.median(out["fast"] - out["plain"]) > 1.0
    assert np.median(out["plain"] - out["slow"]) > 1.0


def test_speed_perturbation_is_an_in_memory_pipeline_option():
    from bnnkws.kws.training.config import TrainConfig, TrainError

    with pytest.raises(TrainError, match="--speed-prob: in-memory pipeline only"):
        TrainConfig(data="x", speed_prob=0.5, pipeline="shards")
    with pytest.raises(TrainError, match="speed-range"):
        TrainConfig(data="x", speed_prob=0.5, speed_range=(1.2, 0.8))
    assert TrainConfig(data="x", speed_prob=0.5).speed_range == (0.9, 1.1)
