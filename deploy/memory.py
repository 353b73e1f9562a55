"""Build, read and install a bundle's replay memory (``memory.npz``; numpy + interpreter).

The memory (:class:`bnnkws.kws.continual.memory.LatentMemory`) holds, for a class-balanced reservoir
of the model's *training split*, the 1-bit head input of every exit as the deployed stages compute
it, plus a few raw background-noise windows. It is built from the bundle alone plus the data
folder: the manifest records which data, task and split seed the model trained with
(``source.split``), so the same clips are selected without the training run. ``kws export``
writes it; ``kws memory build BUNDLE --data DIR`` adds or rebuilds it in an existing bundle
(atomically, through :func:`bnnkws.deploy.swap.commit`; every other file stays as it is).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np

from bnnkws.kws.continual.memory import NOISE_SOURCE, LatentMemory, MemoryError_

from .bundle import Bundle, BundleError

MEMORY = "memory.npz"
# 1,536 samples x 184 bytes (the shipped model's 64+128+256+512+512 bits) + 6 noise seconds
# (int16) is ~480 KiB: under the 512 KiB budget for the shipped bundle with room for a few
# enrolled words' takes.
DEFAULT_CAPACITY = 1536
DEFAULT_NOISE_WINDOWS = 6
MAX_BYTES_SHIPPED = 512 * 1024


class MemoryBuildError(ValueError):
    """Bad data or bundle for a memory build; the message names the file or value."""


def memory_file(bundle: Bundle) -> Optional[str]:
    info = bundle.manifest.get("memory") or {}
    name = info.get("file")
    return name if name and name in bundle.manifest.get("files", {}) else None


def read_memory(bundle: Bundle) -> Optional[LatentMemory]:
    """The bundle's memory (hash already verified by Bundle.load), or None if it has none."""
    name = memory_file(bundle)
    if name is None:
        return None
    path = bundle.path / name
    try:
        mem = LatentMemory.from_bytes(path.read_bytes(), str(path))
    except OSError as e:
        raise BundleError(f"{path}: cannot read the replay memory ({e})") from e
    dims = [int(bundle.heads[k]["kernel"].shape[0]) for k in bundle.exits]
    if mem.exits != bundle.exits or mem.dims != dims:
        raise BundleError(f"{path}: memory holds exits {mem.exits} of sizes {mem.dims}, the "
                          f"bundle's heads are exits {bundle.exits} of sizes {dims}; rebuild it "
                          f"with `kws memory build {bundle.path}`")
    return mem


def memory_info(mem: LatentMemory, nbytes: int, built_from: Optional[dict] = None,
                previous: Optional[dict] = None) -> dict:
    """The manifest's ``memory`` entry."""
    info = dict(previous or {})
    info.update({"file": MEMORY, "samples": len(mem), "capacity": mem.capacity,
                 "bits_per_sample": int(sum(mem.dims)), "bytes": int(nbytes),
                 "noise_windows": int(len(mem.noise)), "classes": mem.counts(),
                 "kinds": {k: int(v) for k, v in zip(*np.unique(mem.kinds, return_counts=True))}})
    if built_from is not None:
        info["built_from"] = built_from
    return info


def resolve_data(bundle: Bundle, data=None):
    """The data SPEC: ``data``, else the manifest's training data if it exists here (a list of
    SPECs for a run trained on several corpora)."""
    from bnnkws.kws.data import parse_spec

    split = (bundle.manifest.get("source") or {}).get("split") or {}
    cand = data if data is not None else split.get("data")
    if cand is None:
        raise MemoryBuildError(f"{bundle.path}: the manifest does not record the training data; "
                               f"give it with --data DIR")
    for spec in (cand if isinstance(cand, list) else [cand]):
        p = parse_spec(spec)[1]
        if not p.exists():
            raise MemoryBuildError(f"data folder {p} not found" + (
                "" if data is not None else f" (recorded in {bundle.path / 'manifest.json'} as "
                                             f"the training data); give it with --data DIR"))
    return cand if isinstance(cand, list) else Path(cand)


def _noise_windows(paths, n: int, rng, sr: int, length: int) -> np.ndarray:
    """``n`` one-second windows from distinct noise files (random offset), audibly non-silent."""
    from bnnkws.frontend.audio import load_audio

    out = []
    for i in rng.permutation(len(paths)):
        if len(out) >= n:
            break
        try:
            y = load_audio(paths[i], sr=sr)
        except (OSError, ValueError):
            continue
        if len(y) < length:
            y = np.pad(y, (0, length - len(y)))
        s = int(rng.integers(0, len(y) - length + 1))
        w = y[s:s + length]
        if float(np.sqrt(np.mean(w.astype(np.float64) ** 2))) > 1e-3:
            out.append(w)
    return np.stack(out) if out else np.zeros((0, length), np.float32)


def build_memory(bundle_path, data=None, *, capacity: int = DEFAULT_CAPACITY,
                 noise_windows: int = DEFAULT_NOISE_WINDOWS, noise_dir=None,
                 seed: int = 0, progress: bool = True, detector=None,
                 backend: str = "auto", max_clips: Optional[int] = None) -> tuple:
    """Embed the bundle's training split with its own stages into a class-balanced reservoir.

    Returns ``(memory, built_from)``. The clips are read as training read them (centred one
    second, silence windows cut from their noise file) and offered to the reservoir in a random
    order (seeded), so every class ends with ~``capacity / classes`` samples whatever its size.
    """
    from bnnkws.kws.data import DatasetError, load_dataset
    from bnnkws.kws.features.cache import read_clip
    from bnnkws.frontend.audio import pad_or_crop

    from .heads import Embedder, head_input, linear_head

    bundle = bundle_path if isinstance(bundle_path, Bundle) else Bundle.load(bundle_path)
    root = resolve_data(bundle, data)
    split = (bundle.manifest.get("source") or {}).get("split") or {}
    task, split_seed = split.get("task") or "12", int(split.get("seed") or 0)
    try:
        ds = load_dataset(root if isinstance(root, list) else str(root), task=task,
                          seed=split_seed)
    except DatasetError as e:
        raise MemoryBuildError(str(e)) from e
    missing = [lab for lab in ds.labels if lab not in bundle.labels]
    if missing:
        raise MemoryBuildError(f"{root}: classes {missing} are not labels of {bundle.path} "
                               f"({', '.join(bundle.labels)}); is this the data it trained on?")
    train = list(ds.split("train"))
    if not train:
        raise MemoryBuildError(f"{root}: the training split (seed {split_seed}) is empty")
    fe = bundle.frontend
    dims = [int(bundle.heads[k]["kernel"].shape[0]) for k in bundle.exits]
    mem = LatentMemory(bundle.exits, dims, capacity, seed=seed, sample_rate=fe.sample_rate)
    signs = [head_input(linear_head(bundle.heads[k])[2]) for k in bundle.exits]
    emb = Embedder(bundle, detector, backend=backend)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))[:max_clips]  # max_clips: a quicker, smaller stream
    it = order
    if progress:
        from tqdm import tqdm

        it = tqdm(order, desc="memory", unit="clip")
    problems = []
    for i in it:
        c = train[i]
        try:
            y = pad_or_crop(read_clip(c, fe), fe.clip_samples, crop="center")
        except (OSError, ValueError) as e:
            problems.append(f"{c.path}: {e}")
            continue
        f = emb.one(y)
        src = NOISE_SOURCE if c.label == "_silence_" else (c.source or c.label)
        mem.add([s(v[None]) for s, v in zip(signs, f)], [c.label], [src], kind="train")
    if noise_windows:
        paths = (sorted(str(p) for p in Path(noise_dir).iterdir() if p.suffix.lower() == ".wav")
                 if noise_dir else list(ds.noise_paths))
        if not paths:
            raise MemoryBuildError(f"{noise_dir or root}: no background-noise recordings for "
                                   f"the memory's noise windows")
        mem.set_noise(_noise_windows(paths, noise_windows, rng, fe.sample_rate, fe.clip_samples))
    built = {"data": root if isinstance(root, list) else str(root), "task": task,
             "split_seed": split_seed, "seed": int(seed),
             "train_clips": len(train), "offered": int(len(order)),
             "unreadable": len(problems),
             "noise": str(noise_dir) if noise_dir else "training split noise",
             "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return mem, built


def install_memory(bundle_path, mem: LatentMemory, built_from: dict,
                   max_bytes: Optional[int] = None) -> Bundle:
    """Put ``mem`` into the bundle (listed and hashed in the manifest), atomically."""
    from .swap import commit

    data = mem.to_bytes()
    if max_bytes is not None and len(data) > max_bytes:
        raise MemoryBuildError(f"memory of {len(mem)} samples is {len(data)} bytes, over the "
                               f"{max_bytes}-byte limit; lower --capacity or --noise-windows")
    bundle = Bundle.load(bundle_path)
    info = memory_info(mem, len(data), built_from)
    return commit(bundle.path, None, bundle.labels, None, None,
                  files={MEMORY: (data, "memory")}, manifest_updates={"memory": info})


__all__ = ["MEMORY", "DEFAULT_CAPACITY", "build_memory", "install_memory", "read_memory",
           "memory_info", "MemoryBuildError", "MemoryError_"]
