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

    from bnnkws.kws.train import TrainConfig, prepare_data

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
