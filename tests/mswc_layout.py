"""An MSWC-layout corpus made from real recordings, for the MSWC reader's tests.

The Speech Commands v0.01 sample of ``../shared/data`` is re-encoded the way MSWC publishes
its clips (48 kHz Opus under ``<lang>/clips/<word>/``) with a ``<lang>_splits.csv`` that names
every clip's word and speaker; nothing of MSWC itself is needed.
"""
from __future__ import annotations

import csv
import zlib
from pathlib import Path

import numpy as np

from bnnkws.frontend.audio import load_audio, resample
from bnnkws.kws.data.base import list_audio, speaker_from_name


def speaker_set(speaker: str) -> str:
    """A speaker-disjoint TRAIN/DEV/TEST assignment (stable hash of the speaker)."""
    h = zlib.crc32(speaker.encode()) % 10
    return "TEST" if h == 0 else "DEV" if h == 1 else "TRAIN"


def make_mswc(src: Path, out: Path, lang: str = "en", words=None, per_word: int = 10,
              set_of=None) -> list[dict]:
    """Write ``out/<lang>/clips/<word>/common_voice_<lang>_<n>.opus`` and
    ``out/<lang>/<lang>_splits.csv`` from the word folders of ``src``; returns the rows.
    ``set_of(speaker, index)`` gives each clip's SET (default: :func:`speaker_set`)."""
    import soundfile as sf

    set_of = set_of or (lambda spk, i: speaker_set(spk))
    folder = out / lang
    rows, n = [], 0
    for w in sorted(words or [p.name for p in src.iterdir() if p.is_dir()]):
        for f in list_audio(src / w)[:per_word]:
            spk = speaker_from_name(f)
            link = f"{w}/common_voice_{lang}_{1000 + n}.opus"
            dest = folder / "clips" / link
            dest.parent.mkdir(parents=True, exist_ok=True)
            y = resample(load_audio(f, sr=16000), 16000, 48000).astype(np.float32)
            sf.write(str(dest), y, 48000, format="OGG", subtype="OPUS")
            rows.append({"SET": set_of(spk, n), "LINK": link, "WORD": w, "VALID": "True",
                         "SPEAKER": spk, "GENDER": "NAN", "source": str(f)})
            n += 1
    with open(folder / f"{lang}_splits.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, ["SET", "LINK", "WORD", "VALID", "SPEAKER", "GENDER"],
                            extrasaction="ignore")
        wr.writeheader()
        wr.writerows(rows)
    return rows
