"""Google Speech Commands readers: the published archives (v0.01, v0.02) and the prepared
12-class test layout that already has ``_silence_`` and ``_unknown_`` folders.

The 12-class task follows the standard protocol of TensorFlow's ``speech_commands`` example:
ten words, ``_unknown_`` drawn from every other word at ``unknown_pct`` percent of each split's
keyword clips, ``_silence_`` likewise at ``silence_pct`` percent, labels ordered
``_silence_, _unknown_, yes, no, ...``.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from .base import (BACKGROUND, SILENCE, SPLITS, UNKNOWN, Clip, Dataset, list_audio,
                   speaker_from_name, word_from_name)
from .splits import split_groups, split_items

WORDS12 = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
LABELS12 = [SILENCE, UNKNOWN] + WORDS12
SILENCE_GAIN_DB = (-60.0, 0.0)  # silence windows span near-digital silence to full-level noise


def word_folders(root: Path) -> list[str]:
    """Sub-folders holding audio, except the special ``_...`` ones."""
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith((".", "_")) and list_audio(p))


def is_speech_commands(root: Path) -> bool:
    """An archive as published: split lists or the background noise folder. (A folder of
    keyword sub-folders without either reads as folder-per-class; ``sc:`` forces this reader.)"""
    return ((root / "testing_list.txt").is_file() or (root / "validation_list.txt").is_file()
            or ((root / BACKGROUND).is_dir()
                and len(set(word_folders(root)) & set(WORDS12)) >= 5))


def is_prepared_test(root: Path) -> bool:
    return (root / SILENCE).is_dir() and (root / UNKNOWN).is_dir()


def parse_task(task, available: list[str]) -> tuple[str, list[str]]:
    """``(mode, words)``: mode ``"12"`` (words + silence + unknown), ``"all"`` or ``"words"``."""
    if task is None or str(task).strip() in ("", "12"):
        return "12", list(WORDS12)
    t = str(task).strip().lower()
    if t in ("35", "all", "30"):
        return "all", list(available)
    words = [w.strip() for w in str(task).split(",") if w.strip()]
    if not words:
        raise ValueError(f"task {task!r}: expected 12, 35/all or a comma-separated word list")
    missing = [w for w in words if w not in available]
    if missing:
        raise ValueError(f"task {task!r}: no folder for {', '.join(missing)}; "
                         f"available words: {', '.join(available)}")
    return "words", words


def read_list(root: Path, name: str) -> set[str] | None:
    path = root / name
    if not path.is_file():
        return None
    return {ln.strip().replace("\\", "/") for ln in path.read_text().splitlines() if ln.strip()}


def load_speech_commands(root, task="12", seed=0, val_frac=0.1, test_frac=0.1,
                         unknown_pct=10.0, silence_pct=10.0, name=None) -> Dataset:
    """Read a Speech Commands archive (word folders, optional split lists, noise folder)."""
    root = Path(root)
    words = word_folders(root)
    mode, wanted = parse_task(task, words)
    if mode == "12":
        missing = [w for w in WORDS12 if w not in words]
        if len(missing) == len(WORDS12):
            raise ValueError(f"{root}: task 12 needs the Speech Commands words "
                             f"({', '.join(WORDS12)}); found only {', '.join(words)}. "
                             f"Use --task all or a word list")
        wanted = [w for w in WORDS12 if w in words]
    notes: list[str] = []
    noise = [str(p) for p in list_audio(root / BACKGROUND)]
    val_list, test_list = read_list(root, "validation_list.txt"), read_list(root, "testing_list.txt")

    entries = []  # (relpath, word, speaker)
    for w in words:
        for p in list_audio(root / w):
            entries.append((f"{w}/{p.name}", w, speaker_from_name(p) or f"{w}/{p.stem}"))
    if not entries:
        raise FileNotFoundError(f"{root}: no audio in any word folder")

    if val_list is not None or test_list is not None:
        present = {e[0] for e in entries}
        named = (val_list or set()) | (test_list or set())
        missing = len(named - present)
        if missing:
            msg = (f"{root}: {missing} of the {len(named)} files named in the split lists are "
                   f"not present and were ignored")
            warnings.warn(msg, stacklevel=2)
            notes.append(msg)
        split_of = {e[0]: ("testing" if test_list and e[0] in test_list else
                           "validation" if val_list and e[0] in val_list else "train")
                    for e in entries}
        notes.append("split: official validation_list.txt / testing_list.txt")
    else:
        by_speaker = split_groups([e[2] for e in entries], seed, val_frac, test_frac)
        split_of = {e[0]: by_speaker[e[2]] for e in entries}
        notes.append(f"split: by speaker (seed {seed}, val {val_frac}, test {test_frac})")

    entries = [(str(root / rel), w, spk, split_of[rel]) for rel, w, spk in entries]
    clips, labels, more = task_clips(entries, mode, wanted, noise, np.random.default_rng(seed),
                                     unknown_pct, silence_pct, val_frac, test_frac)
    return Dataset(clips, labels, noise, name or root.name, "speech_commands", str(root),
                   notes=notes + more)


def task_clips(entries, mode: str, wanted: list, noise: list, rng, unknown_pct=10.0,
               silence_pct=10.0, val_frac=0.1, test_frac=0.1) -> tuple[list, list, list]:
    """``(clips, labels, notes)`` of a task over ``entries`` ``(path, word, speaker, split)``.

    ``mode`` as from :func:`parse_task`: ``"all"`` makes every word a class; ``"12"`` and
    ``"words"`` keep ``wanted`` and draw ``_unknown_`` from the other words and ``_silence_``
    windows from ``noise``, each at its percentage of every split's keyword clips.
    """
    if mode == "all":
        return ([Clip(p, w, spk, split, w) for p, w, spk, split in entries], list(wanted), [])
    clips: list[Clip] = []
    notes: list[str] = []
    labels = [SILENCE, UNKNOWN] + [w for w in wanted]
    wanted_set = set(wanted)
    # one pass over the entries (millions for MSWC), each split keeping their order
    known_of = {split: [] for split in SPLITS}
    others_of = {split: [] for split in SPLITS}
    for p, w, spk, s in entries:
        (known_of if w in wanted_set else others_of)[s].append((p, w, spk))
    for split in SPLITS:
        known, others = known_of[split], others_of[split]
        clips += [Clip(p, w, spk, split, w) for p, w, spk in known]
        n_unknown = min(len(others), math.ceil(len(known) * unknown_pct / 100))
        for i in sorted(rng.choice(len(others), n_unknown, replace=False)) if n_unknown else []:
            p, w, spk = others[i]
            clips.append(Clip(p, UNKNOWN, spk, split, w))
        n_silence = math.ceil(len(known) * silence_pct / 100)
        clips += silence_windows(noise, split, n_silence, rng, val_frac, test_frac)
    if not noise and silence_pct > 0:
        notes.append("no _background_noise_ folder: _silence_ uses generated white/pink noise")
    notes.append(f"task {mode}: unknown {unknown_pct}% and silence {silence_pct}% of each "
                 f"split's keyword clips")
    return clips, labels, notes


def silence_windows(noise_paths, split, n, rng, val_frac=0.1, test_frac=0.1,
                    clip_samples=16000, sample_rate=16000) -> list[Clip]:
    """``n`` one-second silence clips cut from the noise files at random levels.

    Each split cuts from its own stretch of every noise file (train the first part, then
    validation, then testing), so no window is heard on two sides. Without noise files the
    clips are generated noise (``noise:white`` / ``noise:pink``, ``start`` is the rng seed).
    """
    out = []
    if n <= 0:
        return out
    if not noise_paths:
        for i in range(n):
            kind = "noise:pink" if i % 2 else "noise:white"
            seed = int(rng.integers(1, 2**31 - 1))
            out.append(Clip(kind, SILENCE, None, split, BACKGROUND, seed, _gain(rng)))
        return out
    import soundfile as sf

    lengths = []
    for p in noise_paths:
        info = sf.info(p)
        lengths.append(int(info.frames * sample_rate / info.samplerate))
    lo_frac = {"train": 0.0, "validation": 1 - val_frac - test_frac, "testing": 1 - test_frac}[split]
    hi_frac = {"train": 1 - val_frac - test_frac, "validation": 1 - test_frac, "testing": 1.0}[split]
    for _ in range(n):
        k = int(rng.integers(len(noise_paths)))
        lo, hi = int(lengths[k] * lo_frac), int(lengths[k] * hi_frac) - clip_samples
        start = int(rng.integers(lo, hi)) if hi > lo else lo
        out.append(Clip(str(noise_paths[k]), SILENCE, None, split, BACKGROUND, max(start, 0),
                        _gain(rng)))
    return out


def _gain(rng) -> float:
    return float(10 ** (rng.uniform(*SILENCE_GAIN_DB) / 20))


def load_prepared_test(root, task="12", seed=0, val_frac=0.1, test_frac=0.1,
                       name=None) -> Dataset:
    """Read the prepared 12-class layout (``_silence_``, ``_unknown_`` and ten word folders).

    It has no split lists, so it is split by speaker: ``<speaker>_nohash_<n>.wav`` in the word
    folders and ``<word>_<speaker>_nohash_<n>.wav.wav`` in ``_unknown_``; one speaker's clips
    of every word land on one side. ``_silence_`` clips (``<n>.wav``, windows of background
    noise) have no speaker: each file is its own item, split by a stable hash of its name.
    """
    root = Path(root)
    words = word_folders(root)
    mode, wanted = parse_task(task, words)
    if mode == "all":
        wanted = [w for w in WORDS12 if w in words] + [w for w in words if w not in WORDS12]
    labels = [SILENCE, UNKNOWN] + list(wanted)
    wanted_set = set(wanted)
    rows = []  # (path, label, speaker, source)
    for w in words:
        for p in list_audio(root / w):
            rows.append((str(p), w if w in wanted_set else UNKNOWN, speaker_from_name(p), w))
    for p in list_audio(root / UNKNOWN):
        rows.append((str(p), UNKNOWN, speaker_from_name(p), word_from_name(p) or UNKNOWN))
    no_speaker = [r for r in rows if r[2] is None]
    rows = [r for r in rows if r[2] is not None]
    by_speaker = split_groups([r[2] for r in rows], seed, val_frac, test_frac)
    clips = [Clip(p, lab, spk, by_speaker[spk], src) for p, lab, spk, src in rows]
    # Speech clips without a recognisable speaker are kept apart by file, like silence.
    sil = [str(p) for p in list_audio(root / SILENCE)]
    loose = split_items([Path(p).name for p in sil] + [r[0] for r in no_speaker],
                        seed, val_frac, test_frac)
    clips += [Clip(p, SILENCE, None, loose[Path(p).name], SILENCE) for p in sil]
    clips += [Clip(p, lab, None, loose[p], src) for p, lab, _, src in no_speaker]
    noise = [str(p) for p in list_audio(root / BACKGROUND)]
    notes = []
    if not noise:
        # No noise recordings ship with this layout; its training-split silence windows are
        # real background noise, so augmentation mixes those (never validation/testing ones).
        noise = [c.path for c in clips if c.label == SILENCE and c.split == "train"]
        notes.append(f"noise for augmentation: the {len(noise)} training _silence_ clips")
    notes += [f"split: by speaker (seed {seed}, val {val_frac}, test {test_frac}); _silence_ "
             f"files have no speaker and are split by a hash of their file name"]
    if no_speaker:
        notes.append(f"{len(no_speaker)} speech clips have no <speaker>_nohash_ name; "
                     f"split by file, speaker-disjointness cannot be checked for them")
    return Dataset(clips, labels, noise, name or root.name, "sc_test", str(root), notes=notes)
