"""Streaming log-mel: feed chunks of any size, get exactly the batch reference's frames.

The extractor keeps at most ``win_length - 1`` leftover samples between calls (the start of the
next, still incomplete frame), so its memory is bounded whatever the stream length. Each completed
frame goes through :func:`bnnkws.frontend.reference.frames_to_log_mel`, the same per-frame code
the batch reference uses, so the two agree to float rounding for every chunking.
"""
from __future__ import annotations

import numpy as np

from .config import DEFAULT_FRONTEND, FrontendConfig
from .reference import as_float_audio, frame_signal, frames_to_log_mel

__all__ = ["StreamingLogMel"]


class StreamingLogMel:
    """Incremental log-mel.

    >>> s = StreamingLogMel()
    >>> frames = [s.push(block) for block in blocks]   # each (k, n_mels), k >= 0
    >>> np.concatenate(frames)                         # == reference.log_mel(np.concatenate(blocks))
    """

    def __init__(self, cfg: FrontendConfig = DEFAULT_FRONTEND):
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        """Forget buffered samples and counters (start of a new stream)."""
        self._buf = np.zeros(0, dtype=np.float64)
        self.samples_seen = 0
        self.frames_emitted = 0
        self.max_buffered = 0  # largest internal buffer so far, in samples (for tests/diagnostics)

    @property
    def buffered(self) -> int:
        """Samples held back for the next frame (always < win_length)."""
        return int(self._buf.shape[0])

    def push(self, chunk) -> np.ndarray:
        """Add samples; return the float32 ``(k, n_mels)`` frames they complete (k may be 0)."""
        chunk = as_float_audio(chunk, name="audio chunk")
        if chunk.ndim != 1:
            chunk = np.squeeze(chunk)
            if chunk.ndim != 1:
                raise ValueError(f"push expects mono samples (n,), got shape {chunk.shape}")
        cfg = self.cfg
        buf = np.concatenate([self._buf, chunk]) if self._buf.size else chunk.astype(np.float64)
        self.max_buffered = max(self.max_buffered, buf.shape[0])
        self.samples_seen += chunk.shape[0]
        frames = frame_signal(buf, cfg)
        k = frames.shape[0]
        out = frames_to_log_mel(frames, cfg) if k else np.zeros((0, cfg.n_mels), np.float32)
        # Keep only the samples later frames still need; copy so the caller's array is not pinned.
        self._buf = np.array(buf[k * cfg.hop_length :], dtype=np.float64)
        self.frames_emitted += k
        return out
