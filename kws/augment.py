"""Training-time augmentation, numpy only, vectorised over a batch.

Waveform side (before the frontend): random crop of long clips, time shift, random gain,
background noise at a random SNR. Feature side: SpecAugment time and frequency masks.
Each is switched on and off in :class:`AugmentConfig`; evaluation never augments.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .features import generated_noise


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

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(time_shift=False, noise=False, gain=False, spec_augment=False)

    @property
    def any_waveform(self) -> bool:
        return self.time_shift or self.noise or self.gain

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        d = dict(d)
        for k in ("snr_db", "quiet_noise_dbfs", "gain_db"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


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
        from .features import _load_noise_file

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

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, clip_samples)`` unit-RMS noise segments."""
        out = np.empty((n, self.clip_samples), np.float32)
        for i in range(n):
            if self.generated:
                out[i] = generated_noise("pink" if rng.random() < 0.5 else "white",
                                         self.clip_samples, rng)
                continue
            a = self.arrays[int(rng.integers(len(self.arrays)))]
            s = int(rng.integers(0, len(a) - self.clip_samples + 1))
            seg = a[s:s + self.clip_samples]
            out[i] = seg / (np.sqrt(np.mean(seg.astype(np.float64) ** 2)) + 1e-8)
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
            segs = noise.sample(k, rng)
            rms = np.sqrt(np.mean(np.square(Y[rows], dtype=np.float64), axis=1))
            snr = rng.uniform(*cfg.snr_db, size=k)
            level = rms / 10 ** (snr / 20)
            quiet = rms < 1e-3
            level[quiet] = 10 ** (rng.uniform(*cfg.quiet_noise_dbfs, size=int(quiet.sum())) / 20)
            Y[rows] += segs * level[:, None].astype(np.float32)
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
