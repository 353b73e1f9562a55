"""`kws data shards` writes the shards `kws train --pipeline shards` then reuses."""
from __future__ import annotations

import re

from bnnkws.app.cli import main


def test_shards_cli_builds_once_and_training_reuses_them(sc_v2, tmp_path, capsys):
    cache = tmp_path / "cache"
    args = ["data", "shards", str(sc_v2), "--split", "validation", "--cache-dir", str(cache),
            "--quiet", "--workers", "1"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert re.search(r"validation\s+363 clips in\s+1 shards\s+[\d.]+ s \([\d,]+ clips/s\)",
                     first), first
    assert main(args) == 0
    assert "already built" in capsys.readouterr().out
    folders = sorted(p.name for p in cache.glob("shards-*"))
    assert len(folders) == 1

    from bnnkws.kws.training.train import TrainConfig, prepare_data

    data = prepare_data(TrainConfig(data=str(sc_v2), pipeline="shards", cache_dir=str(cache),
                                    verbose=0))
    assert data.pipeline == "shards" and data.train_x is None
    assert data.num_train == 2805  # the seed-0 training split, every clip readable
    after = sorted(p.name for p in cache.glob("shards-*"))
    assert len(after) == 3 and folders[0] in after  # train and test added, validation reused
    x, y = next(iter(data.val_stream(16)))
    assert tuple(x.shape) == (16, 98, 64) and tuple(y.shape) == (16,)
    x, y = next(iter(data.augmented(0, 1, 8)))
    assert tuple(x.shape) == (8, 98, 64)
    mean, std = data.norm_stats()
    assert -12 < mean < 0 and 1 < std < 6  # raw log-mel of real speech

    # --band-limit-prob through the sharded pipeline: the same draws but the low-pass, so the
    # mel bands wholly above 4 kHz fall to the log floor (this config mixes no recorded noise,
    # so many clips are quiet up there already) and the speech bands stay
    import numpy as np

    from bnnkws.frontend import DEFAULT_FRONTEND
    from bnnkws.frontend.reference import mel_matrix

    out = {}
    for name, band in (("plain", 0.0), ("limited", 1.0)):
        d = prepare_data(TrainConfig(data=str(sc_v2), pipeline="shards", cache_dir=str(cache),
                                     verbose=0, spec_augment=False, band_limit_prob=band,
                                     band_limit_hz=(3400.0, 4000.0)))
        out[name] = np.asarray(next(iter(d.augmented(0, 1, 32)))[0])
    M = mel_matrix(DEFAULT_FRONTEND)
    hz = np.fft.rfftfreq(DEFAULT_FRONTEND.n_fft, 1 / 16000)
    lowest = np.array([hz[np.flatnonzero(M[:, j])[0]] for j in range(M.shape[1])])
    highest = np.array([hz[np.flatnonzero(M[:, j])[-1]] for j in range(M.shape[1])])
    above, speech = lowest > 4100, highest < 3300
    floor = np.log(DEFAULT_FRONTEND.log_offset)
    loud = np.median(out["plain"][:, :, above], axis=(1, 2)) > floor + 2  # 9 dB over the floor
    assert loud.sum() >= 8
    assert np.quantile(out["limited"][:, :, above], 0.99) < floor + 0.1
    drop = out["plain"] - out["limited"]  # natural-log power, per clip, frame and band
    assert np.abs(np.median(drop[:, :, speech])) < np.log(1.1)
