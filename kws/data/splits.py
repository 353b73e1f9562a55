"""Speaker-disjoint train/validation/testing splits, deterministic for a seed."""
from __future__ import annotations

import collections
import hashlib

import numpy as np


def check_fractions(val_frac: float, test_frac: float) -> None:
    for name, v in (("val_frac", val_frac), ("test_frac", test_frac)):
        if not 0.0 <= v < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {v}")
    if val_frac + test_frac >= 1.0:
        raise ValueError(f"val_frac + test_frac must leave clips for training, got "
                         f"{val_frac} + {test_frac}")


def split_groups(groups, seed: int = 0, val_frac: float = 0.1,
                 test_frac: float = 0.1) -> dict[str, str]:
    """Assign each group (speaker) to a split so clip fractions come close to the targets.

    ``groups`` is one group id per clip (repeats count as that group's clips). Groups are
    shuffled with ``seed`` and dealt to testing, then validation, until each holds its share of
    *clips*; the rest train. Every non-zero fraction gets at least one group while at least one
    group is left for training (FSDD has only four speakers). Returns ``{group: split}``.
    """
    check_fractions(val_frac, test_frac)
    sizes = collections.Counter(groups)
    names = sorted(sizes)
    if not names:
        return {}
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    total = sum(sizes.values())
    out: dict[str, str] = {}
    i = 0
    for split, frac in (("testing", test_frac), ("validation", val_frac)):
        if frac <= 0:
            continue
        target, got = frac * total, 0
        # Always take one group, then stop at the group that brings us closest to the target.
        while i < len(order) - 1:
            n = sizes[order[i]]
            if got > 0 and abs(got + n - target) >= abs(got - target):
                break
            out[order[i]] = split
            got += n
            i += 1
    for g in order[i:]:
        out[g] = "train"
    return out


def split_items(keys, seed: int = 0, val_frac: float = 0.1, test_frac: float = 0.1) -> dict:
    """Split items that have no speaker (silence windows) by a stable hash of their key.

    Items are ordered by ``sha256(seed:key)``; the first ``round(test_frac * n)`` go to
    testing, the next ``round(val_frac * n)`` to validation, the rest train: exact shares, and
    adding or removing a file moves at most the items at the boundaries.
    """
    check_fractions(val_frac, test_frac)
    keys = list(dict.fromkeys(keys))
    order = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).digest())
    n_test, n_val = round(test_frac * len(keys)), round(val_frac * len(keys))
    out = {}
    for i, k in enumerate(order):
        out[k] = "testing" if i < n_test else "validation" if i < n_test + n_val else "train"
    return out
