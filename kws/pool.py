"""Worker processes with a bounded look-ahead: results as they complete, few tasks in flight.

Shared by the long jobs that fan out over processes (shard encoding, cutting word corpora):
at most ``depth`` tasks are submitted ahead of the results the caller has taken, so a finished
result waits in memory only until the caller has written it, and an interrupted caller stops
the pool without starting the tasks nobody will read.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing


def bounded_map(fn, tasks, workers: int, depth: int, initializer=None, initargs=()):
    """``fn(task)`` of every task, yielded as they complete (any order), ``depth`` in flight.

    ``workers == 1`` runs in this process (``initializer`` first). Otherwise a ``spawn`` pool:
    the parent may hold threads (TensorFlow's), which ``fork`` would copy mid-state; as with any
    spawn pool, a calling script needs the ``if __name__ == "__main__":`` guard.
    """
    if workers == 1:
        if initializer is not None:
            initializer(*initargs)
        for t in tasks:
            yield fn(t)
        return
    ctx = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer,
                                  initargs=initargs)
    pending = set()
    try:
        for t in tasks:
            pending.add(pool.submit(fn, t))
            if len(pending) >= depth:
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for f in done:
                    yield f.result()
        for f in cf.as_completed(pending):
            yield f.result()
    finally:
        # on Ctrl-C or an error, do not start the tasks nobody will read
        pool.shutdown(wait=True, cancel_futures=True)
