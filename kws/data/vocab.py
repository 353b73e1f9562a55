"""The auxiliary vocabulary: every word the training data can name, beyond the task's labels.

The task head sees ``_unknown_`` as one class, so a backbone trained on it alone learns that
all non-command words (the digits among them) are one thing and its deep embeddings collapse
onto the 12 classes. Auxiliary heads, one per exit and training-only, classify each clip by
its *word*: the source word of every ``_unknown_`` clip, the command words themselves, and
the words of extra corpora (Speech Commands v0.01, FSDD digits as ``zero``..``nine``, a
``kws synth`` folder). Words in the *holdout* list never get an auxiliary class, so the
transfer benchmark (``kws bench-transfer``) can measure them as new words.

No TensorFlow here; numpy only for the label arrays.
"""
from __future__ import annotations

import collections
import dataclasses
import numpy as np

from bnnkws.kws.data.base import BACKGROUND, SILENCE, UNKNOWN, Clip

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Held out of the auxiliary vocabulary by default: the ten digits (FSDD is the transfer
# benchmark's new-word corpus: 4 speakers x 50 clips of each digit) and five v0.01 words.
HOLDOUT_V1_WORDS = ("bird", "dog", "house", "tree", "wow")
DEFAULT_HOLDOUT = DIGIT_WORDS + HOLDOUT_V1_WORDS
# The words `kws bench-transfer` learns by default: held out of the auxiliary vocabulary *and*
# not a word of speech_commands_extra, whose bird, four, five and eight (1,650-2,300 clips
# each) a multi-corpus run trains as `_unknown_`. What is left is in training only as a few
# `_unknown_` clips of the Speech Commands subset (6-22 each), as for every earlier model.
TRANSFER_DIGITS = ("zero", "one", "two", "three", "six", "seven", "nine")
TRANSFER_V1_WORDS = ("dog", "house", "tree", "wow")
# Task label of an --aux-synth clip whose word is not a task label: it trains its auxiliary
# word only (pipeline.label_indices maps it to -1, which the task losses mask: train.sparse_ce).
AUX_ONLY = "_aux_only_"


def clip_word(clip: Clip) -> str | None:
    """The spoken word of a clip (lower case; FSDD digit ``"3"`` -> ``"three"``), or ``None``
    for silence/noise windows and clips whose word is not known."""
    src = (clip.source or "").strip()
    if not src or src in (SILENCE, BACKGROUND, UNKNOWN):
        return None
    if len(src) == 1 and src.isdigit():
        return DIGIT_WORDS[int(src)]
    return src.lower()


def extra_clips(specs, task_labels, exclude_speakers=(), holdout=DEFAULT_HOLDOUT,
                aux_only=()):
    """Clips of the extra corpora ``specs`` (dataset SPECs, every split) for training.

    Each keeps its word as ``source``; its task label is the word when it is one of
    ``task_labels``, else ``_unknown_`` (skipped when the task has no ``_unknown_``); for the
    corpora in ``aux_only`` (synthetic speech: hundreds of words would swamp ``_unknown_``)
    it is :data:`AUX_ONLY` instead, so such a clip trains only its auxiliary word. Clips of
    ``holdout`` words, of no known word, and of speakers in ``exclude_speakers`` (the task's
    validation and test speakers: the split must stay speaker-disjoint) are left out; so are
    clips without a speaker, whose disjointness cannot be checked. Returns ``(clips, notes)``.
    """
    from bnnkws.kws.data.spec import load_dataset

    task_labels = list(task_labels)
    holdout = {w.lower() for w in holdout}
    exclude = set(exclude_speakers)
    out, notes = [], []
    aux_only = {str(x) for x in aux_only}
    for spec in list(specs or []) + sorted(aux_only - set(map(str, specs or []))):
        ds = load_dataset(spec, task="all")
        other = AUX_ONLY if str(spec) in aux_only else UNKNOWN  # task label of non-task words
        kept = dropped_spk = dropped_word = 0
        for c in ds.clips:
            w = clip_word(c)
            if w is None or w in holdout:
                dropped_word += 1
                continue
            if c.speaker is None or c.speaker in exclude:
                dropped_spk += 1
                continue
            label = w if w in task_labels else other
            if label not in task_labels and label != AUX_ONLY:
                dropped_word += 1
                continue
            out.append(dataclasses.replace(c, label=label, split="train", source=w))
            kept += 1
        notes.append(f"{spec}: {kept} extra training clips ({dropped_word} held-out/unnamed "
                     f"words, {dropped_spk} of validation/test or unknown speakers left out)")
    return out, notes


def vocabulary(clips, holdout=DEFAULT_HOLDOUT, min_clips: int = 1) -> list[str]:
    """Sorted words of ``clips`` outside ``holdout`` with at least ``min_clips`` clips: the
    auxiliary heads' classes."""
    holdout = {w.lower() for w in holdout}
    n = collections.Counter(w for w in map(clip_word, clips) if w is not None)
    return sorted(w for w, k in n.items() if k >= min_clips and w not in holdout)


def aux_indices(clips, vocab) -> np.ndarray:
    """Per clip its index in ``vocab``, -1 where it has none (silence, held-out words)."""
    index = {w: i for i, w in enumerate(vocab)}
    return np.array([index.get(clip_word(c), -1) for c in clips], dtype=np.int32)


def describe(vocab, clips, holdout, notes=()) -> dict:
    """What ``aux_vocab.json`` records: the classes, their training counts, the holdout."""
    idx = aux_indices(clips, vocab)
    counts = np.bincount(idx[idx >= 0], minlength=len(vocab))
    return {"words": list(vocab), "train_counts": {w: int(n) for w, n in zip(vocab, counts)},
            "holdout": sorted(set(holdout)), "unlabelled_train_clips": int((idx < 0).sum()),
            "notes": list(notes)}

