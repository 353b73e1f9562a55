"""The streaming detection path shared by `kws listen` (microphone or file) and `kws bench-stream`.

audio blocks -> StreamingLogMel -> ring of the last ``num_frames`` (98) log-mel frames
-> Detector.classify(features=...) every hop -> RecognizeCommands -> detections.

Everything downstream of the audio source is driven by *stream time* (samples seen), never by
the wall clock, and hops are placed on frame boundaries independent of how the audio was cut
into blocks. So a file streamed in real time, the same file streamed with ``--fast`` and the same
audio captured from a microphone in any block size give identical detections.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, List, NamedTuple, Optional

import numpy as np

from bnnkws.app.listener.smoothing import RecognizeCommands
from bnnkws.frontend.config import DEFAULT_FRONTEND, FrontendConfig

DEFAULT_HOP_MS = 100.0
LEVEL_FLOOR_DB = -100.0


class FrameRing:
    """The last ``capacity`` feature frames; any ``num_frames`` of them readable as one
    contiguous array without copying.

    Every frame is written twice, at ``i`` and ``i + capacity`` of a buffer twice as long, so
    the window ``[pos - lag - num_frames, pos - lag)`` is always one contiguous slice in time
    order. ``capacity`` beyond ``num_frames`` keeps earlier windows readable (``lag``): the hop
    skipper classifies a hop one hop late.
    """

    def __init__(self, num_frames: int, n_features: int, capacity: Optional[int] = None):
        if num_frames < 1:
            raise ValueError(f"ring needs at least one frame, got {num_frames}")
        self.num_frames = int(num_frames)
        self.capacity = max(self.num_frames, int(capacity or 0))
        self._buf = np.zeros((2 * self.capacity, int(n_features)), dtype=np.float32)
        self._pos = 0  # index of the oldest frame == next write position
        self.total = 0  # frames pushed since reset

    def reset(self) -> None:
        self._buf[:] = 0.0
        self._pos = 0
        self.total = 0

    @property
    def full(self) -> bool:
        return self.total >= self.num_frames

    def push(self, frame: np.ndarray) -> None:
        self._buf[self._pos] = frame
        self._buf[self._pos + self.capacity] = frame
        self._pos = (self._pos + 1) % self.capacity
        self.total += 1

    def window(self, lag: int = 0) -> np.ndarray:
        """The ``num_frames`` frames that ended ``lag`` frames ago, oldest first (a read-only
        view; valid until the next push)."""
        if not 0 <= lag <= self.capacity - self.num_frames:
            raise ValueError(f"lag {lag} outside 0..{self.capacity - self.num_frames} frames")
        start = (self._pos - lag - self.num_frames) % self.capacity
        view = self._buf[start : start + self.num_frames]
        view = view.view()
        view.setflags(write=False)
        return view


class _Outcome(NamedTuple):
    """What one hop gave the smoother: classified, gated or interpolated."""

    probs: np.ndarray
    index: int  # top label
    exit: int  # 0: no stage ran
    entropy: float
    ms: float  # time spent on it (classification or interpolation)
    skipped: bool = False


@dataclass
class Detection:
    """A keyword detection: what `--json` prints, one object per line."""

    time_s: float  # stream time at the end of the second that triggered it
    label: str
    probability: float  # averaged probability over the smoothing window
    exit: int  # exit used by the hop that triggered the detection (1-based; 0 = no stage ran)
    latency_ms: float  # processing time of that hop (frontend share + all stages run)
    # audio that had arrived after time_s when the detection was made: 0 unless the hop skipper
    # had that hop waiting for a successor (one hop per waiting hop, at most --skip-hops)
    delay_ms: float = 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["time_s"] = round(self.time_s, 3)
        d["delay_ms"] = round(self.delay_ms, 1)
        d["probability"] = round(self.probability, 4)
        d["latency_ms"] = round(self.latency_ms, 3)
        return d


@dataclass
class HopResult:
    """One classification of the last second, plus the smoother's verdict after it."""

    time_s: float  # stream time at the end of the classified second
    label: str  # top label of this hop alone
    label_index: int
    probability: float
    exit: int
    entropy: float
    latency_ms: float  # frontend share + classification of this hop
    classify_ms: float
    level_db: float  # RMS level (dBFS) of the audio that arrived since the previous hop
    smoothed_label: str
    smoothed_score: float
    detection: Optional[Detection] = None
    gated: bool = False  # the energy gate spared the network (exit is then 0)
    skipped: bool = False  # interpolated between two idle neighbours by the hop skipper (exit 0)
    probs: Optional[np.ndarray] = None  # all labels' probabilities (what the smoother got)


@dataclass
class ListenSummary:
    """What a stream did, printed when it ends (end of file, --duration, Ctrl-C)."""

    stream_s: float = 0.0
    wall_s: float = 0.0
    hops: int = 0
    detections: List[Detection] = field(default_factory=list)
    latencies_ms: List[float] = field(default_factory=list)
    exits: Counter = field(default_factory=Counter)
    overflows: int = 0
    interrupted: bool = False

    @property
    def gated(self) -> int:
        """Hops the energy gate answered without running the network (counted as exit 0)."""
        return int(self.exits.get(0, 0))

    @property
    def skipped(self) -> int:
        """Hops the hop skipper interpolated without running the network (key -1 of exits)."""
        return int(self.exits.get(-1, 0))

    def add(self, hop: "HopResult") -> None:
        self.hops += 1
        self.latencies_ms.append(hop.latency_ms)
        self.exits[-1 if hop.skipped else hop.exit] += 1
        if hop.detection is not None:
            self.detections.append(hop.detection)

    def shares(self) -> dict:
        """Share of hops per outcome: ``{"skipped": w, "gated": x, "exit1": y, ...}``
        (fractions of all hops)."""
        if not self.hops:
            return {}
        names = {-1: "skipped", 0: "gated"}
        return {names.get(k, f"exit{k}"): v / self.hops for k, v in sorted(self.exits.items())}

    @property
    def mean_latency_ms(self) -> float:
        return float(np.mean(self.latencies_ms)) if self.latencies_ms else float("nan")

    @property
    def p95_latency_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 95)) if self.latencies_ms else float("nan")

    @property
    def processing_s(self) -> float:
        return float(np.sum(self.latencies_ms)) / 1000.0 if self.latencies_ms else 0.0

    @property
    def real_time_factor(self) -> float:
        """Processing time / audio time of the detection path (< 1 keeps up with a microphone)."""
        return self.processing_s / self.stream_s if self.stream_s > 0 else float("nan")

    def to_json(self) -> dict:
        """The cost and outcome of the stream, JSON-ready (`kws listen --json` prints it last)."""
        return {
            "stream_s": round(self.stream_s, 3), "hops": self.hops,
            "detections": len(self.detections),
            "mean_ms_per_hop": (round(self.mean_latency_ms, 4) if self.latencies_ms else None),
            "p95_ms_per_hop": (round(self.p95_latency_ms, 4) if self.latencies_ms else None),
            "real_time_factor": (round(self.real_time_factor, 5) if self.stream_s > 0 else None),
            "gated": self.gated, "skipped": self.skipped,
            "exits": {str(k): v for k, v in sorted(self.exits.items()) if k > 0},
            "shares": {k: round(v, 4) for k, v in self.shares().items()},
            "overflows": self.overflows, "interrupted": self.interrupted,
        }

    def shares_text(self) -> str:
        return ", ".join(f"{k.replace('exit', 'exit ')} {100 * v:.1f}%"
                         for k, v in self.shares().items()) or "none"

    def text(self) -> str:
        lines = [
            f"{'interrupted' if self.interrupted else 'stopped'} after {self.stream_s:.1f} s of audio "
            f"({self.hops} hops, {len(self.detections)} detection(s))",
            f"cost per hop: mean {self.mean_latency_ms:.3f} ms, p95 {self.p95_latency_ms:.2f} ms; "
            f"real-time factor {self.real_time_factor:.4f}",
            f"hops gated or leaving at each exit: {self.shares_text()}",
        ]
        if self.overflows:
            lines.append(f"input overflows: {self.overflows} (audio was dropped; the machine "
                         f"could not keep up or the block size is too small)")
        if self.detections:
            words = Counter(d.label for d in self.detections)
            lines.append("detected: " + ", ".join(f"{w} x{n}" for w, n in words.most_common()))
        return "\n".join(lines)


def _frontend_config(detector) -> FrontendConfig:
    """The frontend the bundle was trained with (falls back to the default parameter set)."""
    for path in ("bundle.frontend", "config.frontend", "bundle.config.frontend", "bundle.model_config.frontend",
                 "model_config.frontend", "frontend"):
        obj = detector
        try:
            for attr in path.split("."):
                obj = getattr(obj, attr)
        except AttributeError:
            continue
        if callable(obj) and not isinstance(obj, type):
            continue
        if isinstance(obj, FrontendConfig):
            return obj
        if isinstance(obj, dict):
            return FrontendConfig.from_dict(obj)
    return DEFAULT_FRONTEND


class StreamingDetector:
    """Audio blocks in, per-hop results and detections out.

    ``detector`` is anything with ``classify(features=(frames, n_mels)) -> Result`` and
    ``labels`` (normally :class:`bnnkws.deploy.runtime.Detector`). A hop is placed every
    ``hop_ms`` of audio once a full window (one second) has arrived.

    ``gate``: an :class:`bnnkws.app.listener.gates.EnergyGate` fed every log-mel frame; a hop whose
    window it calls quiet is not classified (exit 0, ``gated``; the smoother gets ``p(_silence_) =
    1``).
    ``stop``: an extra early-exit rule passed to ``detector.classify(stop=...)`` (e.g.
    :class:`bnnkws.kws.policy.KeywordMassRule`). ``skip``: a
    :class:`bnnkws.app.listener.gates.HopSkip`; after a hop it calls idle, the next
    ``skip.max_skip`` hops wait for the one after them, and
    if that one is idle too the waiting hops are interpolated between their two neighbours
    instead of classified (their windows are still in the ring, so otherwise they are
    classified late; results always come out in time order). ``warmup``: run the frontend and
    every stage once before the stream, so the first hops do not carry one-off costs (librosa
    building the mel filterbank, the interpreters packing their weights) into the per-hop
    latency.
    """

    def __init__(
        self,
        detector,
        smoother: Optional[RecognizeCommands] = None,
        hop_ms: float = DEFAULT_HOP_MS,
        frontend: Optional[FrontendConfig] = None,
        gate=None,
        stop=None,
        skip=None,
        warmup: bool = True,
    ):
        from bnnkws.frontend.streaming import StreamingLogMel

        self.detector = detector
        self.cfg = frontend or _frontend_config(detector)
        self.labels = list(detector.labels)
        self.smoother = smoother or RecognizeCommands(self.labels)
        if list(self.smoother.labels) != self.labels:
            raise ValueError("smoother labels differ from the detector's labels")
        self.frame_ms = 1000.0 * self.cfg.hop_length / self.cfg.sample_rate
        hop_frames = hop_ms / self.frame_ms
        if hop_ms <= 0 or abs(hop_frames - round(hop_frames)) > 1e-6:
            raise ValueError(f"hop {hop_ms:g} ms must be a positive multiple of the "
                             f"{self.frame_ms:g} ms frame hop")
        self.hop_frames = int(round(hop_frames))
        self.hop_ms = float(hop_ms)
        self.frontend = StreamingLogMel(self.cfg)
        held = self.hop_frames * skip.max_skip if skip else 0  # windows the skipper may read late
        self.ring = FrameRing(self.cfg.num_frames, self.cfg.n_mels,
                              capacity=self.cfg.num_frames + held)
        self.gate = gate
        self.stop = stop
        self.skip = skip
        if warmup:
            self._warm_up()
        self.reset()

    def _warm_up(self) -> None:
        self.frontend.push(np.zeros(self.cfg.win_length, dtype=np.float32))
        run_all = getattr(self.detector, "run_all", None)
        if callable(run_all):
            x = np.zeros((self.cfg.num_frames, self.cfg.n_mels), dtype=np.float32)
            for _ in range(2):
                run_all(features=x)

    def reset(self) -> None:
        self.frontend.reset()
        self.ring.reset()
        self.smoother.reset()
        if self.gate is not None:
            self.gate.reset()
        self.samples_seen = 0
        self._sumsq = 0.0
        self._nsq = 0
        self._level = LEVEL_FLOOR_DB
        self._pending = []  # hops waiting for a successor (skipper): (frames, gated, ms, level)
        self._last_probs = None  # probs of the last hop classified or gated
        self._last_idle = False  # whether the skipper called that hop idle

    @property
    def stream_s(self) -> float:
        return self.samples_seen / self.cfg.sample_rate

    def _window_end_s(self, frames_total: int) -> float:
        last_start = (frames_total - 1) * self.cfg.hop_length
        return (last_start + self.cfg.win_length) / self.cfg.sample_rate

    def push(self, chunk) -> List[HopResult]:
        """Feed the next block of 16 kHz mono float audio; returns the hops it completed."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        t0 = time.perf_counter()
        frames = self.frontend.push(chunk)
        frontend_ms = (time.perf_counter() - t0) * 1000.0
        self.samples_seen += chunk.size
        if chunk.size:
            self._sumsq += float(np.dot(chunk, chunk))
            self._nsq += chunk.size
        out: List[HopResult] = []
        if len(frames) == 0:
            return out
        dbs = None
        if self.gate is not None:
            t1 = time.perf_counter()
            dbs = self.gate.frames_db(frames)
            frontend_ms += (time.perf_counter() - t1) * 1000.0
        # The frontend cost of this block, shared out over the frames it completed.
        per_frame_ms = frontend_ms / len(frames)
        pending_ms = 0.0
        for i, frame in enumerate(frames):
            self.ring.push(frame)
            if dbs is not None:
                t1 = time.perf_counter()
                self.gate.push_db(dbs[i])
                pending_ms += (time.perf_counter() - t1) * 1000.0
            pending_ms += per_frame_ms
            total = self.ring.total
            if total < self.ring.num_frames or (total - self.ring.num_frames) % self.hop_frames:
                continue
            out.extend(self._hop(total, pending_ms))
            pending_ms = 0.0
        return out

    def flush(self) -> List[HopResult]:
        """The hops still waiting for a successor at the end of the stream, classified."""
        pending, self._pending = self._pending, []
        return [self._emit(self._classify(g, self.ring.total - f), f, ms, level)
                for f, g, ms, level in pending]

    def adopt(self, other: "StreamingDetector") -> List[HopResult]:
        """Carry on this stream with ``other``'s detector, smoother and gates: the bundle
        changed under a running listener (a word enrolled, forgotten or re-thresholded, see
        ``kws serve``), and ``other`` was built from it with the same options.

        The hops still waiting for the hop skipper are classified first, by the current
        detector, and returned. The frontend, the frame ring and the stream time carry on, so
        no audio is lost and the next hop comes on time; the smoother's window, last detection
        and re-arming, and the energy gate's background floor, carry over too (mapped by label
        name), so adopting an identical detector changes no detection.
        """
        if other.cfg != self.cfg or other.hop_frames != self.hop_frames:
            raise ValueError("adopt: the new detector's frontend or hop differs from this "
                             "stream's")
        if other.ring.capacity > self.ring.capacity:
            raise ValueError("adopt: the new hop skipper waits for more hops than this "
                             "stream's ring holds")
        out = self.flush()
        other.smoother.continue_from(self.smoother)
        if self.gate is not None and other.gate is not None:
            other.gate.continue_from(self.gate)
        self.detector, self.labels, self.smoother = other.detector, other.labels, other.smoother
        self.gate, self.stop, self.skip = other.gate, other.stop, other.skip
        self._last_probs, self._last_idle = None, False  # the next hop is classified
        return out

    def _level_db(self) -> float:
        # Several hops completed by one large block share that block's level.
        if self._nsq:
            ms = self._sumsq / self._nsq
            self._sumsq, self._nsq = 0.0, 0
            self._level = max(LEVEL_FLOOR_DB, 10.0 * math.log10(ms)) if ms > 0 else LEVEL_FLOOR_DB
        return self._level

    def _classify(self, gated: bool, lag: int = 0) -> _Outcome:
        """The hop whose window ended ``lag`` frames ago: gated, or classified."""
        t0 = time.perf_counter()
        if gated:
            probs, idx, exit_k, ent = self.gate.silence_probs, self.gate.silence_index, 0, 0.0
        else:
            x = self.ring.window(lag)
            if self.stop is not None:
                res = self.detector.classify(features=x, stop=self.stop)
            else:
                res = self.detector.classify(features=x)
            probs = np.asarray(res.probs, dtype=np.float64).reshape(-1)
            idx, exit_k, ent = int(res.label_index), int(res.exit), float(res.entropy)
        if self.skip is not None:
            self._last_probs, self._last_idle = probs, self.skip.idle(probs)
        return _Outcome(probs, idx, exit_k, ent, (time.perf_counter() - t0) * 1000.0)

    def _hop(self, frames_total: int, frontend_ms: float) -> List[HopResult]:
        gated = self.gate is not None and self.gate.quiet
        level = self._level_db()
        if self.skip is None:
            return [self._emit(self._classify(gated), frames_total, frontend_ms, level)]
        if self._last_idle and len(self._pending) < self.skip.max_skip:
            # Wait: the next classified hop decides whether this one needs the network.
            self._pending.append((frames_total, gated, frontend_ms, level))
            return []
        if not self._pending:
            return [self._emit(self._classify(gated), frames_total, frontend_ms, level)]
        pending, self._pending = self._pending, []
        before = self._last_probs
        now = self._classify(gated)
        now_idle = self._last_idle
        out = []
        if now_idle:  # idle on both sides: interpolate linearly in time
            for j, (p_frames, _, p_ms, p_level) in enumerate(pending, 1):
                t0 = time.perf_counter()
                w = j / (len(pending) + 1)
                probs = (1.0 - w) * before + w * now.probs
                mid = _Outcome(probs, int(np.argmax(probs)), 0, float("nan"),
                               (time.perf_counter() - t0) * 1000.0, skipped=True)
                out.append(self._emit(mid, p_frames, p_ms, p_level))
        else:  # a word may start in between: classify the waiting windows, still in the ring
            for p_frames, p_gated, p_ms, p_level in pending:
                mid = self._classify(p_gated, self.ring.total - p_frames)
                out.append(self._emit(mid, p_frames, p_ms, p_level))
            self._last_probs, self._last_idle = now.probs, now_idle  # the newest hop decides next
        out.append(self._emit(now, frames_total, frontend_ms, level))
        return out

    def _emit(self, o: _Outcome, frames_total: int, frontend_ms: float,
              level: float) -> HopResult:
        t_s = self._window_end_s(frames_total)
        rec = self.smoother.process(o.probs, t_s * 1000.0)
        latency = frontend_ms + o.ms
        det = None
        if rec.is_new:
            det = Detection(time_s=t_s, label=rec.label, probability=rec.score, exit=o.exit,
                            latency_ms=latency,
                            delay_ms=(self.ring.total - frames_total) * self.frame_ms)
        return HopResult(
            time_s=t_s, label=self.labels[o.index], label_index=o.index,
            probability=float(o.probs[o.index]), exit=o.exit, entropy=o.entropy,
            latency_ms=latency, classify_ms=o.ms, level_db=level, smoothed_label=rec.label,
            smoothed_score=rec.score, detection=det, gated=o.exit == 0 and not o.skipped,
            skipped=o.skipped, probs=o.probs,
        )


def run_stream(
    blocks: Iterable[np.ndarray],
    streamer: StreamingDetector,
    on_hop: Optional[Callable[[HopResult], None]] = None,
    duration_s: Optional[float] = None,
    overflows: Optional[Callable[[], int]] = None,
) -> ListenSummary:
    """Drive ``streamer`` with ``blocks`` until they end, ``duration_s`` of audio, or Ctrl-C.

    Ctrl-C is caught here and reported in the summary (``interrupted``) so callers can always
    print what the stream did.
    """
    summary = ListenSummary()
    start = time.perf_counter()
    limit = None if duration_s is None else int(round(duration_s * streamer.cfg.sample_rate))
    try:
        for block in blocks:
            if limit is not None:
                room = limit - streamer.samples_seen
                if room <= 0:
                    break
                block = np.asarray(block).reshape(-1)[:room]
            for hop in streamer.push(block):
                summary.add(hop)
                if on_hop is not None:
                    on_hop(hop)
            if limit is not None and streamer.samples_seen >= limit:
                break
        for hop in streamer.flush():
            summary.add(hop)
            if on_hop is not None:
                on_hop(hop)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.stream_s = streamer.stream_s
    summary.wall_s = time.perf_counter() - start
    if overflows is not None:
        summary.overflows = int(overflows())
    return summary
