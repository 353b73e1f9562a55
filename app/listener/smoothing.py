"""Turn a stream of per-hop class probabilities into discrete keyword detections.

Modelled on TensorFlow's ``speech_commands/recognize_commands.py`` (``RecognizeCommands``):

* the probabilities of the results inside the last ``average_window_ms`` are averaged;
* no decision is made while the window holds fewer than ``minimum_count`` results or spans less
  than a quarter of the window (start of stream, or after a stall of the audio source);
* the averaged top label fires when its score exceeds ``detection_threshold`` and at least
  ``suppression_ms`` have passed since the previous detection.

Two deliberate differences from the TensorFlow class, both because users asked for them there:

* ``_silence_`` and ``_unknown_`` (``ignore_labels``) never fire. They still *win* the average,
  which matters for the next point.
* A label that fired is *re-armed* only once it stops being the top label (another label,
  silence or unknown takes the lead) or its averaged score falls below half the threshold. TensorFlow
  either refuses the same word twice in a row (Python version: "yes ... yes" gives one detection)
  or fires again as soon as suppression ends (C++ version: a long "yeees" gives two). Re-arming
  gives one detection per utterance and still catches a repeated word.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

IGNORE_LABELS = ("_silence_", "_unknown_")

# Defaults chosen with a sweep on `kws bench-stream` (100 ms hop, 5 min of sc_v2 test clips, a
# QuickNet at 87% clip accuracy): window 300-1000 ms x threshold 0.4-0.8 x min count 2-3. Half a
# second of averaging (5 results) at 0.6 kept wrong detections under 9% and false accepts under
# 50/h at 64% correct; lower thresholds gained a few points of recall for twice the false
# accepts. Suppression 1.5 s (TensorFlow's): a word stays in the 1 s window for about that long.
DEFAULT_AVERAGE_WINDOW_MS = 500.0
DEFAULT_THRESHOLD = 0.6
DEFAULT_MIN_COUNT = 3
DEFAULT_SUPPRESSION_MS = 1500.0


@dataclass
class Recognition:
    """The smoother's verdict after one result.

    ``label``/``score`` are the current averaged top label and its averaged probability (the
    previous top label and 0.0 while too few results are in the window); ``is_new`` is True
    exactly when this result triggers a detection.
    """

    label: str
    label_index: int
    score: float
    is_new: bool
    time_ms: float


class RecognizeCommands:
    """Average, threshold, count and suppress per-hop results into detections.

    ``process(probs, time_ms)`` must be fed results in non-decreasing time order (stream time,
    not wall-clock time, so a file streamed with ``--fast`` gives the same detections as in real
    time).
    """

    def __init__(
        self,
        labels: Sequence[str],
        average_window_ms: float = DEFAULT_AVERAGE_WINDOW_MS,
        detection_threshold: float = DEFAULT_THRESHOLD,
        minimum_count: int = DEFAULT_MIN_COUNT,
        suppression_ms: float = DEFAULT_SUPPRESSION_MS,
        ignore_labels: Iterable[str] = IGNORE_LABELS,
        rearm_fraction: float = 0.5,
        label_thresholds: Optional[dict] = None,
    ):
        self.labels = [str(x) for x in labels]
        if len(self.labels) < 2:
            raise ValueError(f"need at least 2 labels, got {self.labels}")
        if not average_window_ms > 0:
            raise ValueError(f"average window must be > 0 ms, got {average_window_ms}")
        if not 0.0 <= detection_threshold <= 1.0:
            raise ValueError(f"detection threshold must be in [0, 1], got {detection_threshold}")
        if int(minimum_count) < 1:
            raise ValueError(f"minimum count must be >= 1, got {minimum_count}")
        if suppression_ms < 0:
            raise ValueError(f"suppression must be >= 0 ms, got {suppression_ms}")
        self.average_window_ms = float(average_window_ms)
        self.detection_threshold = float(detection_threshold)
        self.minimum_count = int(minimum_count)
        self.suppression_ms = float(suppression_ms)
        self.ignore = frozenset(ignore_labels)
        self.rearm_fraction = float(rearm_fraction)
        # Per-label thresholds (enrolled words calibrate their own, see
        # kws.operating_point); every other label uses detection_threshold.
        self.label_thresholds = {str(k): float(v) for k, v in (label_thresholds or {}).items()}
        for k, v in self.label_thresholds.items():
            if k not in self.labels:
                raise ValueError(f"threshold for {k!r}, which is not one of the labels")
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"threshold for {k!r} must be in [0, 1], got {v}")
        self._thresholds = np.array([self.label_thresholds.get(lab, self.detection_threshold)
                                     for lab in self.labels])
        self._ignored_index = np.array([lab in self.ignore for lab in self.labels])
        if self._ignored_index.all():
            raise ValueError(f"every label is ignored ({sorted(self.ignore)}): nothing could fire")
        self.reset()

    def reset(self) -> None:
        self._results: deque = deque()  # (time_ms, probs)
        self._top_index = 0
        self._last_fire_ms = -np.inf
        self._armed_block: Optional[int] = None  # label index that fired and is not re-armed yet

    def continue_from(self, other: "RecognizeCommands") -> None:
        """Take over ``other``'s place in a stream: the results in its window, its last
        detection and the label waiting to be re-armed, mapped by label name. The labels may
        differ (a word enrolled or forgotten while listening): a label ``other`` did not have
        scores 0 in its results."""
        src = np.array([other.labels.index(lab) if lab in other.labels else -1
                        for lab in self.labels])
        known = src >= 0

        def index(i: Optional[int]) -> Optional[int]:
            lab = other.labels[i] if i is not None else None
            return self.labels.index(lab) if lab in self.labels else None

        self._results = deque((t, np.where(known, p[np.maximum(src, 0)], 0.0))
                              for t, p in other._results)
        self._top_index = index(other._top_index) or 0
        self._last_fire_ms = other._last_fire_ms
        self._armed_block = index(other._armed_block)

    def process(self, probs, time_ms: float) -> Recognition:
        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        if probs.shape[0] != len(self.labels):
            raise ValueError(
                f"result has {probs.shape[0]} scores but the smoother has {len(self.labels)} labels")
        time_ms = float(time_ms)
        if self._results and time_ms < self._results[-1][0]:
            raise ValueError(
                f"results must arrive in time order: {time_ms} ms after {self._results[-1][0]} ms")
        self._results.append((time_ms, probs))
        # Keep results whose time lies within (time - window, time]: with a 100 ms hop and a 500 ms
        # window that is 5 results, as many as the window can hold.
        limit = time_ms - self.average_window_ms
        while self._results[0][0] <= limit:
            self._results.popleft()

        n = len(self._results)
        span = time_ms - self._results[0][0]
        if n < self.minimum_count or span < self.average_window_ms / 4:
            return Recognition(self.labels[self._top_index], self._top_index, 0.0, False, time_ms)

        # Summed afresh each time (a handful of rows): a running sum would drift over hours.
        avg = np.mean([p for _, p in self._results], axis=0)
        top = int(np.argmax(avg))
        score = float(avg[top])
        self._top_index = top
        confident = score > self._thresholds[top]
        # Re-arm a label once another label leads or its score has clearly dropped (half the
        # threshold: a score wobbling around the threshold must not fire the same word twice).
        if self._armed_block is not None and (
                top != self._armed_block
                or score < self.rearm_fraction * self._thresholds[self._armed_block]):
            self._armed_block = None
        fire = (
            confident
            and not self._ignored_index[top]
            and top != self._armed_block
            and time_ms - self._last_fire_ms >= self.suppression_ms
        )
        if fire:
            self._last_fire_ms = time_ms
            self._armed_block = top
        return Recognition(self.labels[top], top, score, fire, time_ms)
