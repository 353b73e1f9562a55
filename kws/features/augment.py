"""Training-time augmentation, numpy only, vectorised over a batch.

Waveform side (before the frontend): speed perturbation, random crop of long clips, time
shift, random gain, background noise at a random SNR. Feature side: SpecAugment time and
frequency masks.
Each is switched on and off in :class:`AugmentConfig`; evaluation never augments.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from bnnkws.kws.features.cache import generated_noise


@dataclass
class AugmentConfig:
    time_shift: bool = True
    time_shift_ms: float = 100.0  # shift uniformly in [-ms, +ms], zero filled (no wrap-around)
    noise: bool = True
    noise_prob: float = 0.8  # share of clips that get background noise
    snr_db: tuple[float, float] = (5.0, 20.0)  # speech-to-noise ratio in dB, uniform
    # Clips with (almost) no signal (silence) get noise at an absolute level instead of an SNR.
    quiet_noise_dbfs: tuple[float, float] = (-60.0, -20.0)
    gain: bool = True
    gain_db: tuple[float, float] = (-6.0, 6.0)
    spec_augment: bool = True
    time_masks: int = 2
    time_mask_frames: int = 10  # each mask up to this many frames
    freq_masks: int = 2
    freq_mask_bins: int = 8
    # The listener slides a 1-s window over the stream hop by hop, so a word appears at every
    # offset and, entering and leaving, cut off. ``offset_prob`` of speech clips are placed at a
    # uniformly random offset with the whole word (its energy extent) inside the window;
    # ``partial_prob`` are shifted so only ``partial_keep`` of the word's extent stays inside and
    # are relabelled ``_unknown_`` (a half word must not fire). 0 = the plain time shift only.
    offset_prob: float = 0.0
    partial_prob: float = 0.0
    partial_keep: tuple[float, float] = (0.2, 0.6)
    # Share of noise draws that use generated white/pink noise even when recordings exist.
    generated_noise_prob: float = 0.0
    # Share of clips low-passed (after the noise: the channel filters both) at a cutoff
    # uniform in band_limit_hz; see band_limit.
    band_limit_prob: float = 0.0
    band_limit_hz: tuple[float, float] = (3400.0, 7000.0)
    # Share of clips played at a speed factor uniform in speed_range; see speed_perturb.
    speed_prob: float = 0.0
    speed_range: tuple[float, float] = (0.9, 1.1)

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(time_shift=False, noise=False, gain=False, spec_augment=False)

    @property
    def any_waveform(self) -> bool:
        return (self.time_shift or self.noise or self.gain or bool(self.offset_prob)
                or bool(self.partial_prob) or bool(self.band_limit_prob)
                or bool(self.speed_prob))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        d = dict(d)
        for k in ("snr_db", "quiet_noise_dbfs", "gain_db", "partial_keep", "band_limit_hz",
                  "speed_range"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def noise_files(paths) -> list[str]:
    """Audio files of ``paths``: folders are listed (sorted), files taken as they are.
    A missing path or a folder without audio raises ``FileNotFoundError`` naming it."""
    from pathlib import Path

    from bnnkws.kws.data.base import list_audio

    out = []
    for p in paths or []:
        p = Path(p)
        if p.is_dir():
            found = list_audio(p)
            if not found:
                raise FileNotFoundError(f"{p}: no audio files in this folder")
            out += [str(f) for f in found]
        elif p.is_file():
            out.append(str(p))
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


class NoiseBank:
    """Background noise to mix in: the dataset's noise recordings, or generated white/pink."""

    def __init__(self, arrays=None, clip_samples: int = 16000):
        self.clip_samples = clip_samples
        self.arrays = [np.asarray(a, np.float32) for a in (arrays or [])
                       if len(a) >= clip_samples and np.any(a)]
        self.generated = not self.arrays

    @classmethod
    def from_files(cls, paths, cfg, part: tuple[float, float] = (0.0, 0.8)) -> "NoiseBank":
        """Noise files; of long recordings (10 s and more) only the stretch ``part`` (by
        default the first 80%, where training silence windows are cut from). Unreadable or
        all-zero files are skipped."""
        from bnnkws.kws.features.cache import _load_noise_file

        arrays = []
        for p in paths or []:
            try:
                y = _load_noise_file(str(p), cfg.sample_rate)
            except Exception:  # a broken noise file only costs that noise
                continue
            if len(y) >= 10 * cfg.clip_samples:  # long recordings: only their training part
                y = y[int(len(y) * part[0]):int(len(y) * part[1])]
            arrays.append(y)
        return cls(arrays, cfg.clip_samples)

    def sample(self, n: int, rng: np.random.Generator, generated_prob: float = 0.0) -> np.ndarray:
        """``(n, clip_samples)`` unit-RMS noise segments; with recordings, a share
        ``generated_prob`` of them is generated white/pink noise all the same."""
        out = np.empty((n, self.clip_samples), np.float32)
        for i in range(n):
            # rng.random() only when asked for, so older configs draw exactly as before.
            if self.generated or (generated_prob > 0 and rng.random() < generated_prob):
                out[i] = generated_noise("pink" if rng.random() < 0.5 else "white",
                                         self.clip_samples, rng)
                continue
            a = self.arrays[int(rng.integers(len(self.arrays)))]
            s = int(rng.integers(0, len(a) - self.clip_samples + 1))
            seg = a[s:s + self.clip_samples]
            out[i] = seg / (np.sqrt(np.mean(seg.astype(np.float64) ** 2)) + 1e-8)
        return out


def speed_perturb(clips, cfg: AugmentConfig, rng: np.random.Generator,
                  sample_rate: int) -> list:
    """Play ``speed_prob`` of ``clips`` (1-D float arrays) at a speed ``s ~ U(speed_range)``.

    A clip of ``n`` samples is resampled (soxr) from ``sample_rate`` to ``sample_rate / s`` and
    played at ``sample_rate``: ``n / s`` samples, every frequency (pitch and formants) times
    ``s``, as if a speaker with a vocal tract ``1 / s`` as long said it ``s`` times faster
    (speed perturbation, Ko et al., Interspeech 2015): the training set's speakers become new
    speakers. Clips not drawn are returned as they are.
    """
    from bnnkws.frontend.audio import resample

    pick = np.flatnonzero(rng.random(len(clips)) < cfg.speed_prob)
    s = rng.uniform(*cfg.speed_range, size=len(pick))
    out = list(clips)
    for i, f in zip(pick, s):
        if len(out[i]):
            out[i] = resample(out[i], sample_rate, int(round(sample_rate / f)))
    return out


def place(clips, n_samples: int, rng: np.random.Generator | None, max_shift: int = 0,
          ) -> np.ndarray:
    """Clips (1-D float arrays) into a ``(b, n_samples)`` matrix.

    Longer clips are cropped (random window when ``rng`` is given, centred otherwise), shorter
    ones centred, both with the frontend's ``pad_or_crop`` so training and evaluation place
    clips alike; then each is shifted by up to ``max_shift`` samples with zero fill.
    """
    from bnnkws.frontend.audio import pad_or_crop

    out = np.zeros((len(clips), n_samples), np.float32)
    for i, y in enumerate(clips):
        if len(y) == 0:
            continue
        long = len(y) > n_samples and rng is not None
        y = pad_or_crop(y, n_samples, crop="random" if long else "center", rng=rng)
        shift = int(rng.integers(-max_shift, max_shift + 1)) if max_shift and rng is not None else 0
        if shift > 0:
            out[i, shift:] = y[:n_samples - shift]
        elif shift < 0:
            out[i, :shift] = y[-shift:]
        else:
            out[i] = y
    return out


def energy_cdf(Y: np.ndarray, frame: int = 160) -> np.ndarray:
    """``(b, m + 1)`` cumulative share of each row's energy at frame boundaries 0, frame, ...
    (``m = samples // frame``; all-zero rows count as evenly spread)."""
    b, n = Y.shape
    m = n // frame
    e = np.sum(np.square(Y[:, :m * frame].reshape(b, m, frame), dtype=np.float64), axis=2)
    e += 1e-12
    c = np.concatenate([np.zeros((b, 1)), np.cumsum(e, axis=1)], axis=1)
    return c / c[:, -1:]


def _cdf_inverse(cdf: np.ndarray, q: np.ndarray, frame: int) -> np.ndarray:
    """Per row the first frame boundary (in samples) where the energy share reaches q."""
    return np.array([np.searchsorted(c, v) for c, v in zip(cdf, q)], np.int64) * frame


def speech_extent(Y: np.ndarray, frame: int = 160, tail: float = 0.02) -> np.ndarray:
    """``(b, 2)`` start/end samples of each row's word: the span between the ``tail`` and
    ``1 - tail`` quantiles of its energy (frame resolution), so background noise before and
    after the word does not widen it."""
    cdf = energy_cdf(Y, frame)
    b = len(Y)
    s = np.maximum(_cdf_inverse(cdf, np.full(b, tail), frame) - frame, 0)
    e = np.minimum(_cdf_inverse(cdf, np.full(b, 1 - tail), frame), Y.shape[1])
    return np.stack([s, e], axis=1)


def window_shifts(Y: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator,
                  speech: np.ndarray, max_shift: int = 0, frame: int = 160):
    """Per row of ``Y (b, n)`` a shift in samples and whether the row then holds only part of
    its word.

    Rows with ``speech`` False (silence) and rows not drawn for an offset or a cut get the
    plain shift in ``[-max_shift, max_shift]``. An *offset* row moves its word's extent
    ``[s, e)`` (:func:`speech_extent`) anywhere inside ``[0, n]``: shift uniform in
    ``[-s, n - e]``. A *cut* row keeps the share ``k ~ U(partial_keep)`` of its energy inside
    the window, the rest pushed out on a random side: with ``C`` the cumulative energy share,
    a left cut shifts by ``-C^-1(1 - k)``, a right cut by ``n - C^-1(k)``.
    """
    b, n = Y.shape
    shifts = (rng.integers(-max_shift, max_shift + 1, size=b) if max_shift
              else np.zeros(b, np.int64))
    partial = np.zeros(b, bool)
    if not (cfg.offset_prob or cfg.partial_prob):
        return shifts, partial
    cdf = energy_cdf(Y, frame)
    ext = speech_extent(Y, frame)
    u = rng.random(b)
    s, e = ext[:, 0], ext[:, 1]
    partial = speech & (u < cfg.partial_prob)
    offset = speech & ~partial & (u < cfg.partial_prob + cfg.offset_prob)
    lo, hi = -s, n - e
    shifts = np.where(offset, lo + np.floor(rng.random(b) * (hi - lo + 1)).astype(np.int64),
                      shifts)
    k = rng.uniform(*cfg.partial_keep, size=b)
    left = rng.random(b) < 0.5
    cut = np.where(left, -_cdf_inverse(cdf, 1 - k, frame), n - _cdf_inverse(cdf, k, frame))
    shifts = np.where(partial, cut, shifts)
    return shifts, partial


def shift_rows(Y: np.ndarray, shifts) -> np.ndarray:
    """Each row moved by its shift (positive = later), zero filled, no wrap-around."""
    out = np.zeros_like(Y)
    n = Y.shape[1]
    for i, d in enumerate(np.asarray(shifts, np.int64)):
        d = int(d)
        if d >= n or d <= -n:
            continue
        if d > 0:
            out[i, d:] = Y[i, :n - d]
        elif d < 0:
            out[i, :d] = Y[i, -d:]
        else:
            out[i] = Y[i]
    return out


def augment_waveforms(Y: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator,
                      noise: NoiseBank | None = None) -> np.ndarray:
    """Random gain then background noise on a batch ``(b, samples)`` (in place, returned)."""
    b = len(Y)
    if cfg.gain:
        g = 10 ** (rng.uniform(*cfg.gain_db, size=b) / 20)
        Y *= g[:, None].astype(np.float32)
    if cfg.noise and noise is not None:
        mix = rng.random(b) < cfg.noise_prob
        k = int(mix.sum())
        if k:
            rows = np.flatnonzero(mix)
            segs = noise.sample(k, rng, cfg.generated_noise_prob)
            rms = np.sqrt(np.mean(np.square(Y[rows], dtype=np.float64), axis=1))
            snr = rng.uniform(*cfg.snr_db, size=k)
            level = rms / 10 ** (snr / 20)
            quiet = rms < 1e-3
            level[quiet] = 10 ** (rng.uniform(*cfg.quiet_noise_dbfs, size=int(quiet.sum())) / 20)
            Y[rows] += segs * level[:, None].astype(np.float32)
    return Y


BAND_EDGE_HZ = 200.0  # width of the raised-cosine roll-off below each cutoff


def band_gain(n: int, sample_rate: int, cut) -> np.ndarray:
    """``(len(cut), n // 2 + 1)`` zero-phase gains of the real FFT bins of an ``n``-sample clip:
    ``H(f) = 1`` below ``f_c - w``, ``(1 + cos(pi (f - f_c + w) / w)) / 2`` up to ``f_c`` and
    0 above (``w = BAND_EDGE_HZ``), for each cutoff ``f_c`` in ``cut``."""
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    x = (f[None, :] - (np.asarray(cut, np.float64)[:, None] - BAND_EDGE_HZ)) / BAND_EDGE_HZ
    return 0.5 * (1 + np.cos(np.pi * np.clip(x, 0.0, 1.0)))  # 1 at x <= 0, 0 at x >= 1


def band_limit(Y: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator,
               sample_rate: int) -> np.ndarray:
    """Low-pass ``band_limit_prob`` of the rows of ``Y (b, samples)`` (in place, returned).

    Row ``i`` drawn gets cutoff ``f_c ~ U(band_limit_hz)`` and the gain :func:`band_gain` on
    its real FFT: what a narrow-band channel (an 8 kHz recording, a headset) leaves of a 16 kHz
    clip, without the ringing of a brick wall.
    """
    pick = np.flatnonzero(rng.random(len(Y)) < cfg.band_limit_prob)
    if not len(pick):
        return Y
    cut = rng.uniform(*cfg.band_limit_hz, size=len(pick))
    n = Y.shape[1]
    H = band_gain(n, sample_rate, cut)
    Y[pick] = np.fft.irfft(np.fft.rfft(Y[pick].astype(np.float64), axis=1) * H, n=n,
                           axis=1).astype(Y.dtype)
    return Y


def spec_augment(X: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """SpecAugment masks on ``(b, frames, mels)`` log-mel (in place, returned).

    Masked cells take each example's mean: the features are raw log-mel, where 0 is not
    "nothing" but a loud value.
    """
    b, T, F = X.shape
    fill = X.mean(axis=(1, 2))
    for i in range(b):
        for _ in range(cfg.time_masks):
            w = int(rng.integers(0, cfg.time_mask_frames + 1))
            if w:
                t0 = int(rng.integers(0, max(T - w, 0) + 1))
                X[i, t0:t0 + w, :] = fill[i]
        for _ in range(cfg.freq_masks):
            w = int(rng.integers(0, cfg.freq_mask_bins + 1))
            if w:
                f0 = int(rng.integers(0, max(F - w, 0) + 1))
                X[i, :, f0:f0 + w] = fill[i]
    return X
