"""A word corpus cut from transcribed speech by forced alignment, written in MSWC's layout.

MSWC (Mazumder et al. 2021) was made this way from Common Voice: align each sentence with its
transcript, cut every word out with a little context, and centre it in a 1-s clip. Here
:func:`build_words` does the same for any corpus :mod:`bnnkws.kws.data.transcripts` reads,
with PocketSphinx (:class:`bnnkws.kws.data.align.Aligner`), and writes::

    OUT/<lang>/clips/<word>/<utterance>_<position>.opus    (1 s, 16 kHz; or .wav)
    OUT/<lang>/<lang>_splits.csv    SET,LINK,WORD,VALID,SPEAKER,GENDER  (SET: TRAIN/DEV/TEST)
    OUT/words_summary.json          words, clips, speakers, what was rejected and why

so that ``mswc:OUT`` reads it (:mod:`bnnkws.kws.data.mswc`) with the corpus' own
speaker-disjoint split. Words are rejected, and counted by reason, when they are not in the
aligner's dictionary nor the corpus lexicon (then the whole utterance cannot be aligned: its
other words count as ``utterance_has_unknown_word``), when the alignment fails, or when the
aligned segment is implausible: shorter than ``min_word`` or than the acoustic model's minimum
of 3 frames per phone (the aligner squeezed in a word that is not there), longer than
``max_word``, or silent (its loudest 25 ms less than ``silence_db`` above the utterance's noise
floor).

Work is done per utterance in worker processes; each finished utterance leaves a small JSON
marker (written atomically after its clips), so an interrupted run resumes where it stopped and
redoes nothing. The split list and the summary are written at the end.
"""
from __future__ import annotations

import collections
import csv
import hashlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bnnkws.kws import fileio
from bnnkws.kws.pool import bounded_map

from .transcripts import Corpus, CorpusError, Utterance, safe_name

SAMPLE_RATE = 16000
STATE = ".words"  # resume state inside OUT
SUMMARY = "words_summary.json"
SETS = {"train": "TRAIN", "validation": "DEV", "testing": "TEST"}
GENDERS = {"m": "MALE", "f": "FEMALE"}
FORMATS = {"opus": ("OGG", "OPUS"), "wav": ("WAV", "PCM_16")}
REASONS = ("not_in_dictionary", "utterance_has_unknown_word", "unreadable_audio",
           "alignment_failed", "too_short", "too_long", "silent")
STATE_FORMAT = 1


class WordsError(ValueError):
    """An output folder that cannot be used as asked; the message names the file."""


@dataclass(frozen=True)
class CutConfig:
    """How words are cut and judged (seconds, dB)."""

    context: float = 0.075  # audio kept on each side of the aligned word
    fade: float = 0.010  # raised-cosine ramp at the cut edges, inside the context
    min_word: float = 0.10  # shorter aligned words are rejected
    max_word: float = 1.0  # longer ones too (a 1-s clip cannot hold them)
    silence_db: float = 12.0  # a word's loudest 25 ms must be this far above the noise floor
    clip: float = 1.0  # clip length
    format: str = "opus"  # or "wav"

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        for name in ("context", "fade", "min_word", "max_word", "clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.max_word <= self.clip:
            raise ValueError(f"max_word must be in (0, clip = {self.clip}] s, got "
                             f"{self.max_word}")
        if self.min_word >= self.max_word:
            raise ValueError(f"min_word ({self.min_word}) must be below max_word "
                             f"({self.max_word})")


# ----------------------------------------------------------------------------- signal


def frame_db(audio: np.ndarray, sr: int = SAMPLE_RATE, win: float = 0.025,
             hop: float = 0.010) -> np.ndarray:
    """Energy envelope: dB of the mean square of ``win``-second frames every ``hop`` seconds
    (frame ``i`` starts at ``i * hop``)."""
    y = np.asarray(audio, np.float64)
    n, h = int(win * sr), int(hop * sr)
    if len(y) < n:
        y = np.pad(y, (0, n - len(y)))
    c = np.concatenate([[0.0], np.cumsum(y * y)])
    starts = np.arange(0, len(y) - n + 1, h)
    return 10 * np.log10((c[starts + n] - c[starts]) / n + 1e-10)


def noise_floor(env: np.ndarray) -> float:
    """The utterance's noise floor: the 10th percentile of its frame energies (dB)."""
    return float(np.percentile(env, 10))


def word_peak(env: np.ndarray, start: float, end: float, hop: float = 0.010,
              win: float = 0.025) -> float:
    """The loudest frame (dB) lying within ``start``-``end`` seconds."""
    a = int(np.ceil(start / hop))
    b = max(a + 1, int((end - win) / hop) + 1)
    part = env[a:b]
    return float(part.max()) if part.size else float("-inf")


def judge(duration: float, n_phones: int, peak_db: float, floor_db: float,
          cfg: CutConfig) -> str | None:
    """Why an aligned word is implausible (a key of :data:`REASONS`), or None."""
    if duration < cfg.min_word or duration <= 0.03 * max(n_phones, 1) + 1e-9:
        return "too_short"
    if duration > cfg.max_word:
        return "too_long"
    if peak_db < floor_db + cfg.silence_db:
        return "silent"
    return None


def cut_clip(audio: np.ndarray, start: float, end: float, cfg: CutConfig,
             sr: int = SAMPLE_RATE) -> np.ndarray:
    """The word from ``start`` to ``end`` s with ``cfg.context`` s each side (less where the
    recording ends or the clip would overflow), edges faded, centred in a zero-padded
    ``cfg.clip``-second clip (as MSWC's clips are)."""
    length = int(round(cfg.clip * sr))
    s, e = int(round(start * sr)), int(round(end * sr))
    room = max(0, (length - (e - s)) // 2)
    ctx = min(int(round(cfg.context * sr)), room)
    a, b = max(0, s - ctx), min(len(audio), e + ctx)
    piece = np.array(audio[a:b], np.float32)
    if len(piece) > length:  # only when the word itself is longer than the clip
        off = (len(piece) - length) // 2
        piece = piece[off:off + length]
    f = min(int(round(cfg.fade * sr)), len(piece) // 2)
    if f > 0:
        ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(f) + 0.5) / f)).astype(np.float32)
        piece[:f] *= ramp
        piece[-f:] *= ramp[::-1]
    out = np.zeros(length, np.float32)
    off = (length - len(piece)) // 2
    out[off:off + len(piece)] = piece
    return out


def write_clip(path: Path, clip: np.ndarray, fmt: str, sr: int = SAMPLE_RATE) -> None:
    """Write ``clip`` atomically as 16-bit WAV or Opus."""
    import soundfile as sf

    container, subtype = FORMATS[fmt]
    with fileio.atomic_path(path, suffix=f".{fmt}") as tmp:
        sf.write(str(tmp), clip, sr, format=container, subtype=subtype)


# ----------------------------------------------------------------------------- one utterance


def clip_name(utt: Utterance, position: int, fmt: str) -> str:
    return f"{safe_name(utt.id)}_{position}.{fmt}"


def marker_path(state: Path, utt_id: str) -> Path:
    h = hashlib.sha1(utt_id.encode()).hexdigest()[:2]
    return state / "done" / h / f"{safe_name(utt_id)}.json"


def process_utterance(utt: Utterance, aligner, lang_dir: Path, state: Path,
                      cfg: CutConfig) -> dict:
    """Align one utterance, write its kept words' clips, then its done-marker; returns the
    marker's record (``rows``: SET, LINK, WORD, SPEAKER, GENDER of each clip written;
    ``rejected``: ``{reason: words}``; ``unknown``: the words without a pronunciation)."""
    from bnnkws.frontend.audio import AudioError, load_audio

    rec = {"id": utt.id, "words": len(utt.words), "rows": [], "rejected": {}, "unknown": [],
           "speaker": utt.speaker, "split": utt.split}
    rejected = collections.Counter()
    unknown = [w for w in utt.words if not aligner.knows(w)]
    if unknown:
        rec["unknown"] = unknown
        rejected["not_in_dictionary"] += len(unknown)
        rejected["utterance_has_unknown_word"] += len(utt.words) - len(unknown)
    elif utt.words:
        try:
            audio = load_audio(utt.path, sr=SAMPLE_RATE)
            if utt.start is not None or utt.end is not None:
                a = int(round((utt.start or 0.0) * SAMPLE_RATE))
                b = len(audio) if utt.end is None else int(round(utt.end * SAMPLE_RATE))
                audio = audio[a:b]
        except (AudioError, OSError) as exc:
            rec["problem"] = str(exc)
            rejected["unreadable_audio"] += len(utt.words)
            audio = None
        segs = aligner.align(audio, utt.words) if audio is not None else None
        if audio is not None and segs is None:
            rejected["alignment_failed"] += len(utt.words)
        elif segs:
            env = frame_db(audio)
            floor = noise_floor(env)
            for k, seg in enumerate(segs):
                why = judge(seg.duration, len(aligner.phones(seg.word)),
                            word_peak(env, seg.start, seg.end), floor, cfg)
                if why:
                    rejected[why] += 1
                    continue
                link = f"{safe_name(seg.word)}/{clip_name(utt, k, cfg.format)}"
                write_clip(lang_dir / "clips" / link, cut_clip(audio, seg.start, seg.end, cfg),
                           cfg.format)
                rec["rows"].append([SETS[utt.split], link, seg.word, utt.speaker,
                                    GENDERS.get(utt.gender, "NAN"),
                                    round(seg.start, 2), round(seg.end, 2)])
    rec["rejected"] = dict(rejected)
    fileio.atomic_write_json(marker_path(state, utt.id), rec, indent=None)
    return rec


# ----------------------------------------------------------------------------- workers

_WORKER: dict = {}


def _init_worker(lexicon: dict) -> None:
    from .align import Aligner

    _WORKER["aligner"] = Aligner(lexicon)


def _work(task) -> dict:
    utt, lang_dir, state, cfg = task
    return process_utterance(utt, _WORKER["aligner"], lang_dir, state, cfg)


def _run(utts, lexicon, lang_dir, state, cfg, workers: int):
    """Records of ``utts`` as they finish, at most ``4 * workers`` in flight."""
    tasks = ((u, lang_dir, state, cfg) for u in utts)
    yield from bounded_map(_work, tasks, workers, 4 * workers, _init_worker, (lexicon,))


# ----------------------------------------------------------------------------- the corpus


def _settings(corpus: Corpus, lang: str, cfg: CutConfig) -> dict:
    from .align import version

    return {"format": STATE_FORMAT, "corpus": str(Path(corpus.root).resolve()),
            "kind": corpus.kind, "language": lang, "cut": asdict(cfg),
            "aligner": f"pocketsphinx {version()}"}


def _check_state(state: Path, settings: dict) -> None:
    path = state / "settings.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError as exc:
            raise WordsError(f"{path}: unreadable ({exc}); remove {state} to start "
                             f"again") from exc
        differ = [k for k in ("format", "corpus", "kind", "language", "cut")
                  if old.get(k) != settings[k]]
        if differ:
            raise WordsError(f"{path}: this folder holds words cut with other settings "
                             f"({', '.join(differ)}: {[old.get(k) for k in differ]}); use a "
                             f"new --out, or the same options to resume")
        return
    fileio.atomic_write_json(path, settings)


def _read_markers(state: Path, wanted: set[str]) -> dict[str, dict]:
    out = {}
    for p in sorted((state / "done").glob("*/*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue  # cannot happen with atomic writes; then the utterance is redone
        if rec.get("id") in wanted:
            out[rec["id"]] = rec
    return out


def _write_splits(lang_dir: Path, lang: str, records) -> int:
    order = {s: i for i, s in enumerate(SETS.values())}
    rows = sorted((r for rec in records for r in rec["rows"]),
                  key=lambda r: (order[r[0]], r[1]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["SET", "LINK", "WORD", "VALID", "SPEAKER", "GENDER"])
    for s, link, word, spk, gender, *_ in rows:
        w.writerow([s, link, word, "True", spk, gender])
    fileio.atomic_write_text(lang_dir / f"{lang}_splits.csv", buf.getvalue())
    return len(rows)


def summarise(corpus: Corpus, records: list[dict], lang: str, cfg: CutConfig) -> dict:
    """Counts of a finished run: words spoken, clips kept, rejected by reason, words with
    enough clips, speakers and clips per split, the commonest unknown words."""
    rejected = collections.Counter()
    unknown = collections.Counter()
    per_word = collections.Counter()
    speakers = collections.defaultdict(set)
    clips_per_split = collections.Counter()
    problems = []
    for rec in records:
        rejected.update(rec["rejected"])
        unknown.update(rec["unknown"])
        for r in rec["rows"]:
            per_word[r[2]] += 1
            speakers[r[0]].add(r[3])
            clips_per_split[r[0]] += 1
        if rec.get("problem"):
            problems.append(rec["problem"])
    spoken = sum(rec["words"] for rec in records)
    clips = sum(per_word.values())
    return {
        "corpus": corpus.root, "kind": corpus.kind, "language": lang,
        "utterances": len(records), "words_spoken": spoken, "clips": clips,
        "rejected": {k: rejected.get(k, 0) for k in REASONS},
        "kept_share": round(clips / spoken, 4) if spoken else 0.0,
        "distinct_words": len(per_word),
        "words_with_clips": {str(n): sum(1 for c in per_word.values() if c >= n)
                             for n in (1, 5, 20, 100)},
        "transcript_words_with_20": sum(1 for c in corpus.word_counts().values() if c >= 20),
        "clips_per_split": {s: clips_per_split.get(s, 0) for s in SETS.values()},
        "speakers_per_split": {s: len(speakers.get(s, ())) for s in SETS.values()},
        "top_words": [[w, n] for w, n in per_word.most_common(20)],
        "unknown_words": [[w, n] for w, n in unknown.most_common(20)],
        "problems": problems[:20], "settings": asdict(cfg), "notes": corpus.notes,
    }


def build_words(corpus: Corpus, out, lang: str | None = None, cfg: CutConfig = CutConfig(),
                workers: int | None = None, progress: bool = True, on_result=None) -> dict:
    """Cut every word of ``corpus`` into ``out`` (see the module docstring); returns the
    summary, also written to ``out/words_summary.json``.

    ``workers``: processes (default ``os.cpu_count()``; 1 works in this process).
    ``on_result(record)`` is called in this process after each utterance (a progress hook;
    an exception from it stops the run, which a later call resumes). A folder already holding
    words cut from another corpus or with other settings is refused (:class:`WordsError`).
    """
    from .align import version

    version()  # fail now, naming the package, when PocketSphinx is missing
    t0 = time.perf_counter()
    out = Path(out)
    lang = safe_name(lang or corpus.language)
    ids = collections.Counter(u.id for u in corpus.utterances)
    dup = [i for i, n in ids.items() if n > 1]
    if dup:
        raise CorpusError(f"{corpus.root}: utterance id {dup[0]!r} is listed {ids[dup[0]]} "
                          f"times ({len(dup)} ids repeat); ids must be unique")
    if out.exists() and not out.is_dir():
        raise WordsError(f"--out {out} is a file; give a folder")
    lang_dir, state = out / lang, out / STATE
    state.mkdir(parents=True, exist_ok=True)
    _check_state(state, _settings(corpus, lang, cfg))
    done = _read_markers(state, set(ids))
    resumed = len(done)
    todo = [u for u in corpus.utterances if u.id not in done]
    workers = max(1, min(int(workers or os.cpu_count() or 1), max(1, len(todo))))
    from tqdm.auto import tqdm

    with tqdm(total=len(corpus.utterances), initial=resumed, desc="cutting words",
              unit="utt", disable=not progress or None) as bar:
        for rec in _run(todo, corpus.lexicon, lang_dir, state, cfg, workers):
            done[rec["id"]] = rec
            bar.update(1)
            if on_result is not None:
                on_result(rec)
    records = [done[u.id] for u in corpus.utterances]
    lang_dir.mkdir(parents=True, exist_ok=True)
    _write_splits(lang_dir, lang, records)
    summary = summarise(corpus, records, lang, cfg)
    summary.update({"out": str(out), "resumed_utterances": resumed,
                    "aligned_utterances": len(todo), "workers": workers,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "aligner": f"pocketsphinx {version()}"})
    fileio.atomic_write_json(out / SUMMARY, summary)
    return summary


def format_summary(s: dict) -> str:
    """The summary as a few lines of text for the terminal."""
    rej = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s["rejected"].items() if v)
    spk = ", ".join(f"{k} {v}" for k, v in s["speakers_per_split"].items())
    per = ", ".join(f"{k} {v}" for k, v in s["clips_per_split"].items())
    lines = [
        f"corpus   {s['corpus']} ({s['kind']}): {s['utterances']} utterances, "
        f"{s['words_spoken']} words spoken",
        f"clips    {s['clips']} kept ({100 * s['kept_share']:.1f} %): {per}",
        f"rejected {sum(s['rejected'].values())}" + (f": {rej}" if rej else ""),
        f"words    {s['distinct_words']} distinct; {s['words_with_clips']['20']} with >= 20 "
        f"clips (the transcripts have {s['transcript_words_with_20']})",
        f"speakers {spk}",
    ]
    if s["unknown_words"]:
        lines.append("unknown  " + ", ".join(f"{w} {n}" for w, n in s["unknown_words"][:10]))
    if s.get("resumed_utterances"):
        lines.append(f"resumed  {s['resumed_utterances']} utterances were already done")
    plural = "s" if s["workers"] != 1 else ""
    lines.append(f"time     {s['seconds']} s with {s['workers']} worker{plural}; "
                 f"written to {s['out']} ({SUMMARY})")
    return "\n".join(lines)
