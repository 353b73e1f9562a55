"""Atomic file writing: a temporary file in the target's folder, renamed into place on success.

An interrupted write (crash, Ctrl-C, full disk) never leaves half a file at ``path``: the old
file (if any) stays until ``os.replace`` swaps the new one in, and the temporary file is removed
on failure. Numpy/stdlib only (no TensorFlow), so every layer above ``kws`` can use it.

The written file gets the mode a plain ``open(path, "w")`` would give (``0666 & ~umask``), not
``mkstemp``'s private 0600.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

_UMASK = os.umask(0o022)  # read the process umask once (os.umask can only be read by setting it)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK  # what os.mkdir gives; mkdtemp's is a private 0700


def _unlink_quietly(p) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp", *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    For libraries that write files themselves (``np.save``, ``soundfile.write``, Keras
    ``save_weights``, ``savefig``): give ``suffix`` the extension they infer the format from
    (e.g. ``".tmp.png"``, ``".tmp.h5"``, ``".wav"``). On an exception the temporary file is
    removed and ``path`` is untouched. ``fsync=True`` flushes the data to disk before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def atomic_write(path, write: Callable, *, fsync: bool = False) -> Path:
    """Call ``write(f)`` on a binary file object of a temporary file, then rename onto ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    return path


def atomic_write_bytes(path, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` atomically; returns ``path`` as a ``Path``."""
    return atomic_write(path, lambda f: f.write(data), fsync=fsync)


def atomic_write_text(path, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) atomically; returns ``path`` as a ``Path``."""
    return atomic_write_bytes(path, text.encode(), fsync=fsync)


def atomic_write_json(path, obj, *, indent: int | None = 2, sort_keys: bool = False,
                      default=None) -> Path:
    """``json.dumps(obj)`` plus a final newline, written atomically."""
    return atomic_write_text(
        path, json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default) + "\n")


def atomic_savefig(fig, path, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically, then close it (even when saving fails, so a
    long benchmark does not accumulate open figures)."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)
