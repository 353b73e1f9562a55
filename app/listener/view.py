"""What `kws listen` shows: a live terminal panel, plain lines, or JSON lines.

* :class:`TerminalView` (stdout is a terminal): a panel redrawn in place with ANSI escapes -
  input level meter, the current top label and probability, the exit it used, per-hop latency,
  overflow count, and a scrolling log of detections with stream time stamps.
* :class:`PlainView` (stdout is a pipe or file): one line per detection on stdout, status on
  stderr, nothing redrawn.
* :class:`JsonView` (``--json``): one JSON object per detection on stdout and nothing else
  there; status goes to stderr, so ``kws listen --json | jq`` works.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import deque
from typing import Callable, Optional, TextIO

from bnnkws.app.listener.listen import Detection, HopResult, ListenSummary

METER_MIN_DB = -60.0  # the meter's left end; speech at a normal distance sits around -30..-15


def format_detection(d: Detection) -> str:
    return (f"{d.time_s:9.2f} s  {d.label:<10s} p={d.probability:.2f}  exit {d.exit}  "
            f"{d.latency_ms:6.2f} ms")


def level_bar(db: float, width: int) -> str:
    frac = (db - METER_MIN_DB) / -METER_MIN_DB
    n = int(round(max(0.0, min(1.0, frac)) * width))
    return "#" * n + "-" * (width - n)


class _Base:
    def __init__(self, out: TextIO = None, err: TextIO = None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def start(self, title: str, lines=()) -> None:
        print(title, file=self.err)
        for line in lines:
            print("  " + line, file=self.err)
        self.err.flush()

    def message(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def hop(self, hop: HopResult) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def finish(self, summary: ListenSummary) -> None:
        print(summary.text(), file=self.err, flush=True)


class JsonView(_Base):
    """Detections as JSON lines on stdout; everything else on stderr, ending with the summary as
    one JSON line ``{"summary": {...}}`` (cost per hop, share of hops gated / per exit)."""

    def hop(self, hop: HopResult) -> None:
        if hop.detection is not None:
            self.out.write(json.dumps(hop.detection.to_json()) + "\n")
            self.out.flush()

    def finish(self, summary: ListenSummary) -> None:
        super().finish(summary)
        print(json.dumps({"summary": summary.to_json()}), file=self.err, flush=True)


class PlainView(_Base):
    """One plain line per detection (for pipes, logs and dumb terminals)."""

    def hop(self, hop: HopResult) -> None:
        if hop.detection is not None:
            self.out.write(format_detection(hop.detection) + "\n")
            self.out.flush()


class TerminalView(_Base):
    """A live panel redrawn in place (ANSI escapes; any VT100-compatible terminal)."""

    HEADER_LINES = 6

    def __init__(self, out: TextIO = None, log_lines: int = 10, fps: float = 20.0,
                 overflows: Optional[Callable[[], int]] = None, num_exits: Optional[int] = None,
                 threshold: Optional[float] = None):
        super().__init__(out, out)
        self.log: deque = deque(maxlen=log_lines)
        self.log_lines = log_lines
        self.min_interval = 1.0 / fps
        self.overflows = overflows or (lambda: 0)
        self.num_exits = num_exits
        self.threshold = threshold
        self._drawn = 0
        self._last_draw = 0.0
        self._title = ""
        self._last: Optional[HopResult] = None
        self._latency_sum = 0.0
        self._hops = 0
        self._gated = 0
        self._skipped = 0
        self._exit_counts: dict = {}
        self._ndet = 0
        self._status = "waiting for the first second of audio..."
        self._last_detection_wall = -1e9

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, title: str, lines=()) -> None:
        self._title = title
        self._info = list(lines)
        self.out.write("\x1b[?25l")  # hide the cursor while redrawing
        self._draw(force=True)

    def message(self, text: str) -> None:
        self._status = text if self._last is None else ""
        self._draw(force=True)

    def hop(self, hop: HopResult) -> None:
        self._last = hop
        self._hops += 1
        self._latency_sum += hop.latency_ms
        self._gated += bool(hop.gated)
        self._skipped += bool(hop.skipped)
        if hop.exit > 0:
            self._exit_counts[hop.exit] = self._exit_counts.get(hop.exit, 0) + 1
        if hop.detection is not None:
            self.log.append(hop.detection)
            self._ndet += 1
            self._last_detection_wall = time.monotonic()
            self._status = ""
        self._draw(force=hop.detection is not None)

    def finish(self, summary: ListenSummary) -> None:
        self._status = "stopped"
        self._draw(force=True)
        self.out.write("\x1b[?25h")  # cursor back
        self.out.write(summary.text() + "\n")
        self.out.flush()

    # -- drawing -----------------------------------------------------------------------------
    def _lines(self, width: int) -> list:
        h = self._last
        lines = [self._title]
        lines += ["  " + x for x in self._info]
        meter_w = max(10, min(40, width - 40))
        if h is None:
            lines.append(f"level  [{level_bar(-200, meter_w)}]")
            lines.append(f"now    {self._status}")
            lines.append("")
        else:
            flash = time.monotonic() - self._last_detection_wall < 1.0
            exits = ("gated" if h.gated else "skipped" if h.skipped else
                     f"exit {h.exit}" + (f"/{self.num_exits}" if self.num_exits else ""))
            lines.append(f"level  [{level_bar(h.level_db, meter_w)}] {h.level_db:6.1f} dBFS   "
                         f"overflows {self.overflows()}")
            lines.append(f"now    {h.label:<10s} p={h.probability:.2f}  {exits:<9s} "
                         f"latency {h.latency_ms:6.2f} ms (mean {self._latency_sum / self._hops:.2f})")
            smooth = f"avg    {h.smoothed_label:<10s} p={h.smoothed_score:.2f}"
            if self.threshold is not None:
                smooth += f"  (fires above {self.threshold:.2f})"
            lines.append(smooth)
            lines.append("cost   " + self.cost_text())
            lines.append(f"time   {h.time_s:8.1f} s   hops {self._hops}   "
                         f"detections {self._ndet}"
                         + (f"   {self._status}" if self._status else ""))
            if flash and self.log:
                lines[-1] += f"   >>> {self.log[-1].label.upper()} <<<"
        lines.append("-- detections " + "-" * max(0, min(width, 70) - 14))
        log = list(self.log)
        for i in range(self.log_lines):
            lines.append(format_detection(log[-1 - i]) if i < len(log) else "")
        return lines

    def cost_text(self) -> str:
        """Mean ms per hop and the share of hops skipped / gated / leaving at each exit so far."""
        if not self._hops:
            return ""
        n = self._hops
        parts = [f"{self._latency_sum / n:.2f} ms/hop"]
        if self._skipped:
            parts.append(f"skipped {100 * self._skipped / n:.0f}%")
        if self._gated:
            parts.append(f"gated {100 * self._gated / n:.0f}%")
        parts += [f"e{k} {100 * v / n:.0f}%" for k, v in sorted(self._exit_counts.items())]
        return "  ".join(parts)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        size = shutil.get_terminal_size((80, 24))
        width = max(20, size.columns - 1)  # never wrap: wrapped lines break the cursor arithmetic
        lines = [ln[:width] for ln in self._lines(width)]
        lines = lines[: max(1, size.lines - 1)]
        buf = []
        if self._drawn:
            buf.append(f"\x1b[{self._drawn}F")  # back to the first line of the panel
        for ln in lines:
            buf.append("\x1b[2K" + ln + "\n")
        for _ in range(self._drawn - len(lines)):  # panel shrank (terminal resized)
            buf.append("\x1b[2K\n")
        self._drawn = max(len(lines), self._drawn)
        self.out.write("".join(buf))
        self.out.flush()


def make_view(json_mode: bool = False, out: TextIO = None, **terminal_kwargs):
    """JSON view for ``--json``; the live panel on a terminal; plain lines otherwise."""
    out = out or sys.stdout
    if json_mode:
        return JsonView(out)
    is_tty = hasattr(out, "isatty") and out.isatty() and os.environ.get("TERM", "") != "dumb"
    if is_tty:
        return TerminalView(out, **terminal_kwargs)
    return PlainView(out)
