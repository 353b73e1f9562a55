"""A deployed bundle: a directory of TFLite files, ``heads.npz`` and ``manifest.json``.

Reading a bundle needs json, hashlib and numpy only (no TensorFlow): this runs on the device.
:meth:`Bundle.load` checks the format version and the SHA-256 of every file the manifest lists,
and refuses a damaged or incompatible bundle with an error naming the file at fault.

Layout (see ARCHITECTURE.md)::

    manifest.json            what is below, with hashes, tensor names, labels, frontend, versions
    stage1.tflite            raw audio (1, clip_samples) in; LogMel + stage 1 (LCE ops)
    stage1_features.tflite   log-mel (1, frames, n_mels) in; stage 1 (LCE ops)
    stage2..N.tflite         previous stage's fmap in (LCE ops)
    portable/*.tflite        the same stages without LCE custom ops (any TFLite runtime)
    float32/stage*.tflite    the real-valued twin, staged (benchmarks)
    full.tflite              every exit in one graph (LCE; for device benchmark tools)
    float32.tflite           the real-valued twin in one graph (stock TFLite converter)
    heads.npz                per exit head: ``exit{k}_kernel`` (D_k, C), ``_bias``, ``_scale``,
                             ``_sign_input``, ``_sign_kernel`` (see normalize_head)

Stage outputs are addressed by *name* (``fmap``, ``embedding``, ``logits``): the converter
reorders a multi-output graph's outputs, so the manifest records, per file, each output's name,
TFLite tensor name and position.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bnnkws.kws.fileio import atomic_write_bytes as _atomic_write_bytes

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
HEADS = "heads.npz"


class BundleError(ValueError):
    """A bundle is missing, damaged or incompatible; the message names the file at fault."""


# ------------------------------------------------------------------------------------------------
# small helpers (also used by export and by enrolment)
# ------------------------------------------------------------------------------------------------
def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write via a temp file + rename so an interruption never leaves half a file."""
    return _atomic_write_bytes(path, data)


def write_manifest(bundle_dir, manifest: dict) -> Path:
    return atomic_write_bytes(Path(bundle_dir) / MANIFEST,
                              (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())


HEAD_KEYS = ("kernel", "bias", "scale", "sign_input", "sign_kernel")


def normalize_head(head) -> dict:
    """A head as a dict ``{kernel (D, C), bias (C,), scale, sign_input, sign_kernel}``.

    It computes ``logits = scale * (s_in(embedding) @ s_k(kernel)) + bias`` where ``s_in`` /
    ``s_k`` are the Larq sign (+1 for x >= 0) when ``sign_input`` / ``sign_kernel`` are set,
    identity otherwise. An exported binary head (kws.models.head_math) has both signs set; a
    CWR* head trained on the binarised embedding has ``sign_input=True, sign_kernel=False,
    scale=1``. A ``(kernel, bias)`` tuple means a plain real-valued linear head on the sign of
    the embedding (the CWR* form).
    """
    if isinstance(head, (tuple, list)):
        kernel, bias = head
        head = {"kernel": kernel, "bias": bias, "scale": 1.0, "sign_input": True,
                "sign_kernel": False}
    out = {"kernel": np.asarray(head["kernel"], np.float32),
           "bias": np.asarray(head["bias"], np.float32).reshape(-1),
           "scale": float(head.get("scale", 1.0)),
           "sign_input": bool(head.get("sign_input", False)),
           "sign_kernel": bool(head.get("sign_kernel", False))}
    if out["kernel"].ndim != 2 or out["kernel"].shape[1] != out["bias"].shape[0]:
        raise BundleError(f"head kernel {out['kernel'].shape} and bias {out['bias'].shape} disagree")
    return out


def heads_to_bytes(heads: dict) -> bytes:
    """``{exit: head}`` -> npz bytes with keys ``exit{k}_kernel``, ``_bias``, ``_scale``,
    ``_sign_input``, ``_sign_kernel`` (see :func:`normalize_head`)."""
    arrays = {}
    for k, head in sorted(heads.items()):
        h = normalize_head(head)
        for key in HEAD_KEYS:
            arrays[f"exit{int(k)}_{key}"] = np.asarray(h[key])
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def read_heads(path) -> dict:
    """``heads.npz`` -> ``{exit: head dict}`` (see :func:`normalize_head`)."""
    out = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            if key.endswith("_kernel") and not key.endswith("_sign_kernel"):
                k = int(key[len("exit"):-len("_kernel")])
                out[k] = normalize_head({name: z[f"exit{k}_{name}"] for name in HEAD_KEYS
                                         if f"exit{k}_{name}" in z.files})
    return out


def head_logits(head: dict, embedding) -> np.ndarray:
    """Logits ``(..., C)`` of one head from embedding(s) ``(..., D)``, float32."""
    e = np.asarray(embedding, np.float32)
    w = head["kernel"]
    if head["sign_input"]:
        e = np.where(e >= 0, 1.0, -1.0).astype(np.float32)
    if head["sign_kernel"]:
        w = np.where(w >= 0, 1.0, -1.0).astype(np.float32)
    return (np.float32(head["scale"]) * (e @ w) + head["bias"]).astype(np.float32)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------
# the bundle
# ------------------------------------------------------------------------------------------------
@dataclass
class TensorSpec:
    name: str  # our name: "audio", "log_mel", "fmap", "embedding", "logits"
    tensor: str  # the TFLite tensor name
    index: int  # position among the file's inputs / outputs
    shape: list
    dtype: str

    @classmethod
    def from_dict(cls, d):
        return cls(d["name"], d["tensor"], int(d["index"]), list(d["shape"]), d["dtype"])


@dataclass
class StageSpec:
    """One stage: its LCE file, its portable twin, and (stage 1) the log-mel-input variants."""

    index: int  # 1-based
    exit: int | None  # exit number this stage's logits belong to (None: no head)
    file: str
    portable: str | None  # None in a lean bundle (`kws export --lean`): LCE stages only
    features_file: str | None = None
    features_portable: str | None = None
    float32: str | None = None
    float32_features: str | None = None
    int8: str | None = None  # the int8 twin (full `kws export`; absent in older bundles)
    int8_features: str | None = None


@dataclass
class Bundle:
    path: Path
    manifest: dict
    heads: dict = field(default_factory=dict)

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def load(cls, path, verify: bool = True) -> "Bundle":
        path = Path(path)
        mpath = path / MANIFEST
        if not path.is_dir():
            raise BundleError(f"bundle directory not found: {path}")
        if not mpath.is_file():
            raise BundleError(f"{mpath}: no manifest.json; not a bundle (make one with `kws export`)")
        try:
            manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{mpath}: damaged manifest, not valid JSON ({e})") from e
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{mpath}: bundle format version {version!r} is not supported by this bnn-kws "
                f"(reads version {FORMAT_VERSION}); re-export the run with `kws export`")
        for key in ("labels", "stages", "files", "exits"):
            if key not in manifest:
                raise BundleError(f"{mpath}: manifest lacks {key!r}")
        bundle = cls(path, manifest)
        if verify:
            bundle.verify()
        hpath = path / manifest.get("heads_file", HEADS)
        try:
            bundle.heads = read_heads(hpath)
        except (OSError, ValueError, KeyError) as e:
            raise BundleError(f"{hpath}: cannot read heads ({e})") from e
        for k in bundle.exits:
            if k not in bundle.heads:
                raise BundleError(f"{hpath}: no head for exit {k}")
            w = bundle.heads[k]["kernel"]
            if w.shape[1] != len(bundle.labels):
                raise BundleError(f"{hpath}: exit {k} head has {w.shape[1]} classes, "
                                  f"manifest lists {len(bundle.labels)} labels")
        return bundle

    def verify(self) -> None:
        """Every listed file exists and matches its SHA-256; raises BundleError naming the file."""
        for name, info in self.manifest["files"].items():
            fpath = self.path / name
            if not fpath.is_file():
                raise BundleError(f"{fpath}: listed in the manifest but missing; bundle incomplete")
            if os.path.getsize(fpath) != info.get("bytes", os.path.getsize(fpath)):
                raise BundleError(f"{fpath}: size {os.path.getsize(fpath)} bytes, manifest says "
                                  f"{info['bytes']}; the file is damaged or was replaced")
            digest = sha256_file(fpath)
            if digest != info["sha256"]:
                raise BundleError(f"{fpath}: SHA-256 mismatch ({digest[:12]}... != manifest "
                                  f"{info['sha256'][:12]}...); the file is damaged or was replaced")

    # -- views ----------------------------------------------------------------------------------
    @property
    def labels(self) -> list:
        return list(self.manifest["labels"])

    @property
    def exits(self) -> list:
        return [int(k) for k in self.manifest["exits"]]

    @property
    def temperatures(self) -> list:
        return [float(t) for t in self.manifest["temperatures"]]

    @property
    def delta(self):
        """The exit threshold: a number, or a list with one per exit (``kws eval --per-exit``)."""
        d = self.manifest["delta"]
        return [float(x) for x in d] if isinstance(d, list) else float(d)

    @property
    def split_seed(self) -> int:
        """Seed of the speaker split the model trained with (0 for bundles that predate it)."""
        split = (self.manifest.get("source") or {}).get("split") or {}
        return int(split.get("seed") or 0)

    @property
    def policy_settings(self) -> dict:
        return dict(self.manifest.get("policy", {}))

    @property
    def frontend(self):
        from bnnkws.frontend.config import FrontendConfig

        return FrontendConfig.from_dict(self.manifest["frontend"])

    @property
    def stages(self) -> list:
        return [StageSpec(**s) for s in self.manifest["stages"]]

    def file(self, name: str) -> Path:
        return self.path / name

    def io(self, name: str) -> tuple[list, list]:
        """(inputs, outputs) TensorSpecs of one TFLite file of the bundle, outputs by position."""
        info = self.manifest["files"].get(name)
        if info is None or "outputs" not in info:
            raise BundleError(f"{self.path / MANIFEST}: no tensor description for {name}")
        ins = sorted((TensorSpec.from_dict(d) for d in info["inputs"]), key=lambda t: t.index)
        outs = sorted((TensorSpec.from_dict(d) for d in info["outputs"]), key=lambda t: t.index)
        return ins, outs

    def size_bytes(self, names) -> int:
        return sum(int(self.manifest["files"][n]["bytes"]) for n in names)

    # -- enrolment (CWR*) -----------------------------------------------------------------------
    def write_heads(self, heads: dict, labels: list, event: dict | None = None) -> None:
        """Replace the numpy heads (e.g. after CWR* enrolment) and the label list, atomically.

        ``heads`` is ``{exit: head}`` for every exit (a dict or a ``(kernel, bias)`` tuple, see
        :func:`normalize_head`); ``labels`` has C entries. Updates heads.npz, its hash, ``labels`` and appends ``event`` (plus a time
        stamp) to the manifest's ``enrolment`` history. The TFLite files keep the logits of the
        exported classes; the runtime always computes logits from these heads.
        """
        labels = [str(x) for x in labels]
        if set(heads) != set(self.exits):
            raise BundleError(f"heads for exits {sorted(heads)}; bundle has exits {self.exits}")
        for k, head in heads.items():
            c = normalize_head(head)["kernel"].shape[1]
            if c != len(labels):
                raise BundleError(f"exit {k} head has {c} classes, but {len(labels)} labels given")
        name = self.manifest.get("heads_file", HEADS)
        data = heads_to_bytes(heads)
        atomic_write_bytes(self.path / name, data)
        m = self.manifest
        m["files"][name] = {**m["files"].get(name, {}), "sha256": hashlib.sha256(data).hexdigest(),
                            "bytes": len(data)}
        m["labels"] = labels
        m["heads"] = "numpy"
        m.setdefault("enrolment", []).append({**(event or {}), "time": now_iso(),
                                             "labels": labels})
        write_manifest(self.path, m)
        self.heads = read_heads(self.path / name)
