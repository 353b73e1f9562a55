"""The application-level benchmarks that ``kws bench-stream``, ``kws bench-enroll`` and
``kws report`` run: keywords streamed in noise with ground truth (``stream``) and words
enrolled from a few takes and heard in other voices (``enroll``).
"""
