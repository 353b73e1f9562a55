"""Log-mel as a Keras layer that converts to TFLite builtin ops only.

An exported model can then take raw 16 kHz audio as input, and the frontend's cost is part of the
measured on-device latency. The layer reproduces :mod:`bnnkws.frontend.reference` (same framing,
window, filterbank and log) in float32.

Op choice (checked by ``tests/test_frontend_keras.py`` on models converted with both
``tf.lite.TFLiteConverter`` and ``larq_compute_engine.convert_keras_model``):

* framing by RESHAPE into hop-sized rows, then STRIDED_SLICE + CONCATENATION of the
  ``ceil(win_length / hop_length)`` shifted row blocks: static shapes only, nothing that could
  fall back to a Select-TF op;
* the DFT either as ``tf.signal.rfft`` of the windowed, zero-padded frame, which converts to
  the builtin RFFT2D (``dft="rfft"``, the default), or as one FULLY_CONNECTED against a constant
  windowed ``(win_length, 2K)`` cos/sin matrix restricted to the ``K = 248`` bins that carry mel
  weight (``dft="matmul"``). Both meet the 1e-3 parity bound on real clips (max abs diff
  3.2e-5 rfft, 3.8e-5 matmul over 510 clips incl. the quietest `_silence_` ones, with the
  default log_offset 1e-6: ``python -m bnnkws.frontend.bench``). Timed in the LCE interpreter
  on x86-64 (default kernels, 1 thread, one second of audio, the two models interleaved over
  1500 runs, twice, on a loaded machine): median 0.61 / 0.68 ms rfft vs 0.65 / 0.72 ms matmul,
  so rfft is the default: slightly faster here, 12x smaller (69 KB vs 841 KB of float32 DFT
  constants in every raw-audio model) and ~8x fewer multiply-adds (the matmul DFT alone is
  19.4 M MACs per second of audio), which matters more on the ARM targets. With XNNPack
  (not the LCE default) the matmul was faster (0.46 vs 0.57 ms). ``matmul`` also serves an
  ``n_fft`` that is not a power of two (RFFT2D requires one);
* power as MUL/ADD, the filterbank as a second FULLY_CONNECTED, LOG of (mel + log_offset).
"""
from __future__ import annotations

import math
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from .bench import quiet_native_output  # noqa: E402
from .config import DEFAULT_FRONTEND, FrontendConfig  # noqa: E402
from .reference import hann_window, mel_matrix  # noqa: E402

__all__ = ["LogMel", "dft_matrices", "mel_band"]

DFT_MODES = ("matmul", "rfft")


def mel_band(cfg: FrontendConfig = DEFAULT_FRONTEND) -> tuple[int, int]:
    """``[lo, hi)`` range of FFT bins with any non-zero mel weight."""
    used = np.flatnonzero(np.any(mel_matrix(cfg) > 0, axis=1))
    return int(used[0]), int(used[-1]) + 1


def dft_matrices(cfg: FrontendConfig = DEFAULT_FRONTEND) -> tuple[np.ndarray, np.ndarray]:
    """(windowed ``[cos | -sin]`` DFT matrix ``(win_length, 2K)``, mel ``(K, n_mels)``), float32.

    Built in float64 and rounded once, so the only float32 error is in the layer's arithmetic.
    The window sits at the start of the ``n_fft`` frame (zero padding at the end); the power
    spectrum does not depend on where the padding goes (see reference.py).
    """
    lo, hi = mel_band(cfg)
    n = np.arange(cfg.win_length)[:, None]
    k = np.arange(lo, hi)[None, :]
    # Reduce n*k modulo n_fft in integers before scaling: keeps the angles exact.
    ang = 2.0 * np.pi * ((n * k) % cfg.n_fft) / cfg.n_fft
    w = hann_window(cfg)[:, None]
    dft = np.concatenate([w * np.cos(ang), -w * np.sin(ang)], axis=1)
    return dft.astype(np.float32), mel_matrix(cfg)[lo:hi].astype(np.float32)


@keras.utils.register_keras_serializable(package="bnnkws")
class LogMel(keras.layers.Layer):
    """``(batch, samples)`` float32 audio -> ``(batch, frames, n_mels)`` log-mel.

    ``samples`` must be known when the layer is built (``cfg.clip_samples`` in the models
    here); it gives ``1 + (samples - win_length) // hop_length`` frames, 98 for one second.
    """

    def __init__(self, cfg: FrontendConfig | dict = DEFAULT_FRONTEND, dft: str = "rfft", **kwargs):
        super().__init__(**kwargs)
        if isinstance(cfg, dict):
            cfg = FrontendConfig.from_dict(cfg)
        if dft not in DFT_MODES:
            raise ValueError(f"dft must be one of {DFT_MODES}, got {dft!r}")
        if dft == "rfft" and cfg.n_fft & (cfg.n_fft - 1):
            raise ValueError(
                f"dft='rfft' needs n_fft to be a power of two (TFLite RFFT2D), got {cfg.n_fft}; "
                "use dft='matmul'"
            )
        self.cfg = cfg
        self.dft = dft
        self._num_samples = None

    def build(self, input_shape):
        samples = input_shape[-1]
        if samples is None:
            raise ValueError("LogMel needs a fixed number of samples, e.g. keras.Input((16000,))")
        cfg = self.cfg
        if samples < cfg.win_length:
            raise ValueError(f"LogMel input has {samples} samples, fewer than one window ({cfg.win_length})")
        self._num_samples = int(samples)
        self._num_frames = 1 + (samples - cfg.win_length) // cfg.hop_length
        # Hop-sized rows: frame t is rows t, t+1, ... concatenated, the last one cut short.
        self._blocks = math.ceil(cfg.win_length / cfg.hop_length)
        self._rows = self._num_frames + self._blocks - 1
        dft, mel = dft_matrices(cfg)
        self._lo, self._hi = mel_band(cfg)
        self._nbins = self._hi - self._lo
        # Constants, not trainable weights: they are part of the definition, not of the model.
        self._dft = tf.constant(dft)
        self._mel = tf.constant(mel)
        self._window = tf.constant(hann_window(cfg).astype(np.float32))
        super().build(input_shape)

    def _frames(self, x):
        cfg = self.cfg
        need = self._rows * cfg.hop_length
        if need > self._num_samples:  # samples past the last frame are never read: zeros do
            x = tf.pad(x, [[0, 0], [0, need - self._num_samples]])
        elif need < self._num_samples:
            x = x[:, :need]
        rows = tf.reshape(x, [-1, self._rows, cfg.hop_length])
        parts = []
        for j in range(self._blocks):
            width = min(cfg.hop_length, cfg.win_length - j * cfg.hop_length)
            parts.append(rows[:, j : j + self._num_frames, :width])
        return tf.concat(parts, axis=-1)  # (batch, frames, win_length)

    def call(self, inputs):
        cfg = self.cfg
        x = tf.cast(inputs, tf.float32)
        frames = tf.reshape(self._frames(x), [-1, cfg.win_length])  # (batch*frames, win)
        if self.dft == "matmul":
            spec = tf.matmul(frames, self._dft)  # (batch*frames, 2K): [re | im]
            re, im = spec[:, : self._nbins], spec[:, self._nbins :]
        else:
            padded = tf.pad(frames * self._window, [[0, 0], [0, cfg.n_fft - cfg.win_length]])
            spec = tf.signal.rfft(padded, fft_length=[cfg.n_fft])
            # Slice after REAL/IMAG: a strided slice of a complex tensor is not a TFLite builtin.
            re = tf.math.real(spec)[:, self._lo : self._hi]
            im = tf.math.imag(spec)[:, self._lo : self._hi]
        power = re * re + im * im
        mel = tf.matmul(power, self._mel)
        out = tf.math.log(mel + cfg.log_offset)
        return tf.reshape(out, [-1, self._num_frames, cfg.n_mels])

    def compute_output_shape(self, input_shape):
        samples = input_shape[-1]
        frames = 1 + (samples - self.cfg.win_length) // self.cfg.hop_length
        return tf.TensorShape([input_shape[0], frames, self.cfg.n_mels])

    def get_config(self):
        return {**super().get_config(), "cfg": self.cfg.to_dict(), "dft": self.dft}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(FrontendConfig.from_dict(config.pop("cfg")), **config)


def frontend_model(cfg: FrontendConfig = DEFAULT_FRONTEND, dft: str = "rfft") -> keras.Model:
    """A model that is just the frontend: raw ``(clip_samples,)`` audio in, log-mel out."""
    audio = keras.Input((cfg.clip_samples,), name="audio")
    return keras.Model(audio, LogMel(cfg, dft=dft, name="log_mel")(audio), name="frontend")


def tflite_op_names(flatbuffer: bytes) -> list[str]:
    """Operator names in a TFLite flatbuffer (builtins by name, custom ops such as
    ``FlexRFFT`` or ``LceQuantize`` by their custom code), in graph order."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    builtin_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for oc in model.operatorCodes:
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        if code == schema.BuiltinOperator.CUSTOM:
            name = oc.customCode.decode() if isinstance(oc.customCode, bytes) else str(oc.customCode)
        else:
            name = builtin_names.get(code, f"BUILTIN_{code}")
        codes.append(name)
    return [codes[op.opcodeIndex] for sg in model.subgraphs for op in sg.operators]


def convert(model: keras.Model, converter: str = "lce", quiet: bool = False) -> bytes:
    """Float32 TFLite flatbuffer of ``model``, builtin ops only (no Select-TF fallback).

    ``converter="lce"`` uses ``larq_compute_engine.convert_keras_model`` (what deploy uses),
    ``"tflite"`` the stock ``tf.lite.TFLiteConverter``. ``quiet`` hides the converters' native
    log output unless conversion fails. Note that the LCE converter does *not* refuse
    non-builtin ops: it emits them as custom ops (e.g. a complex ``StridedSlice``); check the
    result with :func:`tflite_op_names`.
    """
    if quiet:
        with quiet_native_output():
            return convert(model, converter, quiet=False)
    if converter == "lce":
        import larq_compute_engine as lce

        return lce.convert_keras_model(model)
    if converter == "tflite":
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return conv.convert()
    raise ValueError(f"converter must be 'lce' or 'tflite', got {converter!r}")
