"""Atomic replacement of a bundle directory: every change is written to a copy and swapped in.

A new bundle directory is written next to the old one (TFLite files hard-linked, so it costs no
space), its heads, extra files and manifest are rewritten with :mod:`bnnkws.deploy.bundle`'s
helpers and verified with :meth:`Bundle.load`, and only then does it take the old one's place
(one atomic ``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two renames, with the previous
bundle kept as ``.<name>.old-*`` until the second one succeeds and restored by :func:`recover`
if it did not). A change interrupted at any point leaves the old bundle loadable and verified.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Optional

from .bundle import HEADS, MANIFEST, Bundle, atomic_write_bytes, read_heads

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def recover(path) -> None:
    """Finish or undo an interrupted swap and drop abandoned work directories."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return
    olds = sorted(parent.glob(f".{path.name}.old-*"))
    if not path.exists() and olds:
        os.rename(olds[-1], path)  # the second rename never happened: put the old one back
        olds = olds[:-1]
    for d in olds + sorted(parent.glob(f".{path.name}.new-*")):
        shutil.rmtree(d, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def copy_bundle(src: Path, dst: Path) -> None:
    """A copy of a bundle directory; immutable TFLite files are hard links, the rest copies."""
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            s, d = Path(root) / f, dst / rel / f
            if f.endswith(".tflite"):
                _link_or_copy(s, d)
            else:
                shutil.copy2(s, d)


def _write_heads(new_dir: Path, manifest: dict, heads: Optional[dict], labels: list,
                 past: Optional[dict], event: Optional[dict], files: Optional[dict] = None,
                 manifest_updates: Optional[dict] = None) -> None:
    """heads.npz + extra files + manifest in ``new_dir`` with their hashes.

    ``files``: ``{name: (bytes, kind)}`` written and listed in the manifest before it;
    ``manifest_updates``: top-level manifest keys to set. ``heads=None`` keeps heads.npz,
    labels and history as they are (only the extra files and keys change).
    """
    import hashlib

    from .bundle import write_manifest

    for name, (data, kind) in (files or {}).items():
        atomic_write_bytes(new_dir / name, data)
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(),
                                   "bytes": len(data), "kind": kind}
    manifest.update(manifest_updates or {})
    if heads is None:
        write_manifest(new_dir, manifest)
        return
    b = Bundle(new_dir, manifest, read_heads(new_dir / manifest.get("heads_file", HEADS)))
    b.manifest["cwr_past"] = {str(k): int(v) for k, v in past.items()}
    b.write_heads(heads, labels, event)


def commit(bundle_path, heads: Optional[dict], labels: list, past: Optional[dict],
           event: Optional[dict], *, files: Optional[dict] = None,
           manifest_updates: Optional[dict] = None) -> Bundle:
    """Write a new bundle next to the old one, verify it, swap it into place atomically.

    ``files`` (``{name: (bytes, kind)}``, e.g. the replay memory) and ``manifest_updates`` go
    into the same new copy, so heads, memory and manifest change together or not at all.
    """
    path = Path(bundle_path).resolve()
    recover(path)
    tag = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
    new_dir = path.parent / f".{path.name}.new-{tag}"
    old_dir = path.parent / f".{path.name}.old-{tag}"
    try:
        copy_bundle(path, new_dir)
        manifest = json.loads((new_dir / MANIFEST).read_text())
        _write_heads(new_dir, manifest, heads, labels, past, event, files, manifest_updates)
        Bundle.load(new_dir)  # verify before it replaces anything
        if _exchange(new_dir, path):
            shutil.rmtree(new_dir, ignore_errors=True)  # now holds the old bundle
        else:
            os.rename(path, old_dir)
            os.rename(new_dir, path)
            shutil.rmtree(old_dir, ignore_errors=True)
    except BaseException:
        if not path.exists() and old_dir.exists():
            os.rename(old_dir, path)
        shutil.rmtree(new_dir, ignore_errors=True)
        raise
    return Bundle.load(path)
