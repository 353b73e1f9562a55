"""Log-mel as a Keras layer that converts to TFLite builtin ops only.

An exported model can then take raw 16 kHz audio as input, and the frontend's cost is part of the
measured on-device latency. The layer reproduces :mod:`bnnkws.frontend.reference` (same framing,
window, filterbank and log) in float32.

Op choice (checked by ``tests/test_frontend_keras.py`` on models converted with both
``tf.lite.TFLiteConverter`` and ``larq_compute_engine.convert_keras_model``):

* framing (``rfft`` and ``matmul``; ``fourstep`` frames inside its convolution) by RESHAPE into
  hop-sized rows, then STRIDED_SLICE + CONCATENATION of the ``ceil(win_length / hop_length)``
  shifted row blocks: static shapes only, nothing that could fall back to a Select-TF op;
* the DFT in one of three ways (``DFT_MODES``):

  - ``dft="fourstep"`` (the default): Bailey's four-step FFT with ``n_fft = 16 x 32``, as two
    ops that XNNPack and the ARM kernels vectorise. The audio is reshaped into rows of 32
    samples; a DEPTHWISE_CONV_2D over those rows (13 tall, stride 5 = one hop) does the framing,
    the window, the 16-point DFTs and the twiddle factors at once; a TRANSPOSE and a
    FULLY_CONNECTED do the 32-point DFTs of only the bins that reach the mel band; the
    filterbank's rows are permuted to that output order. 4.5 M multiply-adds of DFT per second
    of audio, 132 KB of constants;
  - ``dft="rfft"``: ``tf.signal.rfft`` of the windowed, zero-padded frame, the builtin RFFT2D;
  - ``dft="matmul"``: one FULLY_CONNECTED against a constant windowed ``(win_length, 2K)``
    cos/sin matrix restricted to the ``K = 248`` bins that carry mel weight (19.4 M
    multiply-adds, 841 KB of constants; also serves an ``n_fft`` that is not a power of two).

  All three meet the 1e-3 parity bound on real clips (``python -m bnnkws.frontend.bench``: max
  abs diff over 340 clips 7.6e-5 fourstep, 3.2e-5 rfft, 2.2e-5 matmul).
  Timed as a whole frontend model in the LCE interpreter on x86-64 (1 thread, one second of
  audio, the modes interleaved over 500 runs, in this VM's fast state; its slow state is ~1.8x
  slower for all): median fourstep 0.29 ms with XNNPack (0.44 without), rfft 0.62 (0.64),
  matmul 0.46 (0.60). TFLite's RFFT2D is a portable scalar kernel
  that no delegate takes; the four-step form is a convolution and matrix products and does
  4.3x less arithmetic than the one-matmul DFT, which matters more on the ARM targets;
* power as MUL/ADD, the filterbank as a further FULLY_CONNECTED, LOG of (mel + log_offset).
"""
from __future__ import annotations

import math
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from .quiet import quiet_native_output  # noqa: E402
from .config import DEFAULT_FRONTEND, DFT_MODES, FrontendConfig  # noqa: E402
from .reference import hann_window, mel_matrix  # noqa: E402

__all__ = ["LogMel", "dft_matrices", "fourstep_matrices", "mel_band"]


def mel_band(cfg: FrontendConfig = DEFAULT_FRONTEND) -> tuple[int, int]:
    """``[lo, hi)`` range of FFT bins with any non-zero mel weight."""
    used = np.flatnonzero(np.any(mel_matrix(cfg) > 0, axis=1))
    return int(used[0]), int(used[-1]) + 1


def _band_mel(cfg: FrontendConfig) -> np.ndarray:
    """The filterbank's rows for the bins of :func:`mel_band`, float32 ``(K, n_mels)``."""
    lo, hi = mel_band(cfg)
    return mel_matrix(cfg)[lo:hi].astype(np.float32)


def dft_matrices(cfg: FrontendConfig = DEFAULT_FRONTEND) -> tuple[np.ndarray, np.ndarray]:
    """(windowed ``[cos | -sin]`` DFT matrix ``(win_length, 2K)``, mel ``(K, n_mels)``), float32.

    Built in float64 and rounded once, so the only float32 error is in the layer's arithmetic.
    The window sits at the start of the ``n_fft`` frame (zero padding at the end); the power
    spectrum does not depend on where the padding goes (see reference.py).
    """
    lo, hi = mel_band(cfg)
    n = np.arange(cfg.win_length)[:, None]
    k = np.arange(lo, hi)[None, :]
    ang = _angle(n, k, cfg.n_fft)
    w = hann_window(cfg)[:, None]
    dft = np.concatenate([w * np.cos(ang), -w * np.sin(ang)], axis=1)
    return dft.astype(np.float32), _band_mel(cfg)


def _split(cfg: FrontendConfig) -> tuple[int, int]:
    """``n_fft = n1 * n2`` with ``n2`` the largest common divisor of ``n_fft`` and
    ``hop_length`` not above ``sqrt(2 n_fft)``: 512 and 160 -> (16, 32). ``n2`` must divide the
    hop so that every frame starts on a row of ``n2`` samples."""
    g = math.gcd(cfg.n_fft, cfg.hop_length)
    n2 = max(d for d in range(1, g + 1) if g % d == 0 and d * d <= 2 * cfg.n_fft)
    return cfg.n_fft // n2, n2


def _angle(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """``2 pi (a b mod n) / n`` in float64: integer reduction first keeps the angles exact."""
    return 2.0 * np.pi * ((a * b) % n) / n


def fourstep_matrices(cfg: FrontendConfig = DEFAULT_FRONTEND) -> dict:
    """Constants of the four-step DFT (Bailey's algorithm) of the windowed frames, float32.

    With ``n_fft = N1 * N2``, sample ``n = N2 n1 + n2`` of a frame and bin ``k = k1 + N1 k2``:
    ``X[k] = sum_n2 W_N2^(n2 k2) [sum_n1 w[n] x[n] W_N^(n k1)]``. The bracket (a length-N1 DFT
    over ``n1`` times the twiddle ``W_N^(n2 k1)``, with the window) is linear in the ``rows``
    samples ``x[N2 n1 + n2]`` of column ``n2``: with the audio as rows of ``N2`` samples (one
    channel per ``n2``), it is a depthwise convolution over rows, ``rows`` tall, stride
    ``hop / N2``, ``2 N1`` outputs per channel (``dw``: ``(rows, 1, N2, 2 N1)``, last axis
    ``(k1, re|im)``), which also does the framing. The length-N2 DFT over ``n2`` is a matmul
    (``w2``: rows ``(re|im, n2)``, columns ``(re|im, k2)``, only the ``k2`` that reach the mel
    band). ``mel`` maps the power spectrum, columns ``(k1, k2)``, to mel bands (the filterbank's
    rows in that order; zero past ``n_fft // 2``).
    """
    n1_, n2_ = _split(cfg)
    rows = math.ceil(cfg.win_length / n2_)
    _, hi = mel_band(cfg)
    k2_ = math.ceil(hi / n1_)
    n = n2_ * np.arange(rows)[:, None, None] + np.arange(n2_)[None, :, None]  # (n1, n2, 1)
    k1 = np.arange(n1_)[None, None, :]
    window = np.zeros(rows * n2_)
    window[: cfg.win_length] = hann_window(cfg)
    ang = _angle(n, k1, cfg.n_fft)
    dw = np.stack([window[n] * np.cos(ang), -window[n] * np.sin(ang)], axis=-1)
    n2 = np.arange(n2_)[:, None]
    k2 = np.arange(k2_)[None, :]
    c2, s2 = np.cos(_angle(n2, k2, n2_)), -np.sin(_angle(n2, k2, n2_))
    w2 = np.block([[c2, s2], [-s2, c2]])  # (a + ib)(c + is): [re | im] rows, [re | im] columns
    k = (np.arange(n1_)[:, None] + n1_ * np.arange(k2_)[None, :]).ravel()  # (k1, k2) -> bin
    full = mel_matrix(cfg)
    mel = np.zeros((k.size, cfg.n_mels))
    mel[k < len(full)] = full[k[k < len(full)]]
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    return {"n1": n1_, "n2": n2_, "rows": rows, "step": cfg.hop_length // n2_, "k2": k2_,
            "dw": f32(dw.reshape(rows, 1, n2_, 2 * n1_)), "w2": f32(w2), "mel": f32(mel)}


@keras.utils.register_keras_serializable(package="bnnkws")
class LogMel(keras.layers.Layer):
    """``(batch, samples)`` float32 audio -> ``(batch, frames, n_mels)`` log-mel.

    ``samples`` must be known when the layer is built (``cfg.clip_samples`` in the models
    here); it gives ``1 + (samples - win_length) // hop_length`` frames, 98 for one second.
    """

    def __init__(self, cfg: FrontendConfig | dict = DEFAULT_FRONTEND, dft: str = DFT_MODES[0], **kwargs):
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
        # Constants, not trainable weights: they are part of the definition, not of the model.
        # Each mode builds only its own (the matmul DFT matrix alone is 0.8 MB).
        if self.dft == "fourstep":
            self._fs = {k: tf.constant(v) if isinstance(v, np.ndarray) else v
                        for k, v in fourstep_matrices(cfg).items()}
            return super().build(input_shape)
        # Hop-sized rows: frame t is rows t, t+1, ... concatenated, the last one cut short.
        self._blocks = math.ceil(cfg.win_length / cfg.hop_length)
        self._rows = self._num_frames + self._blocks - 1
        self._lo, self._hi = mel_band(cfg)
        self._nbins = self._hi - self._lo
        if self.dft == "matmul":
            dft, mel = dft_matrices(cfg)
            self._dft = tf.constant(dft)
        else:
            mel = _band_mel(cfg)
            self._window = tf.constant(hann_window(cfg).astype(np.float32))
        self._mel = tf.constant(mel)
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
        if self.dft == "fourstep":
            return tf.reshape(self._fourstep(x), [-1, self._num_frames, cfg.n_mels])
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

    def _fourstep(self, x):
        """Log-mel of ``(batch, samples)`` audio through a depthwise convolution (framing,
        window, first DFTs and twiddles) and a matmul (second DFTs); see
        :func:`fourstep_matrices`."""
        f, cfg = self._fs, self.cfg
        n1, n2, k2 = f["n1"], f["n2"], f["k2"]
        need = ((self._num_frames - 1) * f["step"] + f["rows"]) * n2
        if need > self._num_samples:  # only zero-weight window taps reach past the clip
            x = tf.pad(x, [[0, 0], [0, need - self._num_samples]])
        x = tf.reshape(x[:, :need], [-1, need // n2, 1, n2])
        # The width axis is 1 wide with a 1-wide filter, so its stride changes nothing; an
        # equal one keeps the op on TensorFlow's Eigen kernel, which (unlike oneDNN's, on only
        # some CPUs) refuses unequal row/column strides.
        step = f["step"]
        y = tf.nn.depthwise_conv2d(x, f["dw"], strides=[1, step, step, 1], padding="VALID")
        # (frame, n2, k1, re|im) -> (frame, k1, re|im, n2): the second DFT's index last
        y = tf.transpose(tf.reshape(y, [-1, n2, n1, 2]), [0, 2, 3, 1])
        spec = tf.matmul(tf.reshape(y, [-1, 2 * n2]), f["w2"])  # rows (frame, k1): [re | im]
        re, im = spec[:, :k2], spec[:, k2:]
        power = tf.reshape(re * re + im * im, [-1, n1 * k2])
        return tf.math.log(tf.matmul(power, f["mel"]) + cfg.log_offset)

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


def frontend_model(cfg: FrontendConfig = DEFAULT_FRONTEND, dft: str = DFT_MODES[0]) -> keras.Model:
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
