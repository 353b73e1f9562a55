"""Timing helpers for the frontends (numpy only: importable without TensorFlow)."""
from __future__ import annotations

import contextlib
import os
import time

import numpy as np

__all__ = ["median_ms", "quiet_native_output"]


def median_ms(fn, runs: int = 100, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``runs`` calls, after ``warmup`` calls
    (caches, lazy imports, interpreter allocation). The median resists the outliers a shared
    machine produces."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


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


