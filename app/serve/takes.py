"""Takes sent from the page (browser recordings as 16-bit PCM WAV, or uploaded files).

They are decoded by the project's audio reader (:func:`bnnkws.frontend.audio.load_audio`, via
:func:`bnnkws.deploy.enroll.load_clips` for an enrolment, exactly as `kws enroll --from DIR`),
so a bad file gets the same one-line error as on the command line, naming the file by the name
the page gave it. Before an enrolment, :func:`preview` shows what the model heard in each take
(:func:`bnnkws.deploy.enroll.hear_takes`, the report `kws enroll` prints) and its waveform.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import numpy as np

MAX_TAKES = 30
WAVEFORM_POINTS = 300  # (min, max) pairs drawn per take


class UploadError(ValueError):
    """Takes that cannot be used as sent (too many, none, empty); the message says which."""


@dataclass
class Upload:
    """One file from the page: the name it gave and the bytes."""

    name: str
    data: bytes


def safe_names(uploads: Sequence[Upload]) -> List[str]:
    """File names to store the takes under: the base name the browser sent, reduced to
    letters, digits, ``._- ``, unique within the request (``take 3.wav`` when empty)."""
    out, seen = [], set()
    for i, u in enumerate(uploads):
        base = re.sub(r"[^\w.\- ]+", "_", Path(str(u.name or "")).name).strip(" .")[:80]
        base = base or f"take {i + 1}.wav"
        name, k = base, 2
        while name.lower() in seen:
            stem, dot, ext = base.rpartition(".")
            name = f"{stem} ({k}).{ext}" if dot else f"{base} ({k})"
            k += 1
        seen.add(name.lower())
        out.append(name)
    return out


def check_uploads(uploads: Sequence[Upload], minimum: int = 1) -> None:
    if len(uploads) < minimum:
        raise UploadError(f"{len(uploads)} take(s) sent; need at least {minimum}")
    if len(uploads) > MAX_TAKES:
        raise UploadError(f"{len(uploads)} takes sent; at most {MAX_TAKES} at once")


class TakeFiles:
    """The uploads written to a private temporary folder under their safe names, for the
    audio reader (which reads files); error messages name them without the folder."""

    def __init__(self, uploads: Sequence[Upload]):
        self.uploads = list(uploads)
        self.names = safe_names(self.uploads)

    def __enter__(self) -> "TakeFiles":
        self._tmp = tempfile.TemporaryDirectory(prefix="kws-serve-takes-")
        self.dir = Path(self._tmp.name)
        self.paths = []
        for name, u in zip(self.names, self.uploads):
            p = self.dir / name
            p.write_bytes(u.data)
            self.paths.append(p)
        return self

    def __exit__(self, *exc) -> bool:
        self._tmp.cleanup()
        return False

    def clean(self, message: str) -> str:
        """``message`` with the temporary folder taken out of the file names it holds."""
        return message.replace(str(self.dir) + "/", "").replace(str(self.dir), "")


def waveform(y: np.ndarray, sample_rate: int, clip_samples: int,
             points: int = WAVEFORM_POINTS) -> dict:
    """What the page draws: ``peaks`` ((min, max) per slice of the take), its ``seconds``, and
    ``window`` [start, end] s: the loudest second, the part enrolment uses."""
    from bnnkws.frontend.audio import loudest_offset

    y = np.asarray(y, np.float32)
    n = len(y)
    k = max(1, min(points, n))
    edges = np.linspace(0, n, k + 1).astype(int)
    peaks = [[round(float(y[a:b].min()), 3), round(float(y[a:b].max()), 3)] if b > a
             else [0.0, 0.0] for a, b in zip(edges[:-1], edges[1:])]
    start = loudest_offset(y, clip_samples) if n > clip_samples else 0
    end = min(n, start + clip_samples)
    return {"seconds": round(n / sample_rate, 3), "peaks": peaks,
            "window": [round(start / sample_rate, 3), round(end / sample_rate, 3)]}


def preview(bundle, uploads: Sequence[Upload], word: str = "", detector=None) -> dict:
    """Each take decoded, drawn and classified before enrolment: ``{"takes": [{"name",
    "seconds", "peaks", "window", "level_dbfs", "silent", "heard": {"label", "probability",
    "exit"}}], "heard_as": {label: count}, "confusable_with": [...]}``. Raises the reader's
    :class:`bnnkws.frontend.audio.AudioError` (message cleaned) for a file it cannot read."""
    from bnnkws.deploy.enroll import SILENCE_DBFS, hear_takes, peak_dbfs
    from bnnkws.frontend.audio import AudioError, load_audio, loudest_window

    check_uploads(uploads)
    fe = bundle.frontend
    with TakeFiles(uploads) as files:
        audio = []
        for p in files.paths:
            try:
                audio.append(load_audio(p, sr=fe.sample_rate))
            except AudioError as e:
                raise _clean_audio_error(e, files) from e
        names = files.names
    clips = np.stack([loudest_window(y, fe.clip_samples) for y in audio])
    heard = hear_takes(bundle, clips, word=word.strip() or None, detector=detector)
    takes = []
    for name, y, h in zip(names, audio, heard["takes"]):
        level = peak_dbfs(y, fe.sample_rate)
        takes.append({"name": name, **waveform(y, fe.sample_rate, fe.clip_samples),
                      "level_dbfs": round(level, 1), "silent": bool(level < SILENCE_DBFS),
                      "heard": h})
    return {"takes": takes, "heard_as": heard["heard_as"],
            "confusable_with": heard["confusable_with"]}


def _clean_audio_error(e, files: TakeFiles):
    from bnnkws.frontend.audio import AudioError

    return AudioError(files.clean(e.path), e.problem)


def enrolment_clips(bundle, uploads: Sequence[Upload]):
    """``(clips (n, samples), names)`` for :func:`bnnkws.deploy.enroll.enroll`, read as
    `kws enroll --from DIR` reads a folder (:func:`bnnkws.deploy.enroll.load_clips`: at least
    three takes, none silent, the loudest second of each); errors name the takes."""
    from bnnkws.deploy.enroll import load_clips
    from bnnkws.frontend.audio import AudioError

    check_uploads(uploads)
    fe = bundle.frontend
    with TakeFiles(uploads) as files:
        try:
            clips = load_clips(files.paths, fe.sample_rate, fe.clip_samples)
        except AudioError as e:
            raise _clean_audio_error(e, files) from e
        except ValueError as e:
            raise type(e)(files.clean(str(e))) from e
        return clips, list(files.names)
