"""The one frontend parameter set. Every implementation reads it; nothing restates its numbers."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class FrontendConfig:
    """Log-mel frontend parameters (librosa names where librosa has one)."""

    sample_rate: int = 16000
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_fft: int = 512
    n_mels: int = 64
    fmin: float = 60.0
    fmax: float = 7800.0
    # Added before the log so silence maps to a finite floor; chosen large enough that the
    # float32 TFLite layer and the float64 reference agree within 1e-3 in the log domain.
    log_offset: float = 1e-6
    clip_samples: int = 16000  # one second

    def __post_init__(self):
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got {self.fmin}, {self.fmax}")
        if self.clip_samples < self.win_length:
            raise ValueError("clip_samples shorter than one window")

    @property
    def num_frames(self) -> int:
        """Frames per clip without centre padding: 98 for 1 s at 25 ms / 10 ms."""
        return 1 + (self.clip_samples - self.win_length) // self.hop_length

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FrontendConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown frontend parameters: {sorted(unknown)}")
        return cls(**d)

    def fingerprint(self) -> str:
        """Stable hash of the parameters (cache keys, bundle checks)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


DEFAULT_FRONTEND = FrontendConfig()

# How the TFLite-convertible Keras layer computes the DFT (first = default; see keras_layer.py).
# Here, not there, so that command lines can offer the choice without importing TensorFlow.
DFT_MODES = ("fourstep", "rfft", "matmul")
