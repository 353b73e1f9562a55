"""The listener of `kws serve`: the `kws listen` path in a thread, publishing to the hub.

The streaming detector is built by the same function as `kws listen`
(:func:`bnnkws.app.commands.listen.build_streamer`, from the same detection options) and fed
by the same sources (:func:`bnnkws.app.listener.sources.open_source`); hops and detections go
to :class:`bnnkws.app.serve.events.Hub` instead of the terminal. It is driven by a plain
``push``/``flush`` loop rather than :func:`bnnkws.app.listener.listen.run_stream`, whose
summary keeps every hop's latency for the report at the end of a stream: a console runs for
weeks, and the hub's :class:`~bnnkws.app.serve.events.CostMeter` keeps the last minute.

When the bundle changes (a word enrolled, forgotten or re-thresholded, from the page or by
`kws enroll` in a shell), :meth:`Listener.reload` builds a new streaming detector from it, off
the audio thread, and the audio thread adopts it between two blocks
(:meth:`StreamingDetector.adopt`): the frontend, the last second of frames and the stream time
carry on, so no audio is lost and no restart is needed.
"""
from __future__ import annotations

import sys
import threading
import traceback
from pathlib import Path
from typing import Optional

from bnnkws.app.serve.events import Hub, hop_event, keyword_index


class Listener:
    """``args``: the `kws listen` options (detection options, ``input``, ``device``,
    ``block_ms``); ``loop``: replay ``--input`` from its start when it ends."""

    def __init__(self, bundle_path, args, hub: Hub, loop: bool = False):
        self.bundle_path = Path(bundle_path)
        self.args = args
        self.hub = hub
        self.loop = bool(loop)
        self.detector = None
        self.streamer = None
        self.source = None
        self.thread: Optional[threading.Thread] = None
        self._next = None  # a streamer built from the changed bundle, adopted between blocks
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._words = None

    # -- set-up (caller's thread: errors reach the command line) ------------------------------
    def load(self) -> None:
        """Build the detector and streamer from the bundle (CLIError when it cannot be used)."""
        from bnnkws.app.commands.listen import build_streamer

        self.detector, self.streamer = build_streamer(self.bundle_path, self.args)
        self._words = keyword_index(self.streamer.labels)

    def open(self) -> None:
        """Open the audio source: the microphone starts here, so a missing one fails at
        start-up with the same message as `kws listen`."""
        from bnnkws.app.listener.sources import open_source

        a = self.args
        self.source = open_source(a.input, device=a.device, fast=False,
                                  sample_rate=self.streamer.cfg.sample_rate, block_ms=a.block_ms)
        self.source.__enter__()

    def describe(self) -> str:
        text = self.source.describe() if self.source is not None else "no source"
        return text + (", looped" if self.loop and self.args.input else "")

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="kws-listener", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout)

    # -- reloads (any thread) -----------------------------------------------------------------
    def reload(self) -> None:
        """Build a streaming detector from the bundle as it is now; the audio thread adopts it
        before its next block (or at once when the stream has ended)."""
        from bnnkws.app.commands.listen import build_streamer

        detector, streamer = build_streamer(self.bundle_path, self.args)
        with self._lock:
            running = self.thread is not None and self.thread.is_alive()
            if running:
                self._next = (detector, streamer)
            else:
                self.detector, self.streamer = detector, streamer
                self._words = keyword_index(streamer.labels)

    def _adopt_pending(self) -> None:
        with self._lock:
            nxt, self._next = self._next, None
        if nxt is None:
            return
        old_labels, old_words = list(self.streamer.labels), self._words
        waiting = self.streamer.adopt(nxt[1])
        for hop in waiting:  # classified by the old bundle's detector: its labels
            self._publish(hop, old_labels, old_words)
        self.detector = nxt[0]
        self._words = keyword_index(self.streamer.labels)

    # -- the audio thread ---------------------------------------------------------------------
    def _blocks(self):
        first, overflows = True, 0
        while True:
            for block in self.source:
                if self._stop.is_set():
                    return
                if first or self.source.overflows != overflows:
                    overflows = self.source.overflows
                    lost = (f"; {overflows} input overflow(s): audio was dropped, the machine "
                            f"did not keep up" if overflows else "")
                    self.hub.post("status", {"state": "listening",
                                             "message": f"listening to {self.describe()}{lost}"})
                    first = False
                self._adopt_pending()
                yield block
            if not (self.loop and self.args.input) or self._stop.is_set():
                return

    def _publish(self, hop, labels=None, words=None) -> None:
        labels = self.streamer.labels if labels is None else labels
        self.hub.post("hop", hop_event(hop, labels, self._words if words is None else words))
        if hop.detection is not None:
            from bnnkws.app.listener.view import format_detection

            self.hub.post("detection", hop.detection.to_json())
            print(format_detection(hop.detection), flush=True)

    def _run(self) -> None:
        from bnnkws.app.listener.sources import SourceError

        try:
            for block in self._blocks():
                for hop in self.streamer.push(block):
                    self._publish(hop)
            for hop in self.streamer.flush():
                self._publish(hop)
            if not self._stop.is_set():
                self.hub.post("status", {"state": "ended",
                                         "message": f"the input ended after "
                                                    f"{self.streamer.stream_s:.1f} s of audio"})
        except SourceError as e:
            self.hub.post("status", {"state": "error", "message": str(e)})
            print(f"kws serve: listener stopped: {e}", file=sys.stderr, flush=True)
        except Exception as e:  # noqa: BLE001 - the page must say why the listener stopped
            traceback.print_exc()
            self.hub.post("status", {"state": "error", "message": f"listener failed: {e}"})
        finally:
            try:
                self.source.close()
            except Exception:  # noqa: BLE001 - closing a broken device must not hide the cause
                pass
