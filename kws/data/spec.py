"""Dataset SPEC strings: a path, auto-detected, or ``sc:PATH``, ``fsdd:PATH``, ``mswc:PATH``,
``folder:PATH``; transcribed corpora (``kaldi:``, ``librispeech:``, ``commonvoice:``, see
:mod:`.transcripts`) are detected too, and named as the input of ``kws data words``."""
from __future__ import annotations

import os
from pathlib import Path

from .base import Dataset
from .folder import is_folder_dataset, load_folder
from .fsdd import is_fsdd, load_fsdd
from .mswc import is_mswc, load_mswc
from .speech_commands import (is_prepared_test, is_speech_commands, load_prepared_test,
                              load_speech_commands)
from .transcripts import KINDS as TRANSCRIBED
from .transcripts import detect_corpus

KINDS = ("sc", "fsdd", "mswc", "folder") + TRANSCRIBED


class DatasetError(ValueError):
    """A SPEC that names no readable dataset; the message says what was expected."""


def parse_spec(spec: str | os.PathLike) -> tuple[str | None, Path]:
    """``(kind or None, path)``; ``~`` and environment variables are expanded."""
    s = str(spec)
    kind = None
    head, sep, rest = s.partition(":")
    if sep and head.lower() in KINDS and not (len(head) == 1 and os.name == "nt"):
        kind, s = head.lower(), rest
    return kind, Path(os.path.expandvars(os.path.expanduser(s)))


def same_dataset(recorded, spec) -> bool:
    """Whether SPEC names the dataset a model recorded as its training data (``recorded``, a
    SPEC as ``kws train`` saved it; None = unknown -> False).

    Paths are compared resolved. A relative ``recorded`` path was relative to wherever training
    ran, so it also matches any path that ends with its components after the leading ``..``:
    ``../shared/data/speech_commands_v2_test`` matches ``/ci/shared/data/speech_commands_v2_test``
    (the same folder seen from another clone), not ``/home/me/my_words``.
    """
    if not recorded:
        return False
    if isinstance(recorded, (list, tuple)):  # a run trained on several corpora
        return any(same_dataset(r, spec) for r in recorded)
    _, rec = parse_spec(recorded)
    _, got = parse_spec(spec)
    got = got.resolve()
    if rec.resolve() == got:
        return True
    if rec.is_absolute():
        return False
    tail = [p for p in rec.parts if p not in ("..", ".")]
    return bool(tail) and list(got.parts[-len(tail):]) == tail


def detect_kind(path: Path) -> str:
    """``sc_test`` | ``sc`` | ``fsdd`` | ``mswc`` | ``folder`` for a dataset folder, or
    ``kaldi`` | ``librispeech`` | ``commonvoice`` for a transcribed corpus (sentences, not
    words: :func:`load_dataset` refuses it and says how to cut it into words)."""
    if not path.exists():
        raise DatasetError(f"dataset {path} does not exist")
    if not path.is_dir():
        raise DatasetError(f"dataset {path} is a file; give the dataset's folder")
    if is_prepared_test(path):
        return "sc_test"
    if is_speech_commands(path):
        return "sc"
    if is_fsdd(path):
        return "fsdd"
    if is_mswc(path):
        return "mswc"
    corpus = detect_corpus(path)
    if corpus:
        return corpus
    if is_folder_dataset(path):
        return "folder"
    raise DatasetError(
        f"{path}: not a dataset I can read. Expected Speech Commands (word folders, "
        f"testing_list.txt, _background_noise_), the prepared test layout (_silence_/_unknown_), "
        f"FSDD (<digit>_<speaker>_<n>.wav), MSWC (<lang>/clips/, <lang>/<lang>_splits.csv) or "
        f"one folder per class (root/<label>/*.wav); or a transcribed corpus to cut into "
        f"words with `kws data words` (Kaldi wav.scp/text, LibriSpeech *.trans.txt, Common "
        f"Voice validated.tsv)")


def load_dataset(spec, task=None, seed: int = 0, val_frac: float = 0.1,
                 test_frac: float = 0.1, unknown_pct: float = 10.0,
                 silence_pct: float = 10.0) -> Dataset:
    """Read the dataset SPEC names and split it.

    ``task``: ``"12"`` (default for Speech Commands), ``"35"``/``"all"``, or a comma list of
    words. FSDD and folder datasets default to ``all``. Splits are speaker-disjoint wherever the
    file names carry a speaker; Speech Commands archives use their official lists when present.
    ``unknown_pct``/``silence_pct`` apply where ``_unknown_``/``_silence_`` are drawn (Speech
    Commands archives); the prepared test layout keeps its own folders as they are.

    ``spec`` may also be a list of SPECs (``kws train --data A --data B``): each corpus is read
    and split on its own, then joined by :func:`bnnkws.kws.data.multi.merge` (speakers one
    corpus holds out never train through another).
    """
    if isinstance(spec, (list, tuple)):
        from .multi import MergeError, merge

        specs = [str(s) for s in spec]
        if len(specs) == 1:
            return load_dataset(specs[0], task, seed, val_frac, test_frac, unknown_pct,
                                silence_pct)
        parts = [load_dataset(s, task, seed, val_frac, test_frac, unknown_pct, silence_pct)
                 for s in specs]
        try:
            return merge(parts, specs)
        except MergeError as e:
            raise DatasetError(str(e)) from e
    kind, path = parse_spec(spec)
    if kind is None:
        kind = detect_kind(path)
    elif not path.is_dir():
        raise DatasetError(f"dataset {path} does not exist or is not a folder")
    if kind in TRANSCRIBED:
        raise DatasetError(f"{path}: a transcribed corpus ({kind}), sentences rather than "
                           f"words; cut it into words first (kws data words {spec} --out "
                           f"DIR), then use mswc:DIR")
    try:
        if kind in ("sc", "sc_test"):
            if is_prepared_test(path):
                return load_prepared_test(path, task, seed, val_frac, test_frac)
            return load_speech_commands(path, task, seed, val_frac, test_frac,
                                        unknown_pct, silence_pct)
        if kind == "fsdd":
            return load_fsdd(path, task, seed, val_frac, test_frac)
        if kind == "mswc":
            return load_mswc(path, task, seed, val_frac, test_frac, unknown_pct, silence_pct)
        return load_folder(path, task, seed, val_frac, test_frac)
    except FileNotFoundError as exc:
        raise DatasetError(str(exc)) from exc
