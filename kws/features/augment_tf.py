"""Training augmentation as batched TensorFlow ops, for ``tf.data`` (issue #20).

The same augmentation as :mod:`bnnkws.kws.features.augment` + ``BatchMaker.batch`` (placement, time
shift or the offset/partial window shifts, gain, background noise at an SNR, band limiting,
log-mel, SpecAugment), but as graph ops over a padded batch, so ``tf.data`` runs it on parallel threads
instead of one Python generator.

Randomness is per element, not per batch: every draw of an element is a pure function of
``(seed, epoch, key, draw number)`` (:func:`element_uniforms`, a counter-based splitmix64
hash). The augmented example therefore does not depend on which batch the element lands in,
the batch size, ``tf.data`` sharding across workers or a resumed run.

The draws are numbered by :data:`SLOTS`, then the SpecAugment masks, then :data:`BAND_SLOTS`; :meth:`TFAugmenter.draw_params` returns them as named
per-element parameters and :meth:`TFAugmenter.apply` applies given parameters, so tests can
compare both the distributions and the arithmetic with the numpy path.

The numpy path draws from one ``numpy.random.Generator`` per epoch in batch order; this one
draws the same distributions from a different generator, so the two agree in distribution,
not example for example.
"""
from __future__ import annotations

import numpy as np

from bnnkws.frontend import DEFAULT_FRONTEND, FrontendConfig
from bnnkws.frontend.keras_layer import LogMel  # sets TF_USE_LEGACY_KERAS before TF loads

import tensorflow as tf  # noqa: E402

from bnnkws.kws.features.augment import BAND_EDGE_HZ, AugmentConfig, NoiseBank  # noqa: E402
from bnnkws.kws.features.cache import MAX_SECONDS, Waveforms, generated_noise  # noqa: E402

__all__ = ["SLOTS", "BAND_SLOTS", "element_uniforms", "TFAugmenter", "make_train_pipeline",
           "elements_from_waveforms", "batch_elements", "with_length", "ELEMENT_SPEC", "DEFAULT_DFT"]

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_INT16 = 32767.0
# Fastest LogMel DFT mode inside tf.data on the 2-core x86 dev VM (``kws data bench
# speech_commands_v2_test --clips 3000 --dft MODE``, 64-clip batches, default AugmentConfig,
# machine shared, load ~3): wall clips/s rfft 3,750 (3,380 with TF_ENABLE_ONEDNN_OPTS=0),
# matmul 1,800 (1,730), fourstep 1,600 (1,210). Batched TF's rfft kernel wins here; the
# four-step form is the fastest only as a TFLite model, its target.
DEFAULT_DFT = "rfft"

# Draw numbers of an element; the SpecAugment masks follow as (width, position) pairs.
SLOTS = ("crop", "shift", "window", "offset", "keep", "left", "gain", "mix", "generated",
         "pink", "file", "start", "snr", "quiet")
_SLOT = {name: i for i, name in enumerate(SLOTS)}
# Band limiting's draws (is the row low-passed, its cutoff) come after the masks, so that adding
# them left every earlier draw number, and so the runs trained before, as they were.
BAND_SLOTS = ("band", "cutoff")

ELEMENT_SPEC = {"wave": tf.TensorSpec([None], tf.int16), "label": tf.TensorSpec([], tf.int32),
                "aux": tf.TensorSpec([], tf.int32), "key": tf.TensorSpec([], tf.int64),
                "epoch": tf.TensorSpec([], tf.int64)}


# ------------------------------------------------------------------------------ randomness


def _u64(v: int) -> tf.Tensor:
    return tf.constant(int(v) & _M64, tf.uint64)


def _mix64(z: tf.Tensor) -> tf.Tensor:
    """splitmix64's finaliser (Stafford's mix 13): a bijection of uint64 whose every output
    bit depends on every input bit. uint64 multiply wraps modulo 2^64 (TF's CPU kernels)."""
    rs, xor = tf.bitwise.right_shift, tf.bitwise.bitwise_xor
    z = xor(z, rs(z, _u64(30))) * _u64(0xBF58476D1CE4E5B9)
    z = xor(z, rs(z, _u64(27))) * _u64(0x94D049BB133111EB)
    return xor(z, rs(z, _u64(31)))


def _as_u64(x) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    if x.dtype == tf.uint64:
        return x
    return tf.bitcast(tf.cast(x, tf.int64), tf.uint64)


def _element_bits(seed, epoch, keys, n: int) -> tf.Tensor:
    """``(b, n)`` uint64: ``h_j = mix(H + (j + 1) G)`` with the element's stream
    ``H = mix(mix(mix(seed + G) ^ epoch + G) ^ key + G)``: splitmix64 run as a counter-based
    generator (``G`` the golden-ratio increment), so draw ``j`` needs no draws before it."""
    xor, g = tf.bitwise.bitwise_xor, _u64(_GOLDEN)
    keys = tf.reshape(_as_u64(keys), [-1])
    h = _mix64(_u64(seed) + g)
    h = _mix64(xor(h, _as_u64(epoch)) + g)  # epoch: scalar or (b,)
    h = _mix64(xor(h, keys) + g)
    j = tf.range(1, n + 1, dtype=tf.int64)
    return _mix64(h[:, None] + tf.bitcast(j, tf.uint64)[None, :] * g)


def element_uniforms(seed: int, epoch, keys, n: int) -> tf.Tensor:
    """``float32 (b, n)`` uniform in ``[0, 1)``: the top 24 bits of :func:`_element_bits`
    over ``2^24`` (exact in float32, so never rounds up to 1)."""
    bits = tf.bitwise.right_shift(_element_bits(seed, epoch, keys, n), _u64(40))
    return tf.cast(bits, tf.float32) * (1.0 / (1 << 24))


def _uniforms64(seed: int, epoch, keys, n: int) -> tf.Tensor:
    """``float64 (b, n)`` uniform in ``[0, 1)`` from the top 53 bits: integer draws over
    ranges of millions of samples (noise-file offsets) need more than 24 bits."""
    bits = tf.bitwise.right_shift(_element_bits(seed, epoch, keys, n), _u64(11))
    return tf.cast(bits, tf.float64) * (1.0 / (1 << 53))


def _integers(u: tf.Tensor, lo, hi) -> tf.Tensor:
    """Integers uniform in ``[lo, hi]`` (inclusive, per element) from uniforms ``u``, as
    ``numpy.random.Generator.integers(lo, hi + 1)`` draws them; int32."""
    lo = tf.cast(lo, tf.float64)
    span = tf.cast(hi, tf.float64) - lo + 1.0
    v = lo + tf.floor(u * span)
    return tf.cast(tf.minimum(v, lo + span - 1.0), tf.int32)


def _between(u: tf.Tensor, bounds) -> tf.Tensor:
    """``U(a, b)`` as ``Generator.uniform(a, b)``: ``a + (b - a) u``, float64."""
    a, b = float(bounds[0]), float(bounds[1])
    return a + (b - a) * u


# ------------------------------------------------------------------------------ augmenter


class TFAugmenter:
    """Batched, per-element-seeded training augmentation: ``batch dict -> (logmel, label,
    aux)``.

    ``batch`` (from :func:`make_train_pipeline`'s ``padded_batch``): ``wave`` int16 ``(b, L)``
    zero padded, ``length`` ``(b,)`` real lengths, ``label``, ``aux``, ``key``, ``epoch``.

    ``noise``: a :class:`NoiseBank` (its recordings become one constant tensor; a random unit-RMS
    1-s segment is a gather), ``None`` for no noise (as :func:`augment.augment_waveforms`).
    Generated noise (a bank without recordings, and the ``generated_noise_prob`` share) is a
    random 1-s segment of 30 s of white and 30 s of pink noise made once with
    :func:`features.generated_noise`, then mean-removed and scaled to unit RMS as that function
    does. This is statistically the same as fresh generated noise: both are stationary Gaussian
    noise with the same spectrum (pink: power ~ 1/f; a 1-s cut of the longer signal differs only
    below 1 Hz, far under the 60-Hz mel floor) and each segment is normalised alike; only the
    samples are reused across examples, 30 s of them (480,000 distinct start points per kind).

    ``dft``: the :class:`LogMel` DFT mode; ``DEFAULT_DFT`` was the fastest in ``tf.data`` here.
    """

    def __init__(self, augment: AugmentConfig | None = None,
                 cfg: FrontendConfig = DEFAULT_FRONTEND, labels=(),
                 noise: NoiseBank | None = None, seed: int = 0, dft: str = DEFAULT_DFT,
                 generated_seconds: float = 30.0):
        self.augment = a = augment if augment is not None else AugmentConfig()
        self.cfg = cfg
        self.seed = int(seed)
        self.labels = list(labels)
        self.n = cfg.clip_samples
        self.max_len = int(MAX_SECONDS * cfg.sample_rate)
        self.max_shift = (int(round(a.time_shift_ms * cfg.sample_rate / 1000))
                          if a.time_shift else 0)
        self.windowed = bool(a.offset_prob or a.partial_prob)
        self.silence = self.labels.index("_silence_") if "_silence_" in self.labels else -1
        self.unknown = self.labels.index("_unknown_") if "_unknown_" in self.labels else -1
        if a.partial_prob and self.unknown < 0:
            raise ValueError(f"partial_prob needs an _unknown_ label to give cut words; "
                             f"labels are {self.labels}")
        self._band_base = len(SLOTS) + 2 * (a.time_masks + a.freq_masks)
        self.n_draws = self._band_base + len(BAND_SLOTS)
        self._noise_bank(noise, generated_seconds)
        self.logmel = LogMel(cfg, dft=dft)
        self.logmel.build(tf.TensorShape([None, self.n]))

    def _noise_bank(self, noise: NoiseBank | None, seconds: float) -> None:
        """One float32 constant: the recordings, then generated white, then pink; ``_src_off``
        / ``_src_len`` locate source ``i`` (files ``0..nf-1``, white ``nf``, pink ``nf+1``)."""
        self.has_noise = bool(self.augment.noise and noise is not None)
        self.n_files = 0
        if not self.has_noise:
            return
        files = [] if noise.generated else list(noise.arrays)
        rng = np.random.default_rng([self.seed, 0x6E6F697365])  # "noise"
        gen = [generated_noise(k, int(seconds * self.cfg.sample_rate), rng)
               for k in ("white", "pink")]
        parts = [np.asarray(x, np.float32) for x in files + gen]
        lens = np.array([len(x) for x in parts], np.int64)
        self.n_files = len(files)
        bank32 = np.concatenate(parts)
        self._bank = tf.constant(bank32)
        self._src_off = tf.constant(np.concatenate([[0], np.cumsum(lens)[:-1]]), tf.int64)
        self._src_len = tf.constant(lens, tf.int64)
        bank = bank32.astype(np.float64)
        # Segment means and mean squares in O(1) per row: differences of cumulative sums.
        self._csum = tf.constant(np.concatenate([[0.0], np.cumsum(bank)]))
        self._csum2 = tf.constant(np.concatenate([[0.0], np.cumsum(bank * bank)]))

    # ----------------------------------------------------------------------------- draws

    def draw_params(self, batch: dict) -> dict:
        """Every random choice of each element of ``batch``, named (all ``(b,)`` unless said):

        ``crop_start`` int32 (wave index read at window sample 0 before the shift: a random
        crop offset for clips longer than the window, minus the centring pad otherwise),
        ``shift`` int32 (samples, positive = later), ``offset``/``partial`` bool (window
        placements), ``keep`` float64, ``left`` bool (the cut side), ``gain_db`` float64,
        ``noise`` bool, ``generated`` bool, ``noise_src`` int32 (file index, ``n_files`` white,
        ``n_files + 1`` pink), ``noise_start`` int64, ``snr_db``/``quiet_dbfs`` float64,
        ``time_w``/``time_t0``/``freq_w``/``freq_f0`` int32 ``(b, masks)``, ``band`` bool (the
        row is low-passed) and ``cutoff_hz`` float64, ``label``, ``aux`` int32 after the
        partial relabelling, and ``uniforms`` float64 ``(b, n_draws)``, the raw draws (columns
        :data:`SLOTS`, then the masks, then :data:`BAND_SLOTS`) they were made from.
        """
        a, n = self.augment, self.n
        length = tf.cast(batch["length"], tf.int32)
        u = _uniforms64(self.seed, batch["epoch"], batch["key"], self.n_draws)
        col = lambda name: u[:, _SLOT[name]]  # noqa: E731
        p = {"label": tf.cast(batch["label"], tf.int32), "aux": tf.cast(batch["aux"], tf.int32),
             "uniforms": u}
        long = length > n
        p["crop_start"] = tf.where(long, _integers(col("crop"), 0, length - n),
                                   -((n - length) // 2))
        ms = self.max_shift
        p["shift"] = (_integers(col("shift"), -ms, ms) if ms
                      else tf.zeros_like(length))
        b = tf.shape(length)[0]
        false = tf.zeros([b], tf.bool)
        p.update(offset=false, partial=false, keep=_between(col("keep"), a.partial_keep),
                 left=col("left") < 0.5)
        if self.windowed:
            placed = self._place(batch["wave"], length, p["crop_start"], tf.zeros_like(length))
            self._window_shifts(placed, p, u)
        self._noise_draws(p, u)
        self._mask_draws(p, u)
        band = u[:, self._band_base]
        p["band"] = band < a.band_limit_prob
        p["cutoff_hz"] = _between(u[:, self._band_base + 1], a.band_limit_hz)
        return p

    def _window_shifts(self, Y: tf.Tensor, p: dict, u: tf.Tensor) -> None:
        """The offset/partial placements of :func:`augment.window_shifts` (same formulas:
        offset uniform in ``[-s, n - e]``, a cut ``-C^-1(1 - k)`` or ``n - C^-1(k)``)."""
        a, n, frame = self.augment, self.n, 160
        cdf = _energy_cdf(Y, frame)
        inv = lambda q: _cdf_inverse(cdf, q, frame)  # noqa: E731
        b = tf.shape(Y)[0]
        s = tf.maximum(inv(tf.fill([b], 0.02)) - frame, 0)
        e = tf.minimum(inv(tf.fill([b], 0.98)), n)
        speech = p["label"] != self.silence
        w = u[:, _SLOT["window"]]
        partial = speech & (w < a.partial_prob)
        offset = speech & ~partial & (w < a.partial_prob + a.offset_prob)
        moved = _integers(u[:, _SLOT["offset"]], -s, n - e)
        k = p["keep"]
        cut = tf.where(p["left"], -inv(1.0 - k), n - inv(k))
        p["shift"] = tf.where(partial, cut, tf.where(offset, moved, p["shift"]))
        p["offset"], p["partial"] = offset, partial
        p["label"] = tf.where(partial, tf.constant(self.unknown, tf.int32), p["label"])
        p["aux"] = tf.where(partial, tf.constant(-1, tf.int32), p["aux"])

    def _noise_draws(self, p: dict, u: tf.Tensor) -> None:
        a = self.augment
        col = lambda name: u[:, _SLOT[name]]  # noqa: E731
        p["gain_db"] = _between(col("gain"), a.gain_db)
        p["noise"] = (col("mix") < a.noise_prob) if self.has_noise else tf.zeros_like(
            p["left"])
        p["snr_db"] = _between(col("snr"), a.snr_db)
        p["quiet_dbfs"] = _between(col("quiet"), a.quiet_noise_dbfs)
        nf = self.n_files
        if nf == 0:
            gen = tf.ones_like(p["left"])
        else:
            gen = col("generated") < a.generated_noise_prob
        p["generated"] = gen & p["noise"]
        pink = col("pink") < 0.5
        src = tf.where(gen, nf + tf.cast(pink, tf.int32),
                       _integers(col("file"), 0, max(nf - 1, 0)))
        p["noise_src"] = src
        if self.has_noise:
            span = tf.gather(self._src_len, src) - self.n
            p["noise_start"] = tf.cast(_integers(col("start"), 0, span), tf.int64)
        else:
            p["noise_start"] = tf.zeros_like(src, tf.int64)

    def _mask_draws(self, p: dict, u: tf.Tensor) -> None:
        """Mask ``i``: width ``w ~ U{0..W}``, start ``U{0..max(size - w, 0)}`` (as numpy)."""
        a = self.augment
        base = len(SLOTS)
        for kind, at, count, width, size in (("time", "t0", a.time_masks, a.time_mask_frames,
                                              self.cfg.num_frames),
                                             ("freq", "f0", a.freq_masks, a.freq_mask_bins,
                                              self.cfg.n_mels)):
            ws, starts = [], []
            for _ in range(count):
                w = _integers(u[:, base], 0, width)
                ws.append(w)
                starts.append(_integers(u[:, base + 1], 0, tf.maximum(size - w, 0)))
                base += 2
            b = tf.shape(u)[0]
            p[f"{kind}_w"] = tf.stack(ws, 1) if ws else tf.zeros([b, 0], tf.int32)
            p[f"{kind}_{at}"] = tf.stack(starts, 1) if starts else tf.zeros([b, 0], tf.int32)

    # ----------------------------------------------------------------------------- apply

    def __call__(self, batch: dict):
        """``(logmel float32 (b, frames, n_mels), label int32 (b,), aux int32 (b,))``."""
        return self.apply(batch, self.draw_params(batch))

    def apply(self, batch: dict, params: dict):
        """The augmentation with the given parameters (see :meth:`draw_params`)."""
        a = self.augment
        X = self.logmel.call(self.waveforms(batch, params))
        if a.spec_augment:
            X = self.spec_augment(X, params)
        return X, params["label"], params["aux"]

    def waveforms(self, batch: dict, params: dict) -> tf.Tensor:
        """``(b, n)`` float32 augmented audio: placed and shifted, gain, noise, band limit."""
        length = tf.cast(batch["length"], tf.int32)
        Y = self._place(batch["wave"], length, params["crop_start"], params["shift"],
                        self._gain(params) if self.augment.gain else None)
        if self.has_noise:
            Y = self.add_noise(Y, params)
        return self.band_limit(Y, params) if self.augment.band_limit_prob else Y

    def waveform_ops(self, Y: tf.Tensor, params: dict) -> tf.Tensor:
        """Gain then noise on placed ``(b, n)`` audio, as :func:`augment.augment_waveforms`
        (:meth:`apply` folds the gain into the placement instead)."""
        if self.augment.gain:
            Y = Y * self._gain(params)[:, None]
        return self.add_noise(Y, params) if self.has_noise else Y

    def band_limit(self, Y: tf.Tensor, params: dict) -> tf.Tensor:
        """The ``band`` rows of ``(b, n)`` audio low-passed at their ``cutoff_hz`` with
        :func:`augment.band_gain`'s raised-cosine gain on the real FFT (float64, as numpy);
        the other rows are returned untouched, not round-tripped through the FFT."""
        n, rate = self.n, self.cfg.sample_rate
        f = tf.constant(np.fft.rfftfreq(n, 1.0 / rate))
        x = (f[None, :] - (params["cutoff_hz"][:, None] - BAND_EDGE_HZ)) / BAND_EDGE_HZ
        H = 0.5 * (1.0 + tf.cos(np.pi * tf.clip_by_value(x, 0.0, 1.0)))
        spec = tf.signal.rfft(tf.cast(Y, tf.float64), fft_length=[n])
        low = tf.signal.irfft(spec * tf.cast(H, tf.complex128), fft_length=[n])
        return tf.where(params["band"][:, None], tf.cast(low, Y.dtype), Y)

    @staticmethod
    def _gain(params: dict) -> tf.Tensor:
        """``g = 10^(dB/20)`` (an amplitude factor), float64 rounded to float32 as numpy."""
        return tf.cast(tf.pow(tf.constant(10.0, tf.float64), params["gain_db"] / 20.0),
                       tf.float32)

    def add_noise(self, Y: tf.Tensor, params: dict) -> tf.Tensor:
        """``Y + level u`` on the ``noise`` rows, ``u`` the unit-RMS segment: ``level =
        rms(Y) / 10^(snr/20)`` (SNR in power dB, so the amplitude ratio is ``10^(snr/20)``),
        or ``10^(dBFS/20)`` for quiet rows (``rms(Y) < 1e-3``).

        The segment's mean and RMS come from cumulative sums of the bank (float64), so the
        normalisation and the level are one per-row scale (and a per-row offset removing a
        generated segment's mean): ``level (x - m) / (rms + eps)``, ``m = 0`` for recordings.
        """
        ten = tf.constant(10.0, tf.float64)
        rms = tf.sqrt(tf.cast(tf.reduce_mean(tf.square(Y), axis=1), tf.float64))
        level = tf.where(rms < 1e-3, tf.pow(ten, params["quiet_dbfs"] / 20.0),
                         rms / tf.pow(ten, params["snr_db"] / 20.0))
        level = tf.where(params["noise"], level, tf.zeros_like(level))
        seg, scale, offset = self._segments(params)
        scale = tf.cast(level * scale, tf.float32)[:, None]
        offset = tf.cast(level * offset, tf.float32)[:, None]
        return Y + (seg * scale - offset)

    def noise_segments(self, params: dict) -> tf.Tensor:
        """``(b, n)`` unit-RMS noise segments as ``NoiseBank.sample`` gives them."""
        seg, scale, offset = self._segments(params)
        return seg * tf.cast(scale, tf.float32)[:, None] - tf.cast(offset, tf.float32)[:, None]

    def _segments(self, params: dict):
        """Raw 1-s stretches of the bank (one slice per row) and per row ``(1 / (rms + eps),
        mean / (rms + eps))`` float64: recordings ``x / (rms + 1e-8)`` (``NoiseBank.sample``),
        generated ones first made zero-mean, ``(x - m) / (rms + 1e-12)``
        (``generated_noise``)."""
        n = self.n
        start = tf.gather(self._src_off, params["noise_src"]) + params["noise_start"]
        seg = _bank_windows(self._bank, start, n)
        s1 = (tf.gather(self._csum, start + n) - tf.gather(self._csum, start)) / n
        s2 = (tf.gather(self._csum2, start + n) - tf.gather(self._csum2, start)) / n
        gen = params["noise_src"] >= self.n_files
        mean = tf.where(gen, s1, tf.zeros_like(s1))
        eps = tf.where(gen, tf.constant(1e-12, tf.float64), tf.constant(1e-8, tf.float64))
        rms = tf.sqrt(tf.maximum(s2 - mean * mean, 0.0)) + eps
        return seg, 1.0 / rms, mean / rms

    def spec_augment(self, X: tf.Tensor, params: dict) -> tf.Tensor:
        """Masked cells (union of the time and frequency masks) take the example's mean over
        all of ``X`` before masking, as :func:`augment.spec_augment`."""
        fill = tf.reduce_mean(X, axis=[1, 2], keepdims=True)
        tmask = _span_mask(params["time_t0"], params["time_w"], self.cfg.num_frames)
        fmask = _span_mask(params["freq_f0"], params["freq_w"], self.cfg.n_mels)
        mask = tmask[:, :, None] | fmask[:, None, :]
        return tf.where(mask, fill, X)

    def eval_features(self, batch: dict) -> tuple:
        """Centred clips, log-mel only (validation): ``(logmel, label, aux)``."""
        length = tf.cast(batch["length"], tf.int32)
        n = self.n
        start = tf.where(length > n, (length - n) // 2, -((n - length) // 2))
        Y = self._place(batch["wave"], length, start, tf.zeros_like(length))
        return (self.logmel.call(Y), tf.cast(batch["label"], tf.int32),
                tf.cast(batch["aux"], tf.int32))

    def _place(self, wave, length, start, shift, gain=None) -> tf.Tensor:
        """``(b, n)`` float32: window sample ``t`` is ``wave[t - shift + start] / 32767``
        (times ``gain``) where ``0 <= t - shift < n`` (inside the placed clip) and ``0 <= t -
        shift + start < length``, zero elsewhere: ``pad_or_crop`` (crop/centre) then
        ``shift_rows``. The valid ``t`` form one interval ``[lo, hi)`` per row, read as one
        slice per row (:func:`_row_windows`)."""
        n = self.n
        lo = tf.clip_by_value(tf.maximum(shift, shift - start), 0, n)
        hi = tf.clip_by_value(tf.minimum(n + shift, length + shift - start), 0, n)
        y = tf.cast(_row_windows(wave, lo, hi, start - shift, n), tf.float32) / _INT16
        return y if gain is None else y * gain[:, None]


# tf.function: eagerly (tests, notebooks) map_fn would loop in Python; in tf.data it inlines.
@tf.function(reduce_retracing=True)
def _row_windows(rows: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor, offset: tf.Tensor,
                 n: int) -> tf.Tensor:
    """``(b, n)``: ``out[i, t] = rows[i, t + offset_i]`` for ``lo_i <= t < hi_i``, else 0.

    One slice and pad per row in a graph loop (``tf.map_fn``, not Python): copying
    contiguous runs is ~3x cheaper here than a gather of ``b n`` scalar indices.
    """
    size = tf.maximum(hi - lo, 0)
    lo = tf.where(size > 0, lo, 0)
    begin = tf.where(size > 0, lo + offset, 0)

    def one(args):
        row, b0, s, l0 = args
        return tf.pad(tf.slice(row, [b0], [s]), [[l0, n - l0 - s]])

    return tf.map_fn(one, (rows, begin, size, lo), parallel_iterations=16,
                     fn_output_signature=tf.TensorSpec([n], rows.dtype))


@tf.function(reduce_retracing=True)
def _bank_windows(bank: tf.Tensor, starts: tf.Tensor, n: int) -> tf.Tensor:
    """``(b, n)`` stretches ``bank[s_i : s_i + n]`` of a 1-D tensor, one slice per row."""
    return tf.map_fn(lambda s: tf.slice(bank, [s], [n]), starts, parallel_iterations=16,
                     fn_output_signature=tf.TensorSpec([n], bank.dtype))


def _span_mask(start: tf.Tensor, width: tf.Tensor, size: int) -> tf.Tensor:
    """``(b, size)`` bool: inside any ``[start_i, start_i + width_i)``."""
    r = tf.range(size, dtype=tf.int32)[None, None, :]
    inside = (r >= start[:, :, None]) & (r < (start + width)[:, :, None])
    return tf.reduce_any(inside, axis=1)


def _energy_cdf(Y: tf.Tensor, frame: int) -> tf.Tensor:
    """:func:`augment.energy_cdf`: ``(b, m + 1)`` float64 cumulative energy share at frame
    boundaries (all-zero rows evenly spread by the ``1e-12`` per frame)."""
    n = Y.shape[1]
    m = n // frame
    y = tf.cast(Y[:, :m * frame], tf.float64)
    e = tf.reduce_sum(tf.reshape(tf.square(y), [-1, m, frame]), axis=2) + 1e-12
    c = tf.concat([tf.zeros_like(e[:, :1]), tf.cumsum(e, axis=1)], axis=1)
    return c / c[:, -1:]


def _cdf_inverse(cdf: tf.Tensor, q: tf.Tensor, frame: int) -> tf.Tensor:
    """First frame boundary (samples) where the share reaches ``q`` (``np.searchsorted``
    left), int32."""
    i = tf.searchsorted(cdf, tf.cast(q, tf.float64)[:, None], side="left")[:, 0]
    return tf.cast(i, tf.int32) * frame


# ------------------------------------------------------------------------------- datasets


def with_length(element: dict) -> dict:
    """The element with ``length`` (int32): its unpadded sample count, known only before
    batching pads the waves."""
    return {**element, "length": tf.shape(element["wave"], out_type=tf.int32)[0]}


def batch_elements(elements: tf.data.Dataset, batch_size: int, max_len: int,
                   drop_remainder: bool = False) -> tf.data.Dataset:
    """Elements -> batch dicts: ``length`` added, waves zero padded to ``max_len``."""
    ds = elements.map(with_length)
    shapes = {k: ([max_len] if k == "wave" else []) for k in ds.element_spec}
    return ds.padded_batch(batch_size, padded_shapes=shapes, drop_remainder=drop_remainder)


def make_train_pipeline(elements: tf.data.Dataset, augmenter: TFAugmenter, batch_size: int,
                        drop_remainder: bool = False, train: bool = True) -> tf.data.Dataset:
    """Elements (:data:`ELEMENT_SPEC`) -> prefetched batches of ``(logmel, label, aux)``.

    Adds ``length``, pads the waves to ``L = MAX_SECONDS * sample_rate`` in
    ``padded_batch``, then maps the augmenter (``train=False``: :meth:`eval_features`) over
    whole batches on parallel calls, in order (``deterministic=True``; the result is a
    function of the elements anyway).
    """
    ds = batch_elements(elements, batch_size, augmenter.max_len, drop_remainder)
    fn = augmenter if train else augmenter.eval_features
    ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def elements_from_waveforms(waves: Waveforms, y, aux=None, epoch: int = 0,
                            order=None) -> tf.data.Dataset:
    """Elements of the in-memory waveform cache, the same structure as ``shards.dataset()``.

    ``key`` is the clip's position in the clip list (the waveform row), ``epoch`` the given
    one. ``order``: the rows to yield, in that order (default: every readable clip, ``ok``).
    """
    order = np.flatnonzero(waves.ok) if order is None else np.asarray(order, np.int64)
    y = np.asarray(y, np.int32)
    aux = np.full(len(y), -1, np.int32) if aux is None else np.asarray(aux, np.int32)
    starts, ends = waves.offsets[order], waves.offsets[order + 1]
    lens = (ends - starts).astype(np.int64)
    # Only the selected clips, contiguous: a ragged tensor slices into one wave per element.
    data = (np.concatenate([waves.data[s:e] for s, e in zip(starts, ends)])
            if len(order) else np.zeros(0, np.int16))
    ragged = tf.RaggedTensor.from_row_lengths(tf.constant(data, tf.int16),
                                              tf.constant(lens, tf.int64))
    ds = tf.data.Dataset.from_tensor_slices({
        "wave": ragged, "label": y[order], "aux": aux[order], "key": order.astype(np.int64),
        "epoch": np.full(len(order), epoch, np.int64)})
    # A row of a ragged tensor slices as a RaggedTensorSpec of rank 0; shards give Tensors.
    return ds.map(lambda e: {**e, "wave": tf.convert_to_tensor(e["wave"])})
