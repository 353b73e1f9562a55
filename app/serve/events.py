"""The hub between the listener thread and the pages: what happened, kept and pushed.

The listener thread :meth:`Hub.post`\\ s events (thread-safe); the hub runs them on the event
loop, keeps the last minute of hops, the recent detections, the cost per hop and the
listener's status, and puts every event on the queue of each connected page (server-sent
events, :func:`sse`). A page that connects gets :meth:`Hub.snapshot` first, so it draws the
last minute at once and then follows live. Event kinds:

``hop`` (:func:`hop_event`), ``detection`` (``Detection.to_json()``), ``stats``
(:meth:`CostMeter.to_json`, once per second of stream), ``status`` (``state``: starting,
listening, ended, error; ``message``), ``words`` (the bundle's words, after any change),
``info`` (bundle, source and settings, after a reload).
"""
from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Optional, Sequence

import numpy as np

IGNORED = ("_silence_", "_unknown_")  # labels that never fire (the smoother's own rule)
HISTORY_S = 60.0
MAX_DETECTIONS = 200
QUEUE_SIZE = 3000  # events a slow page may fall behind (5 minutes of hops) before it is dropped
STATS_EVERY = 10  # hops between two stats events (one second at the default 100 ms hop)


def keyword_index(labels: Sequence[str]) -> np.ndarray:
    """Indices of the labels that can fire (not ``_silence_``/``_unknown_``)."""
    return np.array([i for i, lab in enumerate(labels) if lab not in IGNORED], np.int64)


def hop_event(hop, labels: Sequence[str], words: Optional[np.ndarray] = None) -> dict:
    """One hop for the page: ``t`` stream time (s); ``word``/``kw`` the most probable word that
    can fire and its probability in this hop alone; ``label``/``p`` the hop's top label;
    ``exit`` (0: no stage ran), ``gated``, ``skipped``; ``ms`` its cost (frontend share +
    stages); ``db`` input level; ``avg``/``avg_label`` the smoother's average (what fires)."""
    words = keyword_index(labels) if words is None else words
    kw, word = 0.0, ""
    if hop.probs is not None and len(words):
        p = np.asarray(hop.probs, np.float64)[words]
        j = int(np.argmax(p))
        kw, word = float(p[j]), str(labels[int(words[j])])
    return {"t": round(float(hop.time_s), 3), "word": word, "kw": round(kw, 4),
            "label": hop.label, "p": round(float(hop.probability), 4), "exit": int(hop.exit),
            "gated": bool(hop.gated), "skipped": bool(hop.skipped),
            "ms": round(float(hop.latency_ms), 3), "db": round(float(hop.level_db), 1),
            "avg": round(float(hop.smoothed_score), 4), "avg_label": hop.smoothed_label}


class CostMeter:
    """Cost per hop and real-time factor over the last ``window_s`` seconds of stream, and the
    share of hops gated, skipped or leaving at each exit there; totals since the start."""

    def __init__(self, hop_ms: float, window_s: float = HISTORY_S):
        self.hop_s = float(hop_ms) / 1000.0
        self.window = deque(maxlen=max(1, int(round(window_s / self.hop_s))))
        self.total_hops = 0
        self.total_ms = 0.0
        self.stream_s = 0.0

    def add(self, hop: dict) -> None:
        kind = "skipped" if hop["skipped"] else "gated" if hop["gated"] else f"exit{hop['exit']}"
        self.window.append((hop["ms"], kind))
        self.total_hops += 1
        self.total_ms += hop["ms"]
        self.stream_s = max(self.stream_s, hop["t"])

    def to_json(self) -> dict:
        n = len(self.window)
        if not n:
            return {"hops": 0, "total_hops": 0}
        ms = np.array([m for m, _ in self.window])
        kinds: dict = {}
        for _, k in self.window:
            kinds[k] = kinds.get(k, 0) + 1
        order = sorted(kinds, key=lambda k: (k != "skipped", k != "gated", k))
        return {"window_s": round(n * self.hop_s, 1), "hops": n,
                "mean_ms": round(float(ms.mean()), 3),
                "p95_ms": round(float(np.percentile(ms, 95)), 3),
                "rtf": round(float(ms.sum()) / 1000.0 / (n * self.hop_s), 5),
                "shares": {k: round(kinds[k] / n, 4) for k in order},
                "total_hops": self.total_hops, "stream_s": round(self.stream_s, 2),
                "total_mean_ms": round(self.total_ms / self.total_hops, 3)}


def sse(kind: str, data) -> bytes:
    """One server-sent event."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Subscription:
    """One connected page: its queue of encoded events; ``dropped`` once it fell too far
    behind (the page reconnects and starts again from a snapshot)."""

    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.dropped = False


class Hub:
    """State and fan-out of the listener's events (see the module docstring).

    Everything but :meth:`post` runs on the event loop given to :meth:`bind`, so the state
    needs no lock.
    """

    def __init__(self, hop_ms: float, history_s: float = HISTORY_S,
                 max_detections: int = MAX_DETECTIONS):
        self.hops: deque = deque(maxlen=max(1, int(round(history_s * 1000.0 / hop_ms))) + 1)
        self.detections: deque = deque(maxlen=max_detections)
        self.cost = CostMeter(hop_ms, history_s)
        self.status = {"state": "starting", "message": "loading the bundle"}
        self.info: dict = {}
        self.words: dict = {}
        self._subs: set = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def post(self, kind: str, data) -> None:
        """From any thread: publish an event on the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self.publish, kind, data)
        except RuntimeError:  # the loop closed in between (shutting down)
            pass

    def publish(self, kind: str, data) -> None:
        """On the loop: update the state, then send the event to every page."""
        if kind == "hop":
            self.hops.append(data)
            self.cost.add(data)
        elif kind == "detection":
            self.detections.append(data)
        elif kind == "status":
            self.status = dict(data)
        elif kind == "words":
            self.words = dict(data)
        elif kind == "info":
            self.info = dict(data)
        self._send(sse(kind, data))
        if kind == "hop" and self.cost.total_hops % STATS_EVERY == 0:
            self._send(sse("stats", self.cost.to_json()))

    def _send(self, msg: bytes) -> None:
        for sub in list(self._subs):
            try:
                sub.queue.put_nowait(msg)
            except asyncio.QueueFull:
                sub.dropped = True
                self._subs.discard(sub)

    def snapshot(self) -> dict:
        return {"info": self.info, "status": self.status, "words": self.words,
                "hops": list(self.hops), "detections": list(self.detections),
                "stats": self.cost.to_json()}

    def subscribe(self) -> Subscription:
        sub = Subscription()
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def close(self) -> None:
        """End every page's stream (server shutting down)."""
        self.closed = True
        for sub in list(self._subs):
            sub.dropped = True
            try:
                sub.queue.put_nowait(b"")
            except asyncio.QueueFull:
                pass
        self._subs.clear()
