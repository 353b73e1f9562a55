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

* :class:`HopSkip` (``--gate skip``): consecutive hops overlap by 90 % of their window, so
  between two hops that are both *idle* (keyword mass below ``skip_mass``) the hop in the middle
  is interpolated (linearly between its neighbours' probabilities) instead of classified.
  After an idle hop the next ``max_skip`` hops wait; if the hop after them is idle too they
  are interpolated, else they are classified from the ring, late. So hops are spared only
  inside idle stretches, and a word's onset (a non-idle neighbour) always gets the network.

Components combine with ``+`` (``energy+skip``, ``energy+mass+skip``). ``none`` is the paper's
entropy rule alone. ``--delta`` keeps its
meaning (the entropy threshold) under every gate: the gates only add ways to stop early.

Background floor (per frame t, energy e_t in dB = 10 log10 of the summed mel power)::

    floor += (fall if e_t < floor else rise) * (e_t - floor)

with ``fall`` = 0.2 (a quiet frame pulls the floor down within a few frames) and ``rise`` =
0.002 (about 5 s time constant: the floor climbs into louder steady noise, but a one-second word
barely moves it). This tracks a low quantile of the frame energy, the level of the background
between words, without storing a history. Steady noise (fan, tap, white/pink noise) stays
under floor + margin (6 dB by default) and is gated; clattering dishes or a cat cross the
margin and simply keep the network running (the gate only ever skips work, it never adds a
detection).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from bnnkws.kws.policy import keyword_mass

COMPONENTS = ("energy", "mass", "skip")
# "none" and every combination of the components, in COMPONENTS order ("energy+mass+skip").
GATES = ("none",) + tuple("+".join(c for i, c in enumerate(COMPONENTS) if n >> i & 1)
                          for n in range(1, 2 ** len(COMPONENTS)))
# The listener's default, chosen on the validation split by benchmarks/gate_sweep.py (energy
# margins x mass rule x skip thresholds and run lengths, replayed on recorded hops) and
# confirmed on the test split by `kws bench-stream --gates none,energy,energy+skip` (15-min
# streams, 282 keywords; docs/results.md section 8): energy+skip kept correct detections within
# a point of the entropy rule in every SNR row and cut the cost per hop by 20-30 % in noise
# beside the energy gate alone, and by 40 % on noise only. The mass rule was left out: at
# thresholds that save time it lost 5 points at 0 dB SNR. The margin was re-chosen the same way
# for the model shipped on 2026-12-02: at 9 dB the gate cost it 1.1 points at 5 dB SNR on
# validation (1.1 on test), at 6 dB no more than skipping alone (0.4), for 0.07 ms per hop more.
DEFAULT_GATE = "energy+skip"
DEFAULT_MARGIN_DB = 6.0
DEFAULT_RISE = 0.002
DEFAULT_FALL = 0.2
DEFAULT_MASS_THRESHOLD = 0.1
DEFAULT_SKIP_MASS = 0.5
DEFAULT_MAX_SKIP = 3
IGNORED = ("_silence_", "_unknown_")
_DB = 10.0 / math.log(10.0)


class GateError(ValueError):
    """A gate name or parameter is invalid (the message names it)."""


def uses_energy(gate: str) -> bool:
    return "energy" in gate.split("+")


def uses_mass(gate: str) -> bool:
    return "mass" in gate.split("+")


def uses_skip(gate: str) -> bool:
    return "skip" in gate.split("+")


def check_gate(gate: str) -> str:
    if gate not in GATES:
        raise GateError(f"gate {gate!r} is not one of {list(GATES)}")
    return gate


class HopSkip:
    """Which hops count as idle for hop skipping: keyword mass
    ``1 - p(_silence_) - p(_unknown_) < threshold`` at the exit the hop left from (or its
    gated probabilities); ``max_skip`` hops in a row at most are interpolated between two idle
    ones. See the module docstring for how the listener uses it."""

    def __init__(self, labels: Sequence[str], threshold: float = DEFAULT_SKIP_MASS,
                 max_skip: int = DEFAULT_MAX_SKIP, ignore_labels: Sequence[str] = IGNORED):
        if not 0.0 < float(threshold) <= 1.0:
            raise GateError(f"hop-skip keyword-mass threshold must be in (0, 1], got {threshold}")
        if int(max_skip) != max_skip or max_skip < 1:
            raise GateError(f"hop skip: at most how many hops in a row must be an integer >= 1, "
                            f"got {max_skip}")
        self.max_skip = int(max_skip)
        labels = [str(x) for x in labels]
        self.ignored = np.array([lab in set(ignore_labels) for lab in labels])
        if not self.ignored.any():
            raise GateError(f"hop skip: the model has none of the labels {list(ignore_labels)} "
                            f"(its labels: {labels}), so no hop can be idle")
        self.threshold = float(threshold)

    def idle(self, probs) -> bool:
        return keyword_mass(probs, self.ignored) < self.threshold

    def __repr__(self) -> str:
        return f"HopSkip(threshold={self.threshold}, max_skip={self.max_skip})"


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

    def continue_from(self, other: "EnergyGate") -> None:
        """Take over ``other``'s tracked background and recent activity (the same stream, a
        detector with other labels: see ``StreamingDetector.adopt``)."""
        self.floor_db, self.frames = other.floor_db, other.frames
        self._since_active, self.last_db = other._since_active, other.last_db

    @staticmethod
    def frame_db(frame) -> float:
        """Frame energy in dB: 10 log10 of the summed mel power (log-mel is ln(power + offset))."""
        x = np.asarray(frame, dtype=np.float64)
        m = float(x.max())
        return _DB * (m + math.log(float(np.exp(x - m).sum())))

    @staticmethod
    def frames_db(frames) -> np.ndarray:
        """:meth:`frame_db` of every row of ``(k, n_mels)`` frames, in one pass (a listener
        hop completes 10 frames at once)."""
        x = np.asarray(frames, dtype=np.float64)
        m = x.max(axis=-1, keepdims=True)
        return _DB * (m[..., 0] + np.log(np.exp(x - m).sum(axis=-1)))

    def push(self, frame) -> bool:
        """Update with one log-mel frame; returns whether it was active."""
        return self.push_db(self.frame_db(frame))

    def push_db(self, e: float) -> bool:
        """Update with one frame's energy in dB (:meth:`frames_db`); returns whether it was
        active."""
        e = float(e)
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
