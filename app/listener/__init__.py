"""Streaming detection, shared by ``kws listen``, the benchmarks and the Pi package: audio
sources (``sources``), the hop-by-hop detector over the exit-by-exit runtime (``listen``), the
cheap-hop gates (``gates``), smoothing of decisions into detections (``smoothing``) and the
terminal view (``view``). numpy and a TFLite interpreter only.
"""
