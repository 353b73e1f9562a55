"""Reading audio files: any soundfile format, mono, 16 kHz, optional pad/crop, clear errors.

Every failure is an :class:`AudioError` (a ``ValueError``) naming the file and the problem; a
missing file is :class:`AudioFileNotFoundError`, which is also a ``FileNotFoundError``.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

__all__ = [
    "AudioError",
    "AudioFileNotFoundError",
    "load_audio",
    "loudest_window",
    "loudest_offset",
    "pad_or_crop",
    "resample",
    "to_mono",
    "CROP_MODES",
]

CROP_MODES = ("center", "start", "random")

# First bytes of containers libsndfile reads (errors in these are corruption, not format).
_SUPPORTED_MAGIC = {
    b"RIFF": "WAV",
    b"RIFX": "WAV",
    b"RF64": "WAV (RF64)",
    b"fLaC": "FLAC",
    b"OggS": "OGG",
    b"FORM": "AIFF",
}
# Recognisable formats soundfile cannot decode: say what they are and how to convert.
_UNSUPPORTED_MAGIC = {
    b"ftyp": "MP4/M4A/AAC",  # at offset 4
    b"\x1aE\xdf\xa3": "Matroska/WebM",
    b"#!AM": "AMR",
    b"MThd": "MIDI",
}
_EXT_FORMAT = {".wav": "WAV", ".wave": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG",
               ".aif": "AIFF", ".aiff": "AIFF"}


class AudioError(ValueError):
    """An audio file that cannot be used. ``.path`` is the file, ``.problem`` what is wrong."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class AudioFileNotFoundError(AudioError, FileNotFoundError):
    """The audio file does not exist (catchable as AudioError, ValueError or FileNotFoundError)."""


def _unsupported_name(head: bytes) -> str | None:
    if head[4:8] == b"ftyp":
        return _UNSUPPORTED_MAGIC[b"ftyp"]
    for magic, name in _UNSUPPORTED_MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def _diagnose_open_error(path: Path, head: bytes, exc: Exception) -> AudioError:
    """Turn libsndfile's terse error into 'corrupt X' vs 'unsupported format'."""
    detail = getattr(exc, "error_string", None) or str(exc)
    container = _SUPPORTED_MAGIC.get(head[:4])
    if container:
        return AudioError(path, f"corrupt or unreadable {container} data ({detail})")
    expected = _EXT_FORMAT.get(path.suffix.lower())
    if expected:
        return AudioError(
            path,
            f"corrupt {expected} file: its header is not a valid {expected} header "
            f"(first bytes {head[:4]!r}; {detail})",
        )
    other = _unsupported_name(head)
    import soundfile as sf

    supported = ", ".join(sorted(sf.available_formats()))
    what = f"{other} audio" if other else "not a recognised audio format"
    return AudioError(
        path,
        f"unsupported format: {what} (readable: {supported}); convert it first, "
        f"e.g. `ffmpeg -i '{path.name}' -ac 1 -ar 16000 out.wav`",
    )


def _wav_truncation(path: Path, file_size: int) -> str | None:
    """If a RIFF/WAVE file's data chunk declares more bytes than the file holds, say so.

    libsndfile silently returns the samples that are there; for training data a clip cut short
    by an interrupted copy should be noticed, not padded with silence.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos = 12
            while pos + 8 <= file_size:
                f.seek(pos)
                cid, size = struct.unpack("<4sI", f.read(8))
                if cid == b"data":
                    if size in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                        return None
                    have = file_size - pos - 8
                    if have < size:
                        return (
                            f"truncated WAV: the header declares {size} bytes of audio but "
                            f"the file holds only {have}"
                        )
                    return None
                pos += 8 + size + (size & 1)
    except OSError:
        return None
    return None


def to_mono(y: np.ndarray) -> np.ndarray:
    """Average the channels of ``(frames, channels)`` audio (1-D input is returned as is)."""
    return y if y.ndim == 1 else y.mean(axis=1)


def resample(y: np.ndarray, orig_sr: int, sr: int) -> np.ndarray:
    """Band-limited resampling with soxr (high quality); no-op when the rates match."""
    if orig_sr == sr:
        return y
    import soxr

    return soxr.resample(y, orig_sr, sr, quality="HQ")


def pad_or_crop(y: np.ndarray, length: int, crop: str = "center", rng=None) -> np.ndarray:
    """Fit ``y`` to exactly ``length`` samples.

    ``crop`` places the signal in the window both ways: ``"start"`` keeps the beginning (pads
    zeros at the end), ``"center"`` keeps the middle (pads both sides equally), ``"random"``
    picks a uniformly random offset (``rng``: a ``numpy.random.Generator`` or seed), for
    augmentation.
    """
    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
    if length is None or length < 0:
        raise ValueError(f"length must be a non-negative sample count, got {length!r}")
    n = y.shape[0]
    if n == length:
        return y
    extra = abs(n - length)
    if crop == "start":
        offset = 0
    elif crop == "center":
        offset = extra // 2
    else:
        offset = int(np.random.default_rng(rng).integers(0, extra + 1))
    if n > length:
        return y[offset : offset + length]
    out = np.zeros(length, dtype=y.dtype)
    out[offset : offset + n] = y
    return out


def loudest_window(y: np.ndarray, length: int, hop: int = 160) -> np.ndarray:
    """The ``length``-sample window with the most energy (pads short clips, centred).

    ``hop``: candidate start positions every ``hop`` samples (10 ms at 16 kHz). Enrolment and
    the continual-learning evaluation both cut the word out of a longer take with this.
    """
    y = np.asarray(y, np.float32)
    if len(y) <= length:
        out = np.zeros(length, np.float32)
        off = (length - len(y)) // 2
        out[off:off + len(y)] = y
        return out
    best = loudest_offset(y, length, hop)
    return y[best:best + length].copy()


def loudest_offset(y: np.ndarray, length: int, hop: int = 160) -> int:
    """Where :func:`loudest_window` cuts ``y``: the start sample of its loudest ``length``
    samples (0 when ``y`` is not longer than that; the web console shades this window)."""
    y = np.asarray(y, np.float32)
    if len(y) <= length:
        return 0
    e = np.concatenate([[0.0], np.cumsum(y.astype(np.float64) ** 2)])
    starts = np.arange(0, len(y) - length + 1, hop)
    return int(starts[np.argmax(e[starts + length] - e[starts])])


def load_audio(
    path,
    sr: int = 16000,
    length: int | None = None,
    crop: str = "center",
    rng=None,
) -> np.ndarray:
    """Read an audio file as float32 mono at ``sr`` Hz, optionally padded/cropped to ``length``.

    Reads anything soundfile reads (WAV, FLAC, OGG/Vorbis, AIFF, ...). Multi-channel audio is
    averaged to mono; other rates are resampled with soxr. Raises :class:`AudioError` naming
    the file and the problem for a missing, empty, zero-length, truncated, corrupt or
    unsupported file, or one containing NaN/inf samples.
    """
    import soundfile as sf

    path = Path(path)
    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
    if not path.exists():
        raise AudioFileNotFoundError(path, "no such file")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise AudioError(path, f"cannot be read: {exc.strerror or exc}") from exc
    try:
        y, file_sr = sf.read(str(path), dtype="float32", always_2d=False)
    except sf.LibsndfileError as exc:
        raise _diagnose_open_error(path, head, exc) from exc
    except (sf.SoundFileError, RuntimeError) as exc:
        raise AudioError(path, f"unreadable audio data ({exc})") from exc
    truncated = _wav_truncation(path, size)
    if truncated:
        raise AudioError(path, truncated)
    if y.size == 0:
        raise AudioError(path, "contains no audio samples (zero length)")
    finite = np.isfinite(y)
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(len(y), -1).all(axis=1))
        raise AudioError(
            path,
            f"{bad.size} sample(s) are NaN or infinite (first at {bad[0] / file_sr:.3f} s, "
            f"frame {bad[0]})",
        )
    y = to_mono(y)
    y = resample(y, int(file_sr), int(sr)).astype(np.float32, copy=False)
    if length is not None:
        y = pad_or_crop(y, int(length), crop=crop, rng=rng)
    return np.ascontiguousarray(y, dtype=np.float32)


def describe(path) -> dict:
    """Header facts of an audio file (rate, channels, frames, duration, format), for CLIs."""
    import soundfile as sf

    info = sf.info(os.fspath(path))
    return {
        "sample_rate": info.samplerate,
        "channels": info.channels,
        "frames": info.frames,
        "duration_s": info.duration,
        "format": f"{info.format}/{info.subtype}",
    }
