"""Waveforms and log-mel features of a clip list, cached on disk.

Two caches, both keyed by the clip list (path, size, mtime, window) so an edited or replaced
file never reuses stale numbers:

* waveforms (int16 PCM at the frontend rate, ragged, up to ``MAX_SECONDS``), keyed also by the
  sample rate: what training re-augments every epoch;
* log-mel features ``(n, frames, n_mels)`` float32 of the centred one-second clip, keyed also by
  ``FrontendConfig.fingerprint()``: a changed frontend parameter never reads an old cache.

Every cache entry is a ``.npy`` data file and a ``.json`` description written *after* it, both
via a temporary file and ``os.replace``; a reader trusts an entry only if the description
exists and the data file has exactly the recorded size and shape. A run killed mid-write
leaves an entry that fails that check and is rebuilt, never half-read.

Unreadable files (empty, wrong header, truncated, undecodable) are listed and skipped: their
rows are marked in ``ok`` (and filled with silence) so the caller can drop them; nothing raises.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bnnkws.frontend import DEFAULT_FRONTEND, FrontendConfig

from bnnkws.kws import fileio
from bnnkws.kws.data.base import Clip

log = logging.getLogger(__name__)

CACHE_VERSION = 1
MAX_SECONDS = 2.0  # longer recordings are centre-cropped to this before caching
_INT16 = 32767.0


def default_cache_dir() -> Path:
    """``$KWS_CACHE_DIR``, else ``~/.cache/bnn-kws`` (``$XDG_CACHE_HOME`` respected)."""
    env = os.environ.get("KWS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bnn-kws"


@dataclass
class Waveforms:
    """Ragged int16 waveforms: clip ``i`` is ``data[offsets[i]:offsets[i+1]]``."""

    data: np.ndarray  # int16 (total,)
    offsets: np.ndarray  # int64 (n + 1,)
    ok: np.ndarray  # bool (n,)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ok)

    def get(self, i: int) -> np.ndarray:
        """Clip ``i`` as float32 in [-1, 1]."""
        return self.data[self.offsets[i]:self.offsets[i + 1]].astype(np.float32) / _INT16

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


# ---------------------------------------------------------------------------------- keys


def _items(clips) -> list:
    out = []
    for c in clips:
        if c.path.startswith("noise:"):
            out.append([c.path, 0, 0, int(c.start), float(c.gain)])
            continue
        try:
            st = os.stat(c.path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, 0
        out.append([os.path.abspath(c.path), size, mtime, int(c.start), float(c.gain)])
    return out


def _key(kind: str, params: dict, clips) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "kind": kind, "params": params,
                       "items": _items(clips)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


# ---------------------------------------------------------------------------- atomic I/O


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, fsync, then ``os.replace``."""
    # fileio gives the file the umask mode (not mkstemp's 0600): a cache is as shareable as files
    fileio.atomic_write(path, write, fsync=True)


def _save_entry(stem: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Data files first, the description last: the description is the completeness mark."""
    meta = dict(meta, arrays={})
    for name, arr in arrays.items():
        p = stem.with_name(f"{stem.name}.{name}.npy")
        _atomic_write(p, lambda f, a=arr: np.save(f, a, allow_pickle=False))
        meta["arrays"][name] = {"shape": list(arr.shape), "dtype": str(arr.dtype),
                                "nbytes": p.stat().st_size}
    _atomic_write(stem.with_suffix(".json"),
                  lambda f: f.write(json.dumps(meta, indent=1).encode()))
    prune(stem.parent, keep=stem.name)


def prune(cache_dir, max_bytes: float | None = None, keep: str | None = None) -> int:
    """Delete least recently used entries until the cache is under ``max_bytes``
    (``$KWS_CACHE_MAX_GB``, default 20 GB). Returns the bytes freed."""
    if max_bytes is None:
        max_bytes = float(os.environ.get("KWS_CACHE_MAX_GB", "20")) * 1e9
    cache_dir = Path(cache_dir)
    entries = []
    for meta in cache_dir.glob("*.json"):
        stem = meta.with_suffix("")
        files = [p for p in cache_dir.glob(f"{stem.name}.*") if p.is_file()]
        try:
            used = meta.stat().st_mtime
            size = sum(p.stat().st_size for p in files)
        except OSError:
            continue
        entries.append((used, size, stem.name, files))
    total = sum(e[1] for e in entries)
    freed = 0
    for used, size, name, files in sorted(entries):
        if total - freed <= max_bytes:
            break
        if name == keep:
            continue
        for p in files:
            try:
                p.unlink()
            except OSError:
                pass
        freed += size
    return freed


def _load_entry(stem: Path, mmap: bool = True) -> tuple[dict, dict] | None:
    """``(meta, arrays)`` if the entry is complete, else ``None`` (and the remains deleted)."""
    meta_path = stem.with_suffix(".json")
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arrays = {}
        for name, d in meta["arrays"].items():
            p = stem.with_name(f"{stem.name}.{name}.npy")
            if p.stat().st_size != d["nbytes"]:
                raise ValueError(f"{p.name}: {p.stat().st_size} bytes, expected {d['nbytes']}")
            arr = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
            if list(arr.shape) != d["shape"] or str(arr.dtype) != d["dtype"]:
                raise ValueError(f"{p.name}: shape {arr.shape} {arr.dtype}, expected "
                                 f"{d['shape']} {d['dtype']}")
            arrays[name] = arr
        try:
            os.utime(meta_path)  # mark as recently used for pruning
        except OSError:
            pass
        return meta, arrays
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cache entry %s is incomplete or damaged (%s); rebuilding", stem.name, exc)
        for p in stem.parent.glob(f"{stem.name}.*"):
            try:
                p.unlink()
            except OSError:
                pass
        return None


# ------------------------------------------------------------------------------ decoding

_noise_lock = threading.Lock()
_noise_files: dict[tuple[str, int], np.ndarray] = {}


def _load_noise_file(path: str, sr: int) -> np.ndarray:
    """Whole background-noise files, decoded once per process (silence windows share them)."""
    from bnnkws.frontend.audio import load_audio

    with _noise_lock:
        key = (os.path.abspath(path), sr)
        if key not in _noise_files:
            _noise_files[key] = load_audio(path, sr=sr)
        return _noise_files[key]


def generated_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """White or pink (1/f power) noise of unit RMS, float32."""
    white = rng.standard_normal(n)
    if kind == "pink":
        spec = np.fft.rfft(white)
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        white = np.fft.irfft(spec / np.sqrt(f), n)
    white -= white.mean()
    return (white / (np.sqrt(np.mean(white**2)) + 1e-12)).astype(np.float32)


def read_clip(clip: Clip, cfg: FrontendConfig = DEFAULT_FRONTEND,
              max_samples: int | None = None) -> np.ndarray:
    """One clip as float32 at ``cfg.sample_rate``; raises ``ValueError`` naming the problem.

    Silence windows (``clip.source == "_background_noise_"``) are cut from their noise file
    (or generated for ``noise:white``/``noise:pink``, ``start`` being the seed) at ``gain``.
    """
    n1 = cfg.clip_samples
    if clip.path.startswith("noise:"):
        kind = clip.path.split(":", 1)[1]
        return generated_noise(kind, n1, np.random.default_rng(clip.start)) * np.float32(
            0.1 * clip.gain)
    if clip.is_segment:
        full = _load_noise_file(clip.path, cfg.sample_rate)
        y = full[clip.start:clip.start + n1]
        if len(y) < n1:
            y = np.pad(y, (0, n1 - len(y)))
        return (y * np.float32(clip.gain)).astype(np.float32)
    from bnnkws.frontend.audio import load_audio  # raises AudioError naming the problem

    y = load_audio(clip.path, sr=cfg.sample_rate)
    if len(y) == 0:
        raise ValueError("no audio samples")
    if max_samples and len(y) > max_samples:
        s = (len(y) - max_samples) // 2
        y = y[s:s + max_samples]
    return np.asarray(y, dtype=np.float32)


def quantize(y: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 PCM, as the waveform cache and the training shards store it."""
    return np.clip(np.round(y * _INT16), -32768, 32767).astype(np.int16)


def _problem_text(exc: Exception) -> str:
    return str(getattr(exc, "problem", None) or exc).strip().splitlines()[0][:200] or \
        type(exc).__name__


# -------------------------------------------------------------------------------- caches


def load_waveforms(clips, cfg: FrontendConfig = DEFAULT_FRONTEND, cache_dir=None,
                   progress: bool = True, use_cache: bool = True) -> Waveforms:
    """Decode every clip once (cached): int16 at ``cfg.sample_rate``, up to ``MAX_SECONDS``."""
    clips = list(clips)
    max_samples = int(MAX_SECONDS * cfg.sample_rate)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    stem = cache_dir / f"waves-{_key('waves', {'sr': cfg.sample_rate, 'max': max_samples}, clips)}"
    if use_cache:
        entry = _load_entry(stem)
        if entry is not None:
            meta, arr = entry
            return Waveforms(arr["data"], np.asarray(arr["offsets"]), np.asarray(arr["ok"]),
                             [tuple(p) for p in meta["problems"]])

    from tqdm.auto import tqdm

    parts, lengths, ok, problems = [], [], [], []
    for c in tqdm(clips, desc="reading audio", unit="clip", disable=not progress or None,
                  leave=False):
        try:
            y = read_clip(c, cfg, max_samples)
            good = True
        except Exception as exc:  # unreadable files are reported and skipped, never fatal
            problems.append((c.path, _problem_text(exc)))
            y, good = np.zeros(0, np.float32), False
        q = quantize(y)
        parts.append(q)
        lengths.append(len(q))
        ok.append(good)
    data = np.concatenate(parts) if parts else np.zeros(0, np.int16)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    okarr = np.array(ok, dtype=bool)
    for path, prob in problems:
        log.warning("skipping %s: %s", path, prob)
    if use_cache:
        _save_entry(stem, {"data": data, "offsets": offsets, "ok": okarr},
                    {"kind": "waves", "n": len(clips), "sample_rate": cfg.sample_rate,
                     "problems": problems})
    return Waveforms(data, offsets, okarr, problems)


def center_batch(waves: Waveforms, idx, n_samples: int) -> np.ndarray:
    """Clips ``idx`` as a float32 ``(len(idx), n_samples)`` matrix, centred (padded/cropped)."""
    from bnnkws.frontend.audio import pad_or_crop

    out = np.zeros((len(idx), n_samples), np.float32)
    for row, i in enumerate(idx):
        y = waves.get(i)
        if len(y):
            out[row] = pad_or_crop(y, n_samples, crop="center")
    return out


def extract(clips, cfg: FrontendConfig = DEFAULT_FRONTEND, cache_dir=None, *,
            progress: bool = True, return_ok: bool = False, use_cache: bool = True):
    """Log-mel features ``float32 (n, frames, n_mels)`` of the centred 1-s clips (cached).

    Rows of unreadable clips hold the features of digital silence and are logged; pass
    ``return_ok=True`` to get ``(X, ok, problems)`` and drop them (``eval_arrays`` does).
    """
    clips = list(clips)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    stem = cache_dir / f"logmel-{cfg.fingerprint()}-{_key('logmel', cfg.to_dict(), clips)}"
    # Read into memory (not a read-only memmap): callers normalise or slice in place.
    entry = _load_entry(stem, mmap=False) if use_cache else None
    if entry is not None:
        meta, arr = entry
        X, ok, problems = arr["X"], np.asarray(arr["ok"]), [tuple(p) for p in meta["problems"]]
    else:
        from tqdm.auto import tqdm

        from bnnkws.frontend.reference import log_mel_batch

        waves = load_waveforms(clips, cfg, cache_dir, progress, use_cache)
        X = np.empty((len(clips), cfg.num_frames, cfg.n_mels), np.float32)
        step = 256
        with tqdm(total=len(clips), desc="log-mel", unit="clip", leave=False,
                  disable=not progress or None) as bar:
            for s in range(0, len(clips), step):
                idx = range(s, min(s + step, len(clips)))
                X[s:s + len(idx)] = log_mel_batch(center_batch(waves, idx, cfg.clip_samples), cfg)
                bar.update(len(idx))
        ok, problems = waves.ok, waves.problems
        if use_cache:
            _save_entry(stem, {"X": X, "ok": ok},
                        {"kind": "logmel", "n": len(clips), "frontend": cfg.to_dict(),
                         "problems": problems})
    if return_ok:
        return X, ok, problems
    return X


def feature_stats(X) -> tuple[float, float]:
    """Global mean and standard deviation of raw log-mel features (for ``ModelConfig``)."""
    X = np.asarray(X)
    n = X.size
    if n == 0:
        raise ValueError("feature_stats: no features")
    s = s2 = 0.0
    flat = X.reshape(len(X), -1) if X.ndim > 1 else X.reshape(1, -1)
    for i in range(0, len(flat), 512):  # float64 accumulation in chunks: exact enough, small
        block = np.asarray(flat[i:i + 512], dtype=np.float64)
        s += block.sum()
        s2 += np.square(block).sum()
    mean = s / n
    return float(mean), float(np.sqrt(max(s2 / n - mean * mean, 0.0)))
