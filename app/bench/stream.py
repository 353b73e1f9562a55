"""Streaming accuracy: a long synthetic stream with ground truth, through the live detection path.

The counterpart of TensorFlow's ``generate_streaming_test_wav.py`` + ``test_streaming_accuracy``:

* :func:`build_stream` lays real test-split keyword clips (and some ``_unknown_`` words as
  distractors) end to end, separated by random gaps, over a continuous bed of the dataset's
  silence/background noise, and records where every clip sits;
* the stream goes through :func:`bnnkws.app.listener.listen.run_stream` - the same frontend,
  ring buffer, runtime and smoother as ``kws listen`` - as fast as the machine allows;
* :func:`match_detections` scores the detections against the ground truth the way
  ``test_streaming_accuracy`` does: a detection whose time is within ``tolerance_ms`` of a clip's
  ground-truth time matches that clip (correct if the label agrees, wrong otherwise); a keyword
  no detection matched is missed; a detection near no keyword is a false detection.

Ground-truth time is the *end* of the one-second clip, and a detection's time is the end of the
second it classified, so a detection lands at ground truth + (smoothing delay) and the default
tolerance of 750 ms (TensorFlow's) absorbs the averaging window.

Counting beyond TensorFlow's: detections on an ``_unknown_`` distractor and repeated detections of
one keyword count as false detections (each is a spurious trigger a user would see), so the false
accepts per hour include them.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

DEFAULT_TOLERANCE_MS = 750.0
IGNORED = ("_silence_", "_unknown_")


@dataclass
class Event:
    """A clip placed in the stream. ``time_s`` (clip end) is what detections are matched to."""

    label: str
    start_s: float
    end_s: float
    path: str
    keyword: bool  # False for an _unknown_ distractor

    @property
    def time_s(self) -> float:
        return self.end_s


@dataclass
class Stream:
    audio: np.ndarray
    sample_rate: int
    events: List[Event]
    words: Optional[np.ndarray] = None  # the clips alone, without the bed (for noise mixing)
    keyword_rms: Optional[float] = None  # RMS over the keyword clips' samples (the SNR reference)
    bed_rms: Optional[float] = None  # RMS of the bed over the whole stream (None: no bed)

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / self.sample_rate

    @property
    def keywords(self) -> List[Event]:
        return [e for e in self.events if e.keyword]

    @property
    def bed_snr_db(self) -> Optional[float]:
        """The keywords' level over the bed the stream was built on (the dataset's
        ``_silence_`` clips), ``20 log10(keyword_rms / bed_rms)``, on the same basis
        as the SNR rows; None without a bed (``bed_gain`` 0, digital silence between words)."""
        if not self.keyword_rms or not self.bed_rms:
            return None
        return 20.0 * math.log10(self.keyword_rms / self.bed_rms)

    def labels_text(self) -> str:
        """TensorFlow's ground-truth file format: ``label, time_ms`` per line."""
        return "".join(f"{e.label}, {e.time_s * 1000:.0f}\n" for e in self.events)


def _clip_audio(clip, sr: int, length: int) -> np.ndarray:
    """The clip's samples (a window of a noise file for generated silence), padded/cropped."""
    from bnnkws.frontend.audio import load_audio, pad_or_crop

    y = load_audio(clip.path, sr=sr)
    start = int(getattr(clip, "start", 0) or 0)
    if start or getattr(clip, "is_segment", False):
        y = y[start : start + length]
    y = y * float(getattr(clip, "gain", 1.0) or 1.0)
    return pad_or_crop(np.asarray(y, np.float32), length, crop="start")


def build_stream(
    clips: Sequence,
    minutes: float = 5.0,
    seed: int = 0,
    sample_rate: int = 16000,
    clip_samples: int = 16000,
    gap_s: tuple = (1.0, 2.5),
    unknown_fraction: float = 0.15,
    bed_gain: float = 1.0,
    keyword_labels: Optional[Sequence[str]] = None,
) -> Stream:
    """A ``minutes`` long stream of ``clips`` (objects with path, label, ...) and its ground truth.

    Keyword clips are those whose label is not ``_silence_``/``_unknown_`` (or in
    ``keyword_labels`` when given); ``unknown_fraction`` of the events are ``_unknown_`` words.
    ``_silence_`` clips (background noise) are tiled end to end, times ``bed_gain``, under the
    whole stream so the gaps are never digital silence. Each clip is used at most once while
    enough remain.
    """
    rng = np.random.default_rng(seed)
    if keyword_labels is not None:
        keywords = [c for c in clips if c.label in set(keyword_labels)]
    else:
        keywords = [c for c in clips if c.label not in IGNORED]
    unknowns = [c for c in clips if c.label == "_unknown_"]
    silences = [c for c in clips if c.label == "_silence_"]
    if not keywords:
        raise ValueError("no keyword clips to build a stream from (the split holds only "
                         "_silence_/_unknown_ clips?)")
    n = int(round(minutes * 60 * sample_rate))
    audio = np.zeros(n, dtype=np.float32)
    words = np.zeros(n, dtype=np.float32)
    kw_sumsq, kw_n, bed_sumsq = 0.0, 0, 0.0

    if silences and bed_gain > 0:
        order = rng.permutation(len(silences))
        pos, i = 0, 0
        fade = int(0.01 * sample_rate)
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        while pos < n:
            y = _clip_audio(silences[order[i % len(order)]], sample_rate, clip_samples)
            y = y.copy()
            y[:fade] *= ramp  # short fades so tiling leaves no clicks the model could hear
            y[-fade:] *= ramp[::-1]
            m = min(clip_samples, n - pos)
            seg = bed_gain * y[:m]
            audio[pos : pos + m] += seg
            bed_sumsq += float(np.dot(seg, seg))
            pos += clip_samples
            i += 1

    kw_order = list(rng.permutation(len(keywords)))
    unk_order = list(rng.permutation(len(unknowns))) if unknowns else []
    events: List[Event] = []
    t = int(rng.uniform(*gap_s) * sample_rate)
    k = u = 0
    while t + clip_samples <= n:
        use_unknown = bool(unknowns) and rng.random() < unknown_fraction
        if use_unknown:
            clip = unknowns[unk_order[u % len(unk_order)]]
            u += 1
        else:
            clip = keywords[kw_order[k % len(kw_order)]]
            k += 1
        y = _clip_audio(clip, sample_rate, clip_samples)
        audio[t : t + clip_samples] += y
        words[t : t + clip_samples] += y
        if not use_unknown:
            kw_sumsq += float(np.dot(y, y))
            kw_n += y.size
        events.append(Event(label=clip.label, start_s=t / sample_rate,
                            end_s=(t + clip_samples) / sample_rate, path=str(clip.path),
                            keyword=not use_unknown))
        t += clip_samples + int(rng.uniform(*gap_s) * sample_rate)
    np.clip(audio, -1.0, 1.0, out=audio)
    np.clip(words, -1.0, 1.0, out=words)
    rms = math.sqrt(kw_sumsq / kw_n) if kw_n else None
    return Stream(audio, sample_rate, events, words=words, keyword_rms=rms,
                  bed_rms=math.sqrt(bed_sumsq / n) if bed_sumsq > 0 else None)


# -- noise (issue 19) ---------------------------------------------------------------------------
NOISE_FOLDER_NAMES = ("_background_noise_", "speech_commands_background_noise")


def default_noise_dir(data_root) -> Optional[Path]:
    """The dataset's noise recordings: ``ROOT/_background_noise_``, else a folder
    ``speech_commands_background_noise`` beside ROOT (the shared test layout has no noise folder
    of its own; its ``_silence_`` clips are 1 s cuts of those six recordings). None if neither."""
    if data_root is None:
        return None
    root = Path(data_root)
    for cand in (root / NOISE_FOLDER_NAMES[0], root.parent / NOISE_FOLDER_NAMES[1]):
        if cand.is_dir():
            return cand
    return None


def load_noise(folder, sample_rate: int = 16000) -> List[tuple]:
    """``[(name, float32 samples)]`` of every sound file in ``folder`` (resampled, mono)."""
    from bnnkws.frontend.audio import load_audio

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"noise folder not found: {folder}")
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3") and p.is_file())
    out = []
    for p in files:
        y = np.asarray(load_audio(p, sr=sample_rate), np.float32)
        if y.size >= sample_rate and np.sqrt(np.mean(np.square(y, dtype=np.float64))) > 1e-6:
            out.append((p.name, y))
    if not out:
        raise ValueError(f"{folder}: no sound file of at least 1 s that is not digital silence")
    return out


def noise_track(noises, n: int, seed: int = 0, segment_s: tuple = (3.0, 10.0),
                sample_rate: int = 16000) -> np.ndarray:
    """``n`` samples of noise at unit RMS: random stretches (``segment_s`` long) of random
    recordings, each scaled to RMS 1 so every kind of noise sits at the requested SNR, joined
    with 10 ms fades."""
    rng = np.random.default_rng([seed, 19])
    out = np.zeros(n, dtype=np.float32)
    fade = int(0.01 * sample_rate)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    pos = 0
    while pos < n:
        _, y = noises[int(rng.integers(len(noises)))]
        m = min(int(rng.uniform(*segment_s) * sample_rate), y.size, n - pos)
        start = int(rng.integers(0, y.size - m + 1))
        seg = y[start : start + m].astype(np.float32)
        r = float(np.sqrt(np.mean(np.square(seg, dtype=np.float64))))
        seg = seg / r if r > 1e-9 else seg
        if m > 2 * fade:
            seg[:fade] *= ramp
            seg[-fade:] *= ramp[::-1]
        out[pos : pos + m] = seg
        pos += m
    return out


def _bed_note(rep: dict) -> str:
    """What the "clean" row's bed is, in the SNR rows' terms."""
    snr = (rep.get("settings") or {}).get("bed_snr_db")
    gain = (rep.get("settings") or {}).get("noise_gain")
    if snr is None:
        return (" The clean row has digital silence between words (`--noise-gain 0`)."
                if gain == 0 else "")
    return (f" The clean row's bed (the dataset's `_silence_` clips, `--noise-gain {gain:g}`) "
            f"is itself at {snr:.1f} dB SNR; `--noise-gain 0` gives digital silence between "
            f"words.")


def mix_at_snr(words: np.ndarray, noise: np.ndarray, keyword_rms: float, snr_db: float) -> np.ndarray:
    """``words + noise * keyword_rms / 10^(snr/20)``, clipped to [-1, 1]; ``noise`` at RMS 1.

    The SNR is relative to the keywords' RMS level (over their one-second clips), the noise at
    one constant level under the whole stream, as in a room."""
    g = float(keyword_rms) / (10.0 ** (float(snr_db) / 20.0))
    return np.clip(words + g * noise[: words.size], -1.0, 1.0).astype(np.float32)


def noisy_streams(stream: Stream, noises, snrs: Sequence[float], noise_only_minutes: float = 0.0,
                  noise_only_snr: float = 10.0, seed: int = 0) -> List[tuple]:
    """``[(name, Stream)]``: ``stream``'s keywords with one noise track mixed at each SNR in place
    of its bed (same words, same times in every row), then, if ``noise_only_minutes`` > 0, a
    noise-only stream at the level that noise would have at ``noise_only_snr``."""
    sr = stream.sample_rate
    track = noise_track(noises, stream.audio.size, seed=seed, sample_rate=sr)
    out = [(f"{snr:g} dB SNR", Stream(mix_at_snr(stream.words, track, stream.keyword_rms, snr),
                                      sr, stream.events)) for snr in snrs]
    if noise_only_minutes > 0:
        n = int(round(noise_only_minutes * 60 * sr))
        only = noise_track(noises, n, seed=seed + 1, sample_rate=sr)
        out.append((f"noise only ({noise_only_snr:g} dB level)", Stream(
            mix_at_snr(np.zeros(n, np.float32), only, stream.keyword_rms, noise_only_snr), sr, [])))
    return out


@dataclass
class MatchStats:
    keywords: int = 0
    distractors: int = 0
    correct: int = 0
    wrong: int = 0
    missed: int = 0
    false_detections: int = 0  # near no keyword, on a distractor, or a repeat
    on_distractor: int = 0
    repeats: int = 0
    detections: int = 0
    stream_s: float = 0.0
    # per detection: (time_s, label, verdict, ground truth label or None)
    verdicts: list = field(default_factory=list)

    @property
    def matched(self) -> int:
        return self.correct + self.wrong

    def rate(self, n: int) -> float:
        return 100.0 * n / self.keywords if self.keywords else float("nan")

    @property
    def false_accepts_per_hour(self) -> float:
        return self.false_detections / (self.stream_s / 3600.0) if self.stream_s else float("nan")


def clip_accuracy(detector, stream: Stream, delta=None) -> Optional[float]:
    """Percent of ``stream``'s keywords that ``detector`` classifies right (at ``delta``, else its
    own) when each is cut out of the stream as its own one-second clip, at its place, with the
    stream's noise: what the model hears before the listener's hop grid (a hop sees the clip up
    to half a hop off) and the smoother have their say. ``correct_pct`` minus this is what the
    streaming path loses; this alone is what the model does. None without keywords."""
    kws = stream.keywords
    if not kws:
        return None
    sr = stream.sample_rate
    n = int(round((kws[0].end_s - kws[0].start_s) * sr))  # every clip is one clip_samples long
    starts = [int(round(e.start_s * sr)) for e in kws]
    results = detector.classify_batch(audio=np.stack([stream.audio[s:s + n] for s in starts]),
                                      delta=delta)
    right = sum(r.label == e.label for r, e in zip(results, kws))
    return _round(100.0 * right / len(kws), 2)


def match_detections(detections, events: Sequence[Event], stream_s: float,
                     tolerance_ms: float = DEFAULT_TOLERANCE_MS) -> MatchStats:
    """Score ``detections`` (objects with ``time_s`` and ``label``) against ``events``.

    Each detection is matched to the nearest event whose ground-truth time lies within
    ``tolerance_ms``; an event is matched at most once (the first detection that reaches it
    decides correct/wrong, later ones are repeats).
    """
    tol = tolerance_ms / 1000.0
    stats = MatchStats(keywords=sum(e.keyword for e in events),
                       distractors=sum(not e.keyword for e in events), stream_s=stream_s)
    times = np.array([e.time_s for e in events], dtype=np.float64)
    taken = set()
    for d in sorted(detections, key=lambda d: d.time_s):
        stats.detections += 1
        gt = None
        if times.size:
            diff = np.abs(times - d.time_s)
            j = int(np.argmin(diff))
            if diff[j] <= tol:
                gt = j
        if gt is None:
            stats.false_detections += 1
            stats.verdicts.append((d.time_s, d.label, "false", None))
            continue
        ev = events[gt]
        if not ev.keyword:
            stats.false_detections += 1
            stats.on_distractor += 1
            stats.verdicts.append((d.time_s, d.label, "on_unknown", ev.label))
        elif gt in taken:
            stats.false_detections += 1
            stats.repeats += 1
            stats.verdicts.append((d.time_s, d.label, "repeat", ev.label))
        else:
            taken.add(gt)
            ok = d.label == ev.label
            stats.correct += ok
            stats.wrong += not ok
            stats.verdicts.append((d.time_s, d.label, "correct" if ok else "wrong", ev.label))
    stats.missed = stats.keywords - stats.matched
    return stats


def _round(x: float, nd: int):
    return None if x is None or math.isnan(x) else round(x, nd)


def report_dict(stats: MatchStats, summary, settings: dict) -> dict:
    """Everything a results note needs, JSON-ready."""
    lat = np.asarray(summary.latencies_ms, dtype=np.float64)
    return {
        "settings": settings,
        "stream_s": round(stats.stream_s, 3),
        "keywords": stats.keywords,
        "distractors": stats.distractors,
        "detections": stats.detections,
        "matched": stats.matched,
        "correct": stats.correct,
        "wrong": stats.wrong,
        "missed": stats.missed,
        "false_detections": stats.false_detections,
        "false_on_unknown": stats.on_distractor,
        "false_repeats": stats.repeats,
        # rates per keyword are None for a noise-only stream (no keywords; JSON has no NaN)
        "matched_pct": _round(stats.rate(stats.matched), 2),
        "correct_pct": _round(stats.rate(stats.correct), 2),
        "wrong_pct": _round(stats.rate(stats.wrong), 2),
        "missed_pct": _round(stats.rate(stats.missed), 2),
        "false_pct": _round(stats.rate(stats.false_detections), 2),
        "false_accepts_per_hour": round(stats.false_accepts_per_hour, 2),
        "real_time_factor": round(summary.wall_s / stats.stream_s, 5) if stats.stream_s else None,
        "processing_rtf": round(summary.real_time_factor, 5),
        "hops": summary.hops,
        "mean_hop_latency_ms": round(float(lat.mean()), 4) if lat.size else None,
        "p95_hop_latency_ms": round(float(np.percentile(lat, 95)), 4) if lat.size else None,
        "exits": {str(k): v for k, v in sorted(summary.exits.items())},
        # skipped (-1) and gated (0) hops ran no stage: they count as exit 0 in the mean
        "mean_exit": (round(sum(k * v for k, v in summary.exits.items() if k > 0) / summary.hops,
                            3) if summary.hops else None),
        "gated": summary.gated,
        "skipped": summary.skipped,
        # how late the hop skipper let detections out (stream ms after the detecting hop)
        "max_detection_delay_ms": (round(max(d.delay_ms for d in summary.detections), 1)
                                   if summary.detections else None),
        "mean_detection_delay_ms": (
            round(float(np.mean([d.delay_ms for d in summary.detections])), 1)
            if summary.detections else None),
        "shares": {k: round(v, 4) for k, v in summary.shares().items()},
    }


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}%"


def _num(x) -> str:
    return "-" if x is None else f"{x:g}"


def rows_markdown(rows: Sequence[dict]) -> str:
    """The A/B table: one row per (stream, gate) with accuracy, false accepts and cost."""
    lines = ["| stream | gate | correct | as clips | wrong | missed | false / h | mean ms / hop | "
             "RTF | max delay ms | skipped | gated | exit 1 | exit 2 | exit 3 | exit 4 | exit 5 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        kw = r["keywords"] > 0
        sh = r.get("shares", {})
        ex = " | ".join(f"{100 * sh.get(f'exit{k}', 0.0):.1f}%" for k in range(1, 6))
        lines.append(
            f"| {r['stream']} | {r['gate']} | {_pct(r['correct_pct']) if kw else '-'} | "
            f"{_pct(r.get('clips_correct_pct')) if kw else '-'} | "
            f"{_pct(r['wrong_pct']) if kw else '-'} | {_pct(r['missed_pct']) if kw else '-'} | "
            f"{r['false_accepts_per_hour']:.1f} | {r['mean_hop_latency_ms']:.3f} | "
            f"{r['processing_rtf']:.4f} | {_num(r.get('max_detection_delay_ms'))} | "
            f"{100 * sh.get('skipped', 0.0):.1f}% | "
            f"{100 * sh.get('gated', 0.0):.1f}% | {ex} |")
    return "\n".join(lines) + "\n"


def report_markdown(rep: dict) -> str:
    s = rep["settings"]
    lines = [
        f"# Streaming accuracy: {s.get('bundle', '')}",
        "",
        f"{rep['stream_s'] / 60:.1f} min stream from `{s.get('data', '')}` "
        f"({s.get('split', 'testing')} split of speaker-split seed {s.get('split_seed', s.get('seed'))}, "
        f"stream seed {s.get('seed')}): {rep['keywords']} keywords and {rep['distractors']} `_unknown_` "
        f"distractors over background noise. Hop {s.get('hop_ms')} ms, average window "
        f"{s.get('average_window_ms')} ms, threshold {s.get('threshold')}, min count "
        f"{s.get('min_count')}, suppression {s.get('suppression_ms')} ms, delta {s.get('delta')}, "
        f"tolerance {s.get('tolerance_ms')} ms.",
        "",
        "| matched | correct | wrong | missed | false detections | false accepts / hour |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {rep['matched_pct']:.1f}% | {rep['correct_pct']:.1f}% | {rep['wrong_pct']:.1f}% | "
        f"{rep['missed_pct']:.1f}% | {rep['false_pct']:.1f}% ({rep['false_detections']}) | "
        f"{rep['false_accepts_per_hour']:.1f} |",
        "",
        "The same keywords cut out of the stream as one-second clips, each at its place: "
        f"{_pct(rep.get('clips_correct_pct'))} correct (the model alone, before the hop grid and "
        "the smoother).",
        "",
        "| real-time factor | mean hop latency | p95 hop latency | hops | mean exit |",
        "|---:|---:|---:|---:|---:|",
        f"| {rep['real_time_factor']:.4f} | {rep['mean_hop_latency_ms']:.2f} ms | "
        f"{rep['p95_hop_latency_ms']:.2f} ms | {rep['hops']} | {rep['mean_exit']} |",
        "",
        "Exits used per hop: " + ", ".join(f"exit {k}: {v}" for k, v in rep["exits"].items()),
        "",
        "Rates are per ground-truth keyword, as in TensorFlow's test_streaming_accuracy. False "
        f"detections include {rep['false_on_unknown']} on `_unknown_` words and "
        f"{rep['false_repeats']} repeated detections of one keyword.",
    ]
    rows = rep.get("rows") or []
    if rows:
        ns = rep.get("noise") or {}
        lines += ["", "## Streams in noise and the cheap-stream gates", ""]
        if ns:
            lines.append(
                f"Noise: {ns.get('folder')} ({', '.join(ns.get('files', []))}), random 3-10 s "
                f"stretches each scaled to one RMS, mixed at each SNR relative to the keywords' "
                f"RMS level ({ns.get('keyword_rms_dbfs')} dBFS) in place of the clean stream's "
                f"bed; the same keywords and times in every row.{_bed_note(rep)} The noise-only stream "
                f"({ns.get('noise_only_minutes')} min) is that noise alone at the level of "
                f"{ns.get('noise_only_snr_db')} dB SNR, for false accepts per hour.")
            lines.append("")
        lines.append(rows_markdown(rows))
        lines.append("As clips: the same keywords cut out of that stream as one-second clips at "
                     "their place, classified at the same delta (the model alone; correct minus "
                     "this is what the hop grid and the smoother lose).")
        lines.append("")
        lines.append("Cost = frontend share + gate + stages run, per 100 ms hop (mean, this "
                     "machine); RTF = that cost / audio time. `none` is the paper's entropy rule "
                     "alone; every gate keeps the same --delta. Max delay: how much later than "
                     "its hop a detection came out (hops the skipper held back; 0 without skip).")
    return "\n".join(lines) + "\n"


def run_benchmark(streamer, stream: Stream, tolerance_ms: float = DEFAULT_TOLERANCE_MS,
                  block_ms: float = 100.0, progress: bool = True):
    """Run ``stream`` through ``streamer`` (fast, same path as listen); returns (stats, summary)."""
    from bnnkws.app.listener.listen import run_stream
    from bnnkws.app.listener.sources import ArraySource

    source = ArraySource(stream.audio, stream.sample_rate, block_ms=block_ms, realtime=False,
                         name="benchmark stream")
    bar = None
    on_hop = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=round(stream.duration_s, 1), unit="s audio", desc="streaming",
                   leave=False, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")

        def on_hop(h, _last=[0.0]):  # noqa: B006 - progress state
            if h.time_s - _last[0] >= 5.0:
                bar.update(h.time_s - _last[0])
                _last[0] = h.time_s

    streamer.reset()
    try:
        summary = run_stream(iter(source), streamer, on_hop=on_hop)
    finally:
        if bar is not None:
            bar.close()
    if summary.interrupted:
        raise KeyboardInterrupt
    stats = match_detections(summary.detections, stream.events, stream.duration_s, tolerance_ms)
    return stats, summary


def write_reports(rep: dict, out_dir: Path, stem: str = "bench_stream") -> tuple:
    from bnnkws.deploy.bundle import atomic_write_bytes

    out_dir = Path(out_dir)
    jpath = atomic_write_bytes(out_dir / f"{stem}.json", (json.dumps(rep, indent=2) + "\n").encode())
    mpath = atomic_write_bytes(out_dir / f"{stem}.md", report_markdown(rep).encode())
    return jpath, mpath
