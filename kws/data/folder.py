"""Folder per class (``root/<label>/*.wav|flac|ogg``): a user's own recordings.

The speaker comes from a Speech Commands style name (``<speaker>_nohash_<n>.wav``, which is
also what ``kws synth`` writes) or from a sub-folder (``root/<label>/<speaker>/*.wav``).
Files with neither are split one by one (stable hash of the path), noted in the dataset.
"""
from __future__ import annotations

import os
from pathlib import Path

from .base import BACKGROUND, UNKNOWN, Clip, Dataset, list_audio, speaker_from_name
from .splits import split_groups, split_items


def class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and p.name != BACKGROUND and not p.name.startswith(".")
                  and _walk_audio(p))


def _walk_audio(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, _ in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += list_audio(Path(dirpath))
    return out


def is_folder_dataset(root: Path) -> bool:
    return root.is_dir() and bool(class_folders(root))


def load_folder(root, task=None, seed=0, val_frac=0.1, test_frac=0.1, name=None) -> Dataset:
    """``task``: ``all`` (default: every class folder) or a comma list of folders to keep as
    classes; other folders then become ``_unknown_``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    classes = class_folders(root)
    if not classes:
        raise FileNotFoundError(f"{root}: no class folders with audio (expected root/<label>/*.wav)")
    t = "all" if task is None else str(task).strip().lower()
    if t in ("all", "35", ""):
        labels, wanted = classes, set(classes)
    elif t == "12":
        raise ValueError(f"{root}: task 12 needs a Speech Commands layout (use the sc: prefix) "
                         f"or a word list; classes here: {', '.join(classes)}")
    else:
        words = [w.strip() for w in str(task).split(",") if w.strip()]
        bad = [w for w in words if w not in classes]
        if bad:
            raise ValueError(f"task {task!r}: no class folder {', '.join(bad)} "
                             f"(available: {', '.join(classes)})")
        wanted = set(words)
        labels = ([UNKNOWN] if (set(classes) - wanted) and UNKNOWN not in wanted else []) + words
    rows = []  # (path, label, speaker, source)
    for c in classes:
        base = root / c
        for p in _walk_audio(base):
            spk = speaker_from_name(p)
            if spk is None and p.parent != base:
                spk = p.parent.relative_to(base).parts[0]
            rows.append((str(p), c if c in wanted else UNKNOWN, spk, c))
    with_spk = [r for r in rows if r[2] is not None]
    loose = [r for r in rows if r[2] is None]
    by_speaker = split_groups([r[2] for r in with_spk], seed, val_frac, test_frac)
    by_file = split_items([os.path.relpath(r[0], root) for r in loose], seed, val_frac, test_frac)
    clips = [Clip(p, lab, spk, by_speaker[spk], src) for p, lab, spk, src in with_spk]
    clips += [Clip(p, lab, None, by_file[os.path.relpath(p, root)], src)
              for p, lab, _, src in loose]
    notes = [f"split: by speaker (seed {seed}, val {val_frac}, test {test_frac})"]
    if loose:
        notes.append(f"{len(loose)} files have no speaker in their name or folder: split by "
                     f"file, so the same voice may appear in two splits")
    noise = [str(p) for p in list_audio(root / BACKGROUND)]
    return Dataset(clips, labels, noise, name or root.name, "folder", str(root), notes=notes)
