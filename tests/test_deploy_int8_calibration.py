"""The int8 twin's calibration clips come from the run's training split, read back from
``split.json``. A corpus without ``_background_noise_`` (the extra Speech Commands clips) has
generated-noise silence clips there, named ``noise:white`` / ``noise:pink`` without their seed:
calibration must leave them out rather than fail to open them (``kws export`` of a
multi-corpus run did)."""
from __future__ import annotations

import json

import numpy as np

from bnnkws.deploy.int8 import calibration_audio
from bnnkws.frontend import DEFAULT_FRONTEND


def test_calibration_reads_recorded_clips_and_leaves_generated_noise_out(sc_v2, tmp_path):
    words = sorted(str(p) for p in sc_v2.glob("*/*.wav") if p.parent.name != "_silence_")[:6]
    (tmp_path / "split.json").write_text(json.dumps(
        {"train": ["noise:white", words[0], "noise:pink", *words[1:], "noise:white"]}))
    audio, desc = calibration_audio(tmp_path, DEFAULT_FRONTEND, n=50, seed=0)
    assert audio.shape == (6, DEFAULT_FRONTEND.clip_samples) and audio.dtype == np.float32
    assert "6 training clips" in desc
    assert np.all(np.abs(audio).max(1) > 0)  # real speech, not padding
