"""Free Spoken Digit Dataset: ``<digit>_<speaker>_<n>.wav`` in one folder, 8 kHz, under 1 s."""
from __future__ import annotations

import re
from pathlib import Path

from .base import UNKNOWN, Clip, Dataset, list_audio
from .splits import split_groups

FSDD_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[A-Za-z][\w-]*?)_(?P<n>\d+)\.(wav|flac|ogg)$",
                       re.IGNORECASE)


def fsdd_files(root: Path) -> list[tuple[Path, re.Match]]:
    out = []
    for p in list_audio(root):
        m = FSDD_NAME.match(p.name)
        if m:
            out.append((p, m))
    return out


def is_fsdd(root: Path) -> bool:
    """Most audio files directly in ``root`` follow the FSDD naming."""
    files = list_audio(root)
    return bool(files) and len(fsdd_files(root)) >= 0.9 * len(files)


def load_fsdd(root, task=None, seed=0, val_frac=0.1, test_frac=0.1, name=None) -> Dataset:
    """Labels are the digits ``"0"``..``"9"``. ``task``: ``all`` (default) or a digit list
    such as ``"1,2,3"`` (the other digits become ``_unknown_``). Split by speaker."""
    root = Path(root)
    files = fsdd_files(root)
    if not files:
        raise FileNotFoundError(f"{root}: no FSDD files (<digit>_<speaker>_<n>.wav)")
    digits = sorted({m.group("digit") for _, m in files})
    t = "all" if task is None else str(task).strip().lower()
    if t in ("all", "35", ""):
        labels, wanted = digits, set(digits)
    elif t == "12":
        raise ValueError(f"{root}: task 12 is the Speech Commands task; FSDD has digits only "
                         f"(use task 'all' or a digit list such as '1,2,3')")
    else:
        words = [w.strip() for w in str(task).split(",") if w.strip()]
        bad = [w for w in words if w not in digits]
        if bad:
            raise ValueError(f"task {task!r}: FSDD has no digit {', '.join(bad)} "
                             f"(available: {', '.join(digits)})")
        wanted = set(words)
        labels = ([UNKNOWN] if wanted != set(digits) else []) + words
    by_speaker = split_groups([m.group("speaker") for _, m in files], seed, val_frac, test_frac)
    clips = []
    for p, m in files:
        d, spk = m.group("digit"), m.group("speaker")
        clips.append(Clip(str(p), d if d in wanted else UNKNOWN, spk, by_speaker[spk], d))
    notes = [f"split: by speaker (seed {seed}, val {val_frac}, test {test_frac})"]
    other = len(list_audio(root)) - len(files)
    if other:
        notes.append(f"{other} audio files do not follow <digit>_<speaker>_<n> and were ignored")
    return Dataset(clips, labels, [], name or root.name, "fsdd", str(root), notes=notes)
