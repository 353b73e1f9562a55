"""Several corpora as one dataset: each keeps its own speaker-disjoint split, and no speaker held
out by one corpus trains through another.

``kws train --data A --data B`` reads A and B with the same task and split seed and joins them
clip by clip. Each corpus' split is its own (published lists where it has them, by speaker
otherwise), so two corpora that share speakers (Speech Commands folders from one archive, say)
could put one person in A's test split and B's training split; :func:`merge` keeps each
speaker on the side the first corpus put them, drops the later corpora's clips that disagree
and says how many, so the test figures stay on voices the model never heard. What came from where is kept in :func:`sources`, per corpus,
split and label, for the run to record.
"""
from __future__ import annotations

from collections import Counter

from .base import Clip, Dataset


class MergeError(ValueError):
    """Corpora that cannot train one model together; the message names the corpus at fault."""


def merge(datasets: list[Dataset], specs: list[str]) -> Dataset:
    """One :class:`Dataset` from ``datasets`` (read from ``specs``, same task).

    The labels are those of the corpus with the most; the others' must be among them. The
    first corpus' split is authoritative (it is the one a run is scored on): a speaker belongs
    to the split of the first corpus that has them, and a later corpus' clips of that speaker
    in another split are dropped, so no speaker is ever on two sides. ``notes`` say per corpus
    what was kept and dropped.
    """
    if not datasets:
        raise MergeError("no dataset to merge")
    # The task's order is the fullest corpus' (Speech Commands' extra folders have no on/off,
    # so their 12-class task has 10 labels): a corpus may lack labels, but not bring new ones.
    full = max(range(len(datasets)), key=lambda i: len(datasets[i].labels))
    labels = list(datasets[full].labels)
    for ds, spec in zip(datasets, specs):
        extra = [lab for lab in ds.labels if lab not in labels]
        if extra:
            raise MergeError(f"{spec}: labels {extra} are not in {specs[full]}'s {labels}; "
                             f"corpora trained together need the same task")
    owner: dict[str, str] = {}  # speaker -> the split the first corpus that has them gave
    clips: list[Clip] = []
    noise: list[str] = []
    notes: list[str] = []
    problems: list = []
    for ds, spec in zip(datasets, specs):
        dropped = Counter()
        for c in ds.clips:
            if c.speaker is not None and owner.get(c.speaker, c.split) != c.split:
                dropped[c.split] += 1
                continue
            clips.append(c)
        for c in ds.clips:
            if c.speaker is not None:
                owner.setdefault(c.speaker, c.split)
        noise += [p for p in ds.noise_paths if p not in noise]
        problems += ds.problems
        kept = Counter(c.split for c in ds.clips) - dropped
        notes.append(f"{spec}: {kept['train']} train / {kept['validation']} validation / "
                     f"{kept['testing']} testing clips"
                     + (f"; dropped {dropped['train']} train / {dropped['validation']} "
                        f"validation / {dropped['testing']} testing clips of speakers an "
                        f"earlier corpus puts in another split" if dropped else ""))
        notes += [f"{spec}: {n}" for n in ds.notes]
    return Dataset(clips, labels, noise, name=" + ".join(d.name or s for d, s in
                                                             zip(datasets, specs)),
                   kind="multi", root=str(specs[0]), problems=problems, notes=notes)


def sources(datasets: list[Dataset], specs: list[str], merged: Dataset) -> dict:
    """``{spec: {split: {label: clips}}}`` of what the merged dataset kept from each corpus."""
    kept = {id(c) for c in merged.clips}
    out = {}
    for ds, spec in zip(datasets, specs):
        table = {s: Counter() for s in ("train", "validation", "testing")}
        for c in ds.clips:
            if id(c) in kept:
                table[c.split][c.label] += 1
        out[str(spec)] = {s: dict(sorted(t.items())) for s, t in table.items()}
    return out
