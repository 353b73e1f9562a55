"""Multilingual Spoken Words Corpus (MLCommons MSWC, Mazumder et al. 2021) as published.

One language folder per language, each with its clips and split lists::

    <lang>/clips/<word>/common_voice_<lang>_<n>.opus   (1 s, 48 kHz Opus; or .wav)
    <lang>/<lang>_splits.csv    SET,LINK,WORD,VALID,SPEAKER,GENDER  (SET: TRAIN/DEV/TEST)
    <lang>/<lang>_train.csv, _dev.csv, _test.csv    LINK,WORD,VALID,SPEAKER,GENDER (the same rows)

``LINK`` is the clip's path under ``clips/``; ``SPEAKER`` is the Common Voice speaker. A SPEC
names a language folder, or the corpus folder when it holds one language. The published split
is used when it keeps every speaker on one side; where a speaker is found in two splits the
whole language is re-split by speaker (:func:`bnnkws.kws.data.splits.split_groups`) and the
dataset's notes say so. Tasks are those of Speech Commands (:func:`parse_task`): ``12`` (the
ten commands, ``_unknown_`` drawn from every other word, ``_silence_`` from a
``_background_noise_`` folder beside the clips or generated noise), a word list, or ``all``.
Words with fewer than ``min_clips`` clips are left out (MSWC has thousands said once or twice).
"""
from __future__ import annotations

import collections
import csv
import os
import sys
from pathlib import Path

import numpy as np

from .base import BACKGROUND, Dataset, list_audio
from .speech_commands import WORDS12, parse_task, task_clips
from .splits import split_groups

# the published SET values, and what a user re-writing the lists might put instead
SETS = {"train": "train", "dev": "validation", "val": "validation", "validation": "validation",
        "test": "testing", "testing": "testing"}
COLUMNS = ("LINK", "WORD", "SPEAKER")


def _split_files(lang: Path) -> dict:
    """``{split or None: csv}``: ``<lang>_splits.csv`` (None), else the per-split lists."""
    name = lang.name
    whole = lang / f"{name}_splits.csv"
    if whole.is_file():
        return {None: whole}
    parts = {s: lang / f"{name}_{s}.csv" for s in ("train", "dev", "test")}
    return {SETS[s]: p for s, p in parts.items() if p.is_file()}


def language_folder(root: Path) -> Path | None:
    """The language folder ``root`` names (itself, or its only language sub-folder)."""
    if (root / "clips").is_dir() and _split_files(root):
        return root
    langs = [p for p in sorted(root.iterdir()) if p.is_dir() and (p / "clips").is_dir()
             and _split_files(p)] if root.is_dir() else []
    if len(langs) > 1:
        raise ValueError(f"{root}: MSWC languages {', '.join(p.name for p in langs)}; name one "
                         f"of their folders (mswc:{root / langs[0].name})")
    return langs[0] if langs else None


def is_mswc(root: Path) -> bool:
    try:
        return language_folder(root) is not None
    except ValueError:
        return True  # several languages: load_mswc says which


def read_rows(lang: Path) -> list[tuple[str, str, str, str]]:
    """``(link, word, speaker, split)`` per row of the split lists."""
    rows = []
    for fixed, path in _split_files(lang).items():
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            cols = [c.strip().upper() for c in next(reader, [])]
            need = COLUMNS + (() if fixed else ("SET",))
            missing = [c for c in need if c not in cols]
            if missing:
                raise ValueError(f"{path}: no column {', '.join(missing)} (columns: "
                                 f"{', '.join(cols)}); expected MSWC's "
                                 f"{'SET,' if not fixed else ''}LINK,WORD,VALID,SPEAKER,GENDER")
            link, word, spk = (cols.index(c) for c in COLUMNS)
            at = cols.index("SET") if not fixed else None
            intern = sys.intern  # millions of rows, a few thousand words and speakers
            for i, r in enumerate(reader, 2):
                if not r:
                    continue
                split = fixed
                if split is None:
                    split = SETS.get(r[at].strip().lower())
                    if split is None:
                        raise ValueError(f"{path}, line {i}: SET {r[at]!r} is none of "
                                         f"TRAIN, DEV, TEST")
                rows.append((r[link].strip(), intern(r[word].strip()), intern(r[spk].strip()),
                             split))
    return rows


def load_mswc(root, task="12", seed=0, val_frac=0.1, test_frac=0.1, unknown_pct=10.0,
              silence_pct=10.0, min_clips: int = 1, name=None) -> Dataset:
    """Read one MSWC language (see the module docstring)."""
    root = Path(root)
    lang = language_folder(root)
    if lang is None:
        raise FileNotFoundError(f"{root}: no MSWC language folder (<lang>/clips/ and "
                                f"<lang>/<lang>_splits.csv or <lang>_train/_dev/_test.csv)")
    rows = read_rows(lang)
    if not rows:
        raise FileNotFoundError(f"{lang}: the split lists name no clip")
    clips_dir = lang / "clips"
    notes = [f"MSWC language {lang.name!r}: {len(rows)} clips listed"]
    no_speaker = sum(1 for r in rows if not r[2])
    if no_speaker:
        notes.append(f"{no_speaker} listed clips have no SPEAKER and were left out (their "
                     f"speaker-disjointness cannot be checked)")
        rows = [r for r in rows if r[2]]
    if min_clips > 1:
        few = {w for w, n in collections.Counter(r[1] for r in rows).items() if n < min_clips}
        if few:
            rows = [r for r in rows if r[1] not in few]
            notes.append(f"{len(few)} words with fewer than {min_clips} clips left out")
    if not rows:
        raise ValueError(f"{lang}: no word has {min_clips} or more clips with a speaker")
    words = sorted({r[1] for r in rows})
    mode, wanted = parse_task(task, words)
    if mode == "12":
        wanted = [w for w in WORDS12 if w in words]
        if not wanted:
            raise ValueError(f"{lang}: task 12 needs the Speech Commands words "
                             f"({', '.join(WORDS12)}); none is in this language's lists. "
                             f"Use --task all or a word list")
    where = collections.defaultdict(set)
    for _, _, spk, split in rows:
        where[spk].add(split)
    shared = sum(1 for s in where.values() if len(s) > 1)
    if shared:
        by_speaker = split_groups([r[2] for r in rows], seed, val_frac, test_frac)
        rows = [(link, w, spk, by_speaker[spk]) for link, w, spk, _ in rows]
        notes.append(f"split: the published split puts {shared} speakers in two splits; "
                     f"re-split by speaker (seed {seed}, val {val_frac}, test {test_frac})")
    else:
        notes.append("split: the published MSWC split (speaker-disjoint)")
    _check_present(clips_dir, rows)
    base = str(clips_dir) + os.sep  # a string join: pathlib is most of the time on millions
    entries = [(base + link, w, spk, split) for link, w, spk, split in rows]
    noise = [str(p) for d in (lang, lang.parent) for p in list_audio(d / BACKGROUND)]
    clips, labels, more = task_clips(entries, mode, wanted, noise, np.random.default_rng(seed),
                                     unknown_pct, silence_pct, val_frac, test_frac)
    return Dataset(clips, labels, noise, name or f"mswc-{lang.name}", "mswc", str(lang),
                   notes=notes + more)


def _check_present(clips_dir: Path, rows, sample: int = 20) -> None:
    """Fail early, naming a file, when the lists point where no clip is (a wrong folder or
    a half-unpacked archive); statting millions of files is left to the readers."""
    picked = rows[::max(1, len(rows) // sample)]
    missing = [clips_dir / r[0] for r in picked if not (clips_dir / r[0]).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{clips_dir}: {len(missing)} of {len(picked)} sampled clips named by the "
            f"split lists are missing, e.g. {missing[0]}; unpack the language's audio archive "
            f"so that <lang>/clips/<word>/ holds its clips")
