"""Cheap hops for the streaming path: rules that spare the network when a hop is plainly not a
keyword (issue 19). numpy only, so they run in the Pi package as they do here.

The listener classifies the last second every hop. The paper's early exit (the entropy rule)
already stops confident hops at exit 1, but background noise is *uncertain* (between
``_silence_`` and ``_unknown_``), so the entropy rule sends it deep just to end as a label that
can never fire. Two additions, measured against the entropy rule by ``kws bench-stream --gates``:

* :class:`EnergyGate` (``--gate energy``): a voice-activity gate on the log-mel frames the
  streaming frontend computes anyway. A frame is *active* when its energy rises more than
  ``margin_db`` above a tracked background floor; a hop whose whole window (the last second)
  holds no active frame is not classified at all: it costs the frontend only, and the smoother
  receives ``p(_silence_) = 1`` for it.
* :class:`bnnkws.kws.policy.KeywordMassRule` (``--gate mass``): leave an early exit when the
  keyword mass ``1 - p(_silence_) - p(_unknown_)`` is below a threshold.

``energy+mass`` uses both. ``none`` is the paper's entropy rule alone. ``--delta`` keeps its
meaning (the entropy threshold) under every gate: the gates only add ways to stop early.

Background floor (per frame t, energy e_t in dB = 10 log10 of the summed mel power)::

    floor += (fall if e_t < floor else rise) * (e_t - floor)

with ``fall`` = 0.2 (a quiet frame pulls the floor down within a few frames) and ``rise`` =
0.002 (about 5 s time constant: the floor climbs into louder steady noise, but a one-second word
barely moves it). This tracks a low quantile of the frame energy, the level of the background
between words, without storing a history. Steady noise (fan, tap, white/pink noise) stays
under floor + 9 dB and is gated; clattering dishes or a cat cross the margin and simply keep
the network running (the gate only ever skips work, it never adds a detection).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

GATES = ("none", "energy", "mass", "energy+mass")
# The listener's default, chosen by the A/B table of `kws bench-stream --gates` (see the note
# of issue 19): the energy gate kept correct detections within a point of the entropy rule in
# every SNR row and gated most hops of the noise-only stream.
DEFAULT_GATE = "energy"
DEFAULT_MARGIN_DB = 9.0
DEFAULT_RISE = 0.002
DEFAULT_FALL = 0.2
DEFAULT_MASS_THRESHOLD = 0.1
IGNORED = ("_silence_", "_unknown_")
_DB = 10.0 / math.log(10.0)


class GateError(ValueError):
    """A gate name or parameter is invalid (the message names it)."""


def uses_energy(gate: str) -> bool:
    return gate in ("energy", "energy+mass")


def uses_mass(gate: str) -> bool:
    return gate in ("mass", "energy+mass")


def check_gate(gate: str) -> str:
    if gate not in GATES:
        raise GateError(f"gate {gate!r} is not one of {list(GATES)}")
    return gate


class EnergyGate:
    """Voice-activity gate on log-mel frames (natural-log mel power, as the frontend emits).

    ``push(frame)`` after each frame; ``quiet`` is True when none of the last ``window_frames``
    frames was active (the window the next classification would see holds only background).
    ``silence_probs`` is what a gated hop reports: all probability on the first label of
    ``ignore_labels`` the model has.
    """

    def __init__(self, labels: Sequence[str], window_frames: int, margin_db: float = DEFAULT_MARGIN_DB,
                 rise: float = DEFAULT_RISE, fall: float = DEFAULT_FALL,
                 ignore_labels: Sequence[str] = IGNORED):
        if not margin_db >= 0:
            raise GateError(f"energy gate margin must be >= 0 dB, got {margin_db}")
        if not (0 < rise <= 1 and 0 < fall <= 1):
            raise GateError(f"energy gate rise/fall must be in (0, 1], got {rise}, {fall}")
        if int(window_frames) < 1:
            raise GateError(f"energy gate window must be >= 1 frame, got {window_frames}")
        labels = [str(x) for x in labels]
        idx = next((labels.index(x) for x in ignore_labels if x in labels), None)
        if idx is None:
            raise GateError(f"energy gate: the model has none of the labels {list(ignore_labels)} "
                            f"(its labels: {labels}), so a gated hop has no label to report")
        self.silence_index = idx
        self.silence_probs = np.zeros(len(labels), dtype=np.float64)
        self.silence_probs[idx] = 1.0
        self.silence_probs.setflags(write=False)
        self.window_frames = int(window_frames)
        self.margin_db = float(margin_db)
        self.rise = float(rise)
        self.fall = float(fall)
        self.reset()

    def reset(self) -> None:
        self.floor_db: Optional[float] = None
        self.frames = 0
        self._since_active = 0  # frames since the last active frame (0: this one was active)
        self.last_db = float("nan")

    @staticmethod
    def frame_db(frame) -> float:
        """Frame energy in dB: 10 log10 of the summed mel power (log-mel is ln(power + offset))."""
        x = np.asarray(frame, dtype=np.float64)
        m = float(x.max())
        return _DB * (m + math.log(float(np.exp(x - m).sum())))

    def push(self, frame) -> bool:
        """Update with one log-mel frame; returns whether it was active."""
        e = self.frame_db(frame)
        self.last_db = e
        if self.floor_db is None:
            self.floor_db = e
        else:
            a = self.fall if e < self.floor_db else self.rise
            self.floor_db += a * (e - self.floor_db)
        self.frames += 1
        active = e > self.floor_db + self.margin_db
        self._since_active = 0 if active else self._since_active + 1
        return active

    @property
    def quiet(self) -> bool:
        """No active frame in the last ``window_frames`` frames (False until a window is full:
        the very first frame sets the floor and cannot count as background yet)."""
        return self.frames >= self.window_frames and self._since_active >= self.window_frames

    def __repr__(self) -> str:
        return (f"EnergyGate(margin_db={self.margin_db}, rise={self.rise}, fall={self.fall}, "
                f"window_frames={self.window_frames})")
