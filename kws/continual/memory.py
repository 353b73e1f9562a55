"""The bundle's replay memory: 1-bit head inputs of every exit, class-balanced (numpy only).

Every exit head of a binary bundle computes ``logits = scale * (sign(e) @ sign(K)) + bias`` (or,
once enrolled, ``sign(e) @ W + b``): it sees only the sign of its embedding ``e`` (sign(0) =
+1). Storing that sign as one bit per value is therefore *exact*: the stored sample gives the
head the very logits the clip gave it. A sample holds the bits of all exits side by side
(``sum_k D_k`` bits, packed with :func:`bnnkws.kws.continual.replay.pack_bits`), so every head can
rehearse the old words while it learns a new one.

The memory is a class-balanced reservoir (thesis Algorithm 4, :class:`ReplayMemory`) over the
training split: every class gets an (almost) equal share of ``capacity``, ``_silence_`` and
``_unknown_`` included. Each sample also keeps its *source word* (the word an ``_unknown_`` clip
really is, ``_background_noise_`` for a silence window) and its *kind* (from the training split,
an enrolled take, a user negative), so that enrolling a word the memory holds as ``_unknown_``
moves those samples to the new word, and forgetting it moves them back.

Beside the latents the memory keeps a few raw background-noise windows (int16) that enrolment
mixes into its augmented takes.

File format (``memory.npz``, ``allow_pickle=False``): ``bits (n, B) uint8``, ``label (n,)``,
``source (n,)``, ``kind (n,)`` int16 indices into ``classes`` / ``sources`` / ``KINDS``,
``classes``, ``sources`` (unicode), ``exits``, ``dims``, ``capacity``, ``seen_classes``,
``seen_counts``, ``noise (m, samples) int16``, ``sample_rate``, ``version``.
"""
from __future__ import annotations

import io
from typing import Iterable, Optional, Sequence

import numpy as np

from bnnkws.kws.continual.replay import ReplayMemory, pack_bits, unpack_bits

MEMORY_VERSION = 1
KINDS = ("train", "enrolled", "negative")
NOISE_SOURCE = "_background_noise_"


class MemoryError_(ValueError):
    """A damaged or mismatched memory file; the message names it."""


class LatentMemory:
    """Per-exit 1-bit head inputs in one class-balanced reservoir, with source words and kinds.

    ``exits`` are the 1-based exit numbers, ``dims`` their head input sizes ``D_k``.
    """

    def __init__(self, exits: Sequence[int], dims: Sequence[int], capacity: int, *,
                 seed: int = 0, sample_rate: int = 16000):
        if len(exits) != len(dims) or not exits:
            raise ValueError(f"exits {list(exits)} and dims {list(dims)} disagree")
        self.exits = [int(k) for k in exits]
        self.dims = [int(d) for d in dims]
        self.sample_rate = int(sample_rate)
        self.classes: list = []
        self.sources: list = []
        self.noise = np.zeros((0, self.sample_rate), np.int16)
        # meta columns: source index, kind index
        self.store = ReplayMemory(capacity, (sum(self.dims),), seed=seed, meta_fields=2)
        self._rng = np.random.default_rng(seed + 1)
        # Training samples an enrolment pushed out of the full reservoir, kept so that
        # forgetting the word puts them back: rows of (bits, class, source, kind, displacer),
        # the displacer being the source word of the sample that took the slot.
        self.parked = _empty_parked(self.store.bits.shape[1])

    # -- bookkeeping ------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.store.capacity

    def __len__(self) -> int:
        return self.store.size

    def _id(self, table: list, name: str) -> int:
        name = str(name)
        if name not in table:
            table.append(name)
        return table.index(name)

    @property
    def labels(self) -> np.ndarray:
        """Class name of every stored sample, ``(n,)`` str."""
        return np.array([self.classes[i] for i in self.store.labels[:len(self)]], dtype=str)

    @property
    def source_words(self) -> np.ndarray:
        return np.array([self.sources[i] for i in self.store.meta[:len(self), 0]], dtype=str)

    @property
    def kinds(self) -> np.ndarray:
        return np.array([KINDS[i] for i in self.store.meta[:len(self), 1]], dtype=str)

    def counts(self) -> dict:
        """``{class name: stored samples}``."""
        names, n = np.unique(self.labels, return_counts=True)
        return {str(a): int(b) for a, b in zip(names, n)}

    @property
    def nbytes(self) -> int:
        return len(self.to_bytes())

    # -- filling ----------------------------------------------------------------------------
    def add(self, feats: Sequence[np.ndarray], labels: Iterable[str],
            sources: Optional[Iterable[str]] = None, kind: str = "train") -> None:
        """Offer samples to the reservoir: ``feats`` per exit ``(n, D_k)`` (embeddings or
        head inputs: only their sign is kept), one class name (and source word) each."""
        x = self._concat(feats)
        labels = [str(v) for v in labels]
        sources = labels if sources is None else [str(v) for v in sources]
        if not len(labels) == len(sources) == len(x):
            raise ValueError(f"{len(x)} samples, {len(labels)} labels, {len(sources)} sources")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        packed = pack_bits(x)
        k = KINDS.index(kind)
        s = self.store
        train = KINDS.index("train")
        parked = []  # (slot contents, displacer) of training samples pushed out

        def park(slot):
            if kind != "train" and s.meta[slot, 1] == train:
                parked.append((s.bits[slot].copy(), s.labels[slot], s.meta[slot].copy(), by))

        for row, lab, src in zip(packed, labels, sources):
            by = self._id(self.sources, src)
            s.offer(row, None, self._id(self.classes, lab), (by, k), on_replace=park)
        if parked:
            bits, lab, meta, by_ = zip(*parked)
            p = self.parked
            self.parked = {"bits": np.concatenate([p["bits"], np.stack(bits)]),
                           "label": np.concatenate([p["label"], np.array(lab, np.int32)]),
                           "meta": np.concatenate([p["meta"], np.stack(meta).astype(np.int32)]),
                           "by": np.concatenate([p["by"], np.array(by_, np.int32)])}

    def restore_parked(self, sources: Iterable[str]) -> int:
        """Put back the training samples displaced by samples of these source words (as
        far as the reservoir has room) and forget the rest of them; returns how many."""
        ids = [self.sources.index(w) for w in sources if w in self.sources]
        p = self.parked
        mine = np.isin(p["by"], ids)
        s = self.store
        room = s.capacity - s.size
        back = np.flatnonzero(mine)[:room]
        for i in back:
            s._write(s.size, p["bits"][i], None, int(p["label"][i]), p["meta"][i])
            s.size += 1
        self.parked = {k: v[~mine] for k, v in p.items()}
        return int(len(back))

    def _concat(self, feats) -> np.ndarray:
        if len(feats) != len(self.dims):
            raise ValueError(f"{len(feats)} exits of features, memory has {len(self.dims)}")
        for f, d, k in zip(feats, self.dims, self.exits):
            if np.asarray(f).ndim != 2 or np.asarray(f).shape[1] != d:
                raise ValueError(f"exit {k}: features {np.asarray(f).shape}, memory holds "
                                 f"{d} values per sample")
        return np.concatenate([np.asarray(f, np.float32) for f in feats], axis=1)

    def set_noise(self, windows: np.ndarray) -> None:
        """Raw noise windows ``(m, samples)`` float in [-1, 1] (kept as int16)."""
        w = np.clip(np.asarray(windows, np.float32), -1.0, 32767 / 32768)
        self.noise = np.round(w * 32768).astype(np.int16).reshape(len(w), -1)

    def noise_float(self) -> np.ndarray:
        return self.noise.astype(np.float32) / 32768.0

    # -- reading ----------------------------------------------------------------------------
    def head_inputs(self, idx=None) -> list:
        """Per exit ``(n, D_k)`` float32 in {-1, +1}: exactly what each head saw."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx, np.int64)
        x = unpack_bits(self.store.bits[idx], (sum(self.dims),))
        cuts = np.cumsum(self.dims)[:-1]
        return np.split(x, cuts, axis=1)

    # -- editing ----------------------------------------------------------------------------
    def relabel(self, mask: np.ndarray, label: str) -> int:
        """Give the samples in ``mask`` the class ``label``; returns how many moved."""
        mask = np.asarray(mask, bool)
        n = int(mask.sum())
        if n:
            c = self._id(self.classes, label)
            self.store.labels[:len(self)][mask] = c
            self.store.seen[c] = self.store.seen.get(c, 0) + n
        return n

    def remove(self, mask: np.ndarray) -> int:
        """Drop the samples in ``mask`` (the rest keep their order)."""
        mask = np.asarray(mask, bool)
        keep = np.flatnonzero(~mask)
        n = len(self) - len(keep)
        s = self.store
        m = len(keep)
        s.bits[:m], s.labels[:m], s.meta[:m] = s.bits[keep], s.labels[keep], s.meta[keep]
        s.labels[m:] = -1
        s.size = m
        return n

    def copy(self) -> "LatentMemory":
        return LatentMemory.from_bytes(self.to_bytes())

    # -- storage ----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        n = len(self)
        s = self.store
        seen = sorted(s.seen.items())
        buf = io.BytesIO()
        np.savez(buf, version=np.int32(MEMORY_VERSION), bits=s.bits[:n],
                 label=s.labels[:n].astype(np.int16), source=s.meta[:n, 0].astype(np.int16),
                 kind=s.meta[:n, 1].astype(np.int8),
                 classes=np.array(self.classes, dtype=str).reshape(-1),
                 sources=np.array(self.sources, dtype=str).reshape(-1),
                 exits=np.array(self.exits, np.int32), dims=np.array(self.dims, np.int32),
                 capacity=np.int32(self.capacity),
                 seen_classes=np.array([c for c, _ in seen], np.int32),
                 seen_counts=np.array([k for _, k in seen], np.int64),
                 noise=self.noise, sample_rate=np.int32(self.sample_rate),
                 parked_bits=self.parked["bits"], parked_label=self.parked["label"],
                 parked_meta=self.parked["meta"], parked_by=self.parked["by"])
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "memory") -> "LatentMemory":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                if int(z["version"]) != MEMORY_VERSION:
                    raise MemoryError_(f"{name}: memory format {int(z['version'])}, this "
                                       f"bnn-kws reads {MEMORY_VERSION}; rebuild it with "
                                       f"`kws memory build`")
                mem = cls(z["exits"].tolist(), z["dims"].tolist(), int(z["capacity"]),
                          sample_rate=int(z["sample_rate"]))
                n = len(z["label"])
                s = mem.store
                s.bits[:n] = z["bits"]
                s.labels[:n] = z["label"]
                s.meta[:n, 0], s.meta[:n, 1] = z["source"], z["kind"]
                s.size = n
                s.seen = {int(c): int(k) for c, k in zip(z["seen_classes"], z["seen_counts"])}
                mem.classes = [str(c) for c in z["classes"]]
                mem.sources = [str(c) for c in z["sources"]]
                mem.noise = np.asarray(z["noise"], np.int16)
                if "parked_bits" in z.files:  # memories written before parking have none
                    mem.parked = {"bits": np.asarray(z["parked_bits"], np.uint8),
                                  "label": np.asarray(z["parked_label"]),
                                  "meta": np.asarray(z["parked_meta"]),
                                  "by": np.asarray(z["parked_by"])}
        except MemoryError_:
            raise
        except (OSError, ValueError, KeyError) as e:
            raise MemoryError_(f"{name}: cannot read the replay memory ({e})") from e
        return mem


# ---------------------------------------------------------------------------------------------
# replay draws
# ---------------------------------------------------------------------------------------------
def _empty_parked(row_bytes: int) -> dict:
    return {"bits": np.zeros((0, row_bytes), np.uint8), "label": np.zeros(0, np.int32),
            "meta": np.zeros((0, 2), np.int32), "by": np.zeros(0, np.int32)}


def class_members(y: np.ndarray) -> list:
    """``[(class, indices of y in that class), ...]``: what :func:`balanced_draw` draws from."""
    y = np.asarray(y)
    return [(c, np.flatnonzero(y == c)) for c in np.unique(y)]


def balanced_draw(y: np.ndarray, k: int, rng, members: list = None) -> np.ndarray:
    """``k`` indices into ``y``, the classes taking turns (random order, random member).

    Each class appears ``floor(k / C)`` or ``ceil(k / C)`` times whatever its size, so a class
    with 3 samples is replayed as often as one with 300 (with repetition if it must).
    ``members`` (:func:`class_members` of ``y``) saves recomputing the classes on every draw.
    """
    if k <= 0 or len(y) == 0:
        return np.zeros(0, np.int64)
    members = class_members(y) if members is None else members
    c = len(members)
    turns = np.concatenate([rng.permutation(c) for _ in range(-(-k // c))])[:k]
    sizes = np.array([len(m) for _, m in members])
    pick = (rng.random(k) * sizes[turns]).astype(np.int64)
    return np.array([members[t][1][p] for t, p in zip(turns, pick)], np.int64)


__all__ = ["LatentMemory", "MemoryError_", "KINDS", "NOISE_SOURCE", "balanced_draw",
           "class_members"]
