"""On-disk waveform shards: a clip list decoded once into TFRecord files that stream into
``tf.data`` with flat memory, whatever the corpus size.

Layout (``<cache_dir>/shards-<key>/``)::

    shard-00000.tfrecord   records of clips 0 .. clips_per_shard-1 (unreadable ones left out)
    shard-00000.json       written after the shard: count, label histogram, unreadable clips
    ...
    index.json             written last, once every shard exists: the completeness mark

Each record is a ``tf.train.Example`` with ``wave`` (bytes: little-endian int16 samples at the
frontend rate, variable length, at most ``MAX_SECONDS``), ``label`` (index into ``labels``),
``aux`` (auxiliary-vocabulary label, -1 = none) and ``key`` (the clip's position in the clip
list given to :func:`build_shards`). The int16 values are those of the in-memory cache
(:func:`bnnkws.kws.features.cache.load_waveforms`): ``clip(round(y * 32767), -32768, 32767)``.

Log-mel is *not* stored: the pipeline computes it from the waveform, so changing a mel parameter
never needs a rebuild. What the samples depend on is in the key: every clip's identity (path,
size, mtime, window start, gain, as the feature caches key them), each clip's label index and
aux value, the label list, the sample rate, ``MAX_SECONDS``, ``clips_per_shard`` and
``SHARD_FORMAT``. An edited file therefore builds a new folder instead of reading stale samples.

Building: one task per shard, decoded in worker processes (``spawn`` context, so TensorFlow
already running in the parent is never forked). Workers import no TensorFlow (that would cost
about 5 s per worker): they decode and serialise the Examples (a few lines of protobuf wire
format, :func:`_example_bytes`), and the parent writes them with ``tf.io.TFRecordWriter``
(framing and CRC32C in C++). Measured on the 3,518 16-kHz WAV clips of the v0.02 test set
(2 shared cores): about 3,600 clips/s with ``workers=1`` and 2,100-2,400 with ``workers=2``.
Such clips decode in ~0.13 ms, less than sending them to the parent and writing them
(~0.2-0.3 ms), and the pool costs ~0.5 s to start, so workers pay off only where decoding is
dearer (resampling, compressed audio); workers writing their own files would need a CRC32C
library without TensorFlow. A shard is written to a temporary name and renamed when complete,
its JSON follows; a rerun after an interruption builds only the shards that lack either.

Shard ``i`` holds a fixed random sample of the clips (:func:`shard_order`), not a slice of
the list: clip lists come grouped by word.

Reading (:meth:`ShardSet.dataset`): per epoch the shard order is a stateless permutation of
``(seed, epoch)``; ``cycle_length`` shards are interleaved record by record, then permuted
within windows of ``shuffle_buffer`` records by ``stateless_shuffle`` keyed on ``(seed,
epoch, window)`` (:func:`_window_shuffle`). The order is a pure function of ``(seed,
epoch)`` (no TensorFlow op seeds, so also under a global seed and inside ``flat_map``) and
differs between epochs. Only two windows and the interleave's open files are in memory.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bnnkws.frontend import DEFAULT_FRONTEND, FrontendConfig

from bnnkws.kws import fileio
from bnnkws.kws.pool import bounded_map
from bnnkws.kws.features import cache as features
from bnnkws.kws.features.pipeline import label_indices

log = logging.getLogger(__name__)

SHARD_FORMAT = 2  # 2: shards hold a fixed random sample of the clips, not list slices
AUTOTUNE = -1  # == tf.data.AUTOTUNE, without importing TensorFlow here (workers import us)
INDEX = "index.json"


# ------------------------------------------------------------------------ record encoding


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint; negative int64 as its 64-bit two's complement (10 bytes)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature_bytes(value: bytes) -> bytes:
    return _field(1, _field(1, value))  # Feature.bytes_list = BytesList{value: [value]}


def _feature_int64(value: int) -> bytes:
    return _field(3, _field(1, _varint(int(value))))  # Feature.int64_list, packed


def _example_bytes(wave: np.ndarray, label: int, aux: int, key: int) -> bytes:
    """A serialised ``tf.train.Example`` (Example{features: Features{feature: map}}), built
    by hand so that workers need no TensorFlow; ``tf.io.parse_single_example`` reads it."""
    feats = {"wave": _feature_bytes(np.asarray(wave, "<i2").tobytes()),
             "label": _feature_int64(label), "aux": _feature_int64(aux),
             "key": _feature_int64(key)}
    entries = b"".join(_field(1, _field(1, k.encode()) + _field(2, v)) for k, v in feats.items())
    return _field(1, entries)




def _encode_shard(task: dict) -> dict:
    """Worker: decode one shard's clips -> ``{"blob", "sizes", "counts", "problems"}``, the
    serialised records back to back in one ``bytes`` (cheaper to send than many).

    Needs no TensorFlow. Unreadable clips are listed with their error text, never raised.
    """
    cfg, max_samples = task["cfg"], task["max_samples"]
    records, problems = [], []
    counts = [0] * task["num_labels"]
    for clip, lab, aux, key in zip(task["clips"], task["labels"], task["aux"], task["keys"]):
        try:
            y = features.read_clip(clip, cfg, max_samples)
        except Exception as exc:  # unreadable files are reported and skipped, never fatal
            problems.append([clip.path, features._problem_text(exc)])
            continue
        records.append(_example_bytes(features.quantize(y), lab, aux, key))
        if lab >= 0:  # -1: an --aux-synth clip with no task label
            counts[lab] += 1
    return {"shard": task["shard"], "blob": b"".join(records),
            "sizes": [len(r) for r in records], "counts": counts,
            "problems": problems, "clips": len(task["clips"])}


# ------------------------------------------------------------------------------ building


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.tfrecord"


def _meta_name(i: int) -> str:
    return f"shard-{i:05d}.json"


def _max_samples(cfg: FrontendConfig) -> int:
    """The longest waveform kept, as the in-memory cache crops (``MAX_SECONDS``)."""
    return int(features.MAX_SECONDS * cfg.sample_rate)


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, "<i8").tobytes()).hexdigest()


def shard_key(clips, labels, cfg: FrontendConfig = DEFAULT_FRONTEND, aux=None,
              clips_per_shard: int = 2048) -> str:
    """The folder key: hash of clip identities, per-clip label and aux, labels, rate, format."""
    return _key_of(clips, labels, cfg, label_indices(clips, labels).astype(np.int64),
                   _aux_array(aux, len(clips)), clips_per_shard)


def _key_of(clips, labels, cfg: FrontendConfig, lab: np.ndarray, aux: np.ndarray,
            clips_per_shard: int) -> str:
    """:func:`shard_key` of already validated label indices and aux values."""
    params = {"format": SHARD_FORMAT, "sr": cfg.sample_rate, "max": _max_samples(cfg),
              "labels": list(labels), "label_idx": _digest(lab), "aux": _digest(aux),
              "per_shard": int(clips_per_shard)}
    return features._key("shards", params, clips)


def _aux_array(aux, n: int) -> np.ndarray:
    if aux is None:
        return np.full(n, -1, np.int64)
    arr = np.asarray(aux)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"aux: expected {n} integers (one per clip, -1 = none), got "
                         f"shape {arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64)


def _shard_done(folder: Path, i: int) -> dict | None:
    """The shard's JSON if the shard file exists with the recorded size, else ``None``."""
    meta_path = folder / _meta_name(i)
    try:
        meta = json.loads(meta_path.read_text())
        if (folder / shard_name(i)).stat().st_size != meta["bytes"]:
            return None
        return meta
    except (OSError, ValueError, KeyError):
        return None


def _remove_stale_temporaries(folder: Path, older_than_s: float = 3600.0) -> None:
    """Temporary shards left by a killed build (SIGKILL skips the cleanup). Only old ones:
    a younger one may belong to another process building the same set right now."""
    import time

    for p in folder.glob(".shard-*.tmp"):
        try:
            if time.time() - p.stat().st_mtime > older_than_s:
                p.unlink()
        except OSError:
            pass


def _write_shard(folder: Path, result: dict) -> dict:
    """Records -> ``shard-NNNNN.tfrecord`` (temp name, renamed), then its JSON."""
    import tensorflow as tf

    i = result["shard"]
    path = folder / shard_name(i)
    with fileio.atomic_path(path, suffix=".tmp") as tmp:
        with tf.io.TFRecordWriter(str(tmp)) as w:
            blob, pos = memoryview(result["blob"]), 0
            for n in result["sizes"]:
                w.write(bytes(blob[pos:pos + n]))
                pos += n
    meta = {"shard": i, "file": path.name, "count": len(result["sizes"]),
            "clips": result["clips"], "label_counts": result["counts"],
            "problems": result["problems"], "bytes": path.stat().st_size}
    fileio.atomic_write_json(folder / _meta_name(i), meta, indent=1)
    return meta


def build_shards(clips, labels, cfg: FrontendConfig = DEFAULT_FRONTEND, *, aux=None,
                 cache_dir=None, clips_per_shard: int = 2048, workers: int | None = None,
                 progress: bool = True) -> "ShardSet":
    """Decode ``clips`` into TFRecord shards (resumable, parallel) and open them.

    ``labels``: class names, ``clip.label`` -> its index. ``aux``: one int per clip (-1 =
    none). ``workers``: processes (default ``os.cpu_count()``; 1 decodes in this process).
    A complete set for the same key is opened without decoding anything.
    """
    clips, labels = list(clips), list(labels)
    if clips_per_shard < 1:
        raise ValueError(f"clips_per_shard must be >= 1, got {clips_per_shard}")
    if not clips:
        raise ValueError("build_shards: no clips")
    lab = label_indices(clips, labels).astype(np.int64)
    aux_arr = _aux_array(aux, len(clips))
    cache_dir = Path(cache_dir) if cache_dir is not None else features.default_cache_dir()
    folder = cache_dir / f"shards-{_key_of(clips, labels, cfg, lab, aux_arr, clips_per_shard)}"
    if (folder / INDEX).is_file():
        try:
            return ShardSet.open(folder)
        except (OSError, ValueError) as exc:  # damaged: rebuild what is missing
            log.warning("%s: %s; rebuilding the missing shards", folder, exc)
            (folder / INDEX).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(folder)

    n_shards = -(-len(clips) // clips_per_shard)
    metas = {i: m for i in range(n_shards) if (m := _shard_done(folder, i)) is not None}
    todo = [i for i in range(n_shards) if i not in metas]
    workers = max(1, int(workers or os.cpu_count() or 1))
    from tqdm.auto import tqdm

    with tqdm(total=len(clips), initial=sum(m["clips"] for m in metas.values()),
              desc="writing shards", unit="clip", leave=False,
              disable=not progress or None) as bar:
        for result in _run(_tasks_for(clips, lab, aux_arr, cfg, clips_per_shard, len(labels),
                                      todo), workers):
            metas[result["shard"]] = _write_shard(folder, result)
            bar.update(result["clips"])
    _write_index(folder, [metas[i] for i in range(n_shards)], labels, aux_arr, cfg, len(clips))
    return ShardSet.open(folder)


def shard_order(n: int) -> np.ndarray:
    """The clip positions in shard order: a fixed random permutation of ``0..n-1``.

    Clip lists come grouped by word (one folder after another); shards of consecutive clips
    would each hold one or two words, and a stream interleaving a few shards would give
    batches of a handful of classes however it is shuffled. Each shard is therefore a random
    sample of the corpus (the permutation depends on ``n`` only, so it is part of the key)."""
    return np.random.default_rng([0x5A4D, n]).permutation(n)


def _tasks_for(clips, lab, aux, cfg, per_shard, num_labels, todo):
    max_samples = _max_samples(cfg)
    order = shard_order(len(clips))
    for i in todo:
        pos = order[i * per_shard:min((i + 1) * per_shard, len(clips))]
        yield {"shard": i, "clips": [clips[j] for j in pos], "labels": lab[pos].tolist(),
               "aux": aux[pos].tolist(), "keys": pos.tolist(), "cfg": cfg,
               "max_samples": max_samples, "num_labels": num_labels}


def _run(tasks, workers: int):
    """Results of ``_encode_shard`` as they complete, at most ``2 * workers`` in flight (a
    finished shard waits in memory only until the parent has written it)."""
    yield from bounded_map(_encode_shard, tasks, workers, 2 * workers)


def _write_index(folder: Path, metas: list[dict], labels, aux: np.ndarray,
                 cfg: FrontendConfig, total: int) -> None:
    counts = np.sum([m["label_counts"] for m in metas], axis=0).astype(int).tolist()
    problems = [p for m in metas for p in m["problems"]]
    index = {"format": SHARD_FORMAT, "labels": labels, "sample_rate": cfg.sample_rate,
             "max_samples": _max_samples(cfg),
             "total_clips": total, "num_clips": sum(m["count"] for m in metas),
             "label_counts": counts, "num_aux_labelled": int((aux >= 0).sum()),
             "num_aux_classes": int(aux.max(initial=-1)) + 1,
             "shards": [{"file": m["file"], "count": m["count"], "bytes": m["bytes"],
                         "label_counts": m["label_counts"]} for m in metas],
             "problems": problems}
    for path, prob in problems:
        log.warning("skipping %s: %s", path, prob)
    fileio.atomic_write_json(folder / INDEX, index, indent=1)


# ------------------------------------------------------------------------------- reading


@dataclass
class ShardSet:
    """A complete shard folder: its files, labels and counts (read from ``index.json``)."""

    path: Path
    files: list[str]
    labels: list[str]
    sample_rate: int
    label_counts: dict[str, int]
    counts: list[int] = field(default_factory=list)  # records per file
    problems: list[tuple[str, str]] = field(default_factory=list)
    total_clips: int = 0

    @property
    def num_clips(self) -> int:
        """Readable clips, the records of all files."""
        return sum(self.counts)

    @classmethod
    def open(cls, path) -> "ShardSet":
        """Raises ``FileNotFoundError``/``ValueError`` naming the folder when incomplete."""
        path = Path(path)
        try:
            index = json.loads((path / INDEX).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no {INDEX}; the shard set is incomplete (an "
                                    f"interrupted build_shards resumes when rerun)") from None
        except ValueError as exc:
            raise ValueError(f"{path / INDEX}: not valid JSON ({exc})") from None
        if index.get("format") != SHARD_FORMAT:
            raise ValueError(f"{path}: shard format {index.get('format')}, this code reads "
                             f"{SHARD_FORMAT}")
        files = []
        for s in index["shards"]:
            f = path / s["file"]
            if not f.is_file():
                raise FileNotFoundError(f"{path}: shard {s['file']} is missing")
            if (size := f.stat().st_size) != s["bytes"]:
                raise ValueError(f"{f}: {size} bytes, index says {s['bytes']}")
            files.append(str(f))
        labels = list(index["labels"])
        return cls(path, files, labels, int(index["sample_rate"]),
                   dict(zip(labels, index["label_counts"])), [s["count"] for s in index["shards"]],
                   [tuple(p) for p in index["problems"]], int(index["total_clips"]))

    def __len__(self) -> int:
        return self.num_clips

    def dataset(self, *, epoch=0, seed: int = 0, shuffle: bool = True,
                shuffle_buffer: int = 4096, cycle_length: int = 4,
                num_parallel_reads: int = AUTOTUNE):
        """Unbatched ``{"wave": int16 [None], "label": int32, "aux": int32, "key": int64,
        "epoch": int64}``, every record once.

        ``shuffle=True``: shard order = stateless permutation of ``(seed, epoch)``, records of
        ``cycle_length`` shards interleaved, then permuted within windows of
        ``shuffle_buffer`` records (:func:`_window_shuffle`). ``shuffle=False``: files in
        order, records in order. ``epoch`` may be a Python int or a scalar integer tensor (as
        inside :meth:`epochs`' ``flat_map``).
        """
        import tensorflow as tf

        epoch = tf.cast(epoch, tf.int64)
        if not shuffle:
            ds = tf.data.TFRecordDataset(self.files)  # one file after the other, in order
        else:
            pair = tf.stack([tf.constant(seed, tf.int64), epoch])
            order = tf.argsort(tf.random.stateless_uniform([len(self.files)], seed=pair))
            files = tf.data.Dataset.from_tensor_slices(tf.gather(tf.constant(self.files), order))
            ds = files.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length,
                                  block_length=1, num_parallel_calls=num_parallel_reads,
                                  deterministic=True)
        ds = ds.map(lambda rec: _parse(rec, epoch), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
        if shuffle:
            ds = _window_shuffle(ds, shuffle_buffer, seed, epoch)
        return ds

    def epochs(self, start: int, end: int, **kw):
        """Epochs ``start .. end-1`` back to back, each shuffled for its own epoch number."""
        import tensorflow as tf

        return tf.data.Dataset.range(start, end).flat_map(
            lambda e: self.dataset(epoch=e, **kw))


def _window_shuffle(ds, window: int, seed: int, epoch):
    """Records permuted within consecutive windows of ``window``: window ``i`` of an epoch
    is reordered by ``stateless_shuffle`` seeded with ``(seed, epoch, i)``.

    Unlike ``Dataset.shuffle`` this needs no op seed (tf.data refuses a symbolic one when a
    global seed of 0 is set, as ``--seed 0`` training does), so an epoch number inside
    ``flat_map`` works and the order is a pure function of ``(seed, epoch)``. The shards hold
    random samples of the corpus (:func:`shard_order`), so a window of interleaved records is
    already a random draw; the permutation mixes it, and which shards share a window changes
    with the epoch's shard order. The next window is assembled while the current one is read
    (two windows in memory)."""
    import tensorflow as tf

    salt = tf.constant(int(seed) + 0x5EED, tf.int64)
    epoch = tf.cast(epoch, tf.int64)

    def permute(i, b):
        n = tf.shape(b["key"], out_type=tf.int64)[0]
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n), seed=tf.stack([salt, epoch * 1_000_003 + i]))
        return {k: tf.gather(v, order) for k, v in b.items()}

    return (ds.ragged_batch(window).enumerate().map(permute).prefetch(1).unbatch()
            .map(lambda e: {**e, "wave": tf.convert_to_tensor(e["wave"])}))


def _parse(record, epoch):
    import tensorflow as tf

    spec = {"wave": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "aux": tf.io.FixedLenFeature([], tf.int64),
            "key": tf.io.FixedLenFeature([], tf.int64)}
    ex = tf.io.parse_single_example(record, spec)
    return {"wave": tf.io.decode_raw(ex["wave"], tf.int16, little_endian=True),
            "label": tf.cast(ex["label"], tf.int32), "aux": tf.cast(ex["aux"], tf.int32),
            "key": ex["key"], "epoch": epoch}


def read_all(shardset: ShardSet):
    """``(waves, labels, aux, keys)`` in file order: a list of int16 arrays and three numpy
    arrays. For tests and benchmarks on small sets only (it holds everything in memory)."""
    waves, labels, aux, keys = [], [], [], []
    for el in shardset.dataset(shuffle=False).as_numpy_iterator():
        waves.append(el["wave"])
        labels.append(el["label"])
        aux.append(el["aux"])
        keys.append(el["key"])
    return (waves, np.array(labels, np.int32), np.array(aux, np.int32),
            np.array(keys, np.int64))
