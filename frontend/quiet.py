"""Silencing native (C++) output around a block: TensorFlow's MLIR converter writes pages of it.

numpy-free and TensorFlow-free, so the timing helpers, the Keras layer's conversion and the CLI
can all use it.
"""
from __future__ import annotations

import contextlib
import os

__all__ = ["quiet_native_output"]


@contextlib.contextmanager
def quiet_native_output():
    """Silence C++ logging on stdout/stderr (the MLIR converter writes pages of it) while the
    block runs; if the block raises, the captured text is replayed so nothing is lost."""
    import sys
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
