"""Batched TensorFlow augmentation (kws/augment_tf.py) against the numpy path (kws/augment.py).

(a) the drawn parameters follow AugmentConfig's distributions, and the effective gain / SNR /
    noise level measured from the outputs match numpy's; (b) for the same parameters the TF
    result equals numpy's functions on real clips (a scripted Generator replays TF's draws into
    them); (c) augmented log-mel statistics match BatchMaker's; (d) per-element determinism.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from bnnkws.frontend import DEFAULT_FRONTEND as CFG

tf = pytest.importorskip("tensorflow")

from bnnkws.kws.features import augment as npaug  # noqa: E402
from bnnkws.kws.features import augment_tf as A  # noqa: E402
from bnnkws.kws.features.augment import AugmentConfig, NoiseBank  # noqa: E402
from bnnkws.kws.features.cache import Waveforms  # noqa: E402

N = CFG.clip_samples
RECIPE = AugmentConfig(offset_prob=0.3, partial_prob=0.2, generated_noise_prob=0.3)


@pytest.fixture(scope="module")
def data(sc_v2, shared_data, tmp_path_factory):
    from bnnkws.kws.data import load_dataset
    from bnnkws.kws.features.cache import load_waveforms
    from bnnkws.kws.features.pipeline import label_indices

    ds = load_dataset(str(sc_v2))
    train = ds.split("train")
    pick = np.sort(np.random.default_rng(0).choice(len(train), 320, replace=False))
    clips = [train[i] for i in pick]
    cache = tmp_path_factory.mktemp("augtf-cache")
    waves = load_waveforms(clips, CFG, cache, progress=False)
    noise = npaug.noise_files([shared_data / "speech_commands_background_noise"])
    bank = NoiseBank.from_files(noise, CFG)
    return SimpleNamespace(ds=ds, clips=clips, cache=cache, waves=waves, y=label_indices(
        clips, ds.labels), labels=ds.labels, noise=noise, bank=bank, mixed=_mixed(waves))


def _mixed(w: Waveforms) -> Waveforms:
    """Real clips made long (two joined, 1.0-2.0 s: random crops) and short (odd lengths
    0.3-0.95 s: centring), besides the 1-s ones."""
    rng = np.random.default_rng(1)
    parts = []
    for i in range(len(w)):
        y = w.data[w.offsets[i]:w.offsets[i + 1]]
        if i % 3 == 1:
            j = (i + 7) % len(w)
            y = np.concatenate([y, w.data[w.offsets[j]:w.offsets[j + 1]]])
            y = y[:int(rng.integers(N + 1, 2 * N + 1))]
        elif i % 3 == 2:
            y = y[:int(rng.integers(0.3 * N, 0.95 * N)) | 1]
        parts.append(y)
    lens = [len(p) for p in parts]
    return Waveforms(np.concatenate(parts), np.concatenate([[0], np.cumsum(lens)]),
                     np.ones(len(parts), bool))


def _batch(waves, y, rows=None, epoch=0, aux=None):
    """One padded batch dict of the given rows."""
    el = A.elements_from_waveforms(waves, y, aux=aux, epoch=epoch, order=rows)
    n = int(el.cardinality())
    return next(iter(A.batch_elements(el, n, int(A.MAX_SECONDS * CFG.sample_rate))))


def _np(params: dict) -> dict:
    return {k: v.numpy() for k, v in params.items()}


class Scripted(np.random.Generator):
    """A ``numpy.random.Generator`` answering each call with the next recorded value,
    checked against the call's kind, size and range (a subclass, so ``default_rng`` passes it
    through as ``pad_or_crop`` needs)."""

    def __init__(self):
        super().__init__(np.random.PCG64(0))
        self.q = []

    def add(self, kind, value):
        self.q.append((kind, np.asarray(value)))

    def _next(self, kind, size, lo, hi, closed=False):
        k, v = self.q.pop(0)
        assert k == kind, f"numpy asked for {kind}, script has {k}"
        if size is None:
            assert v.ndim == 0
        else:
            assert v.shape == (size,), (v.shape, size)
        assert np.all(v >= lo) and (np.all(v <= hi) if closed else np.all(v < hi)), (kind, lo, hi)
        return v.item() if size is None else v

    def integers(self, low, high=None, size=None):
        if high is None:
            low, high = 0, low
        return self._next("integers", size, low, high)

    def random(self, size=None):
        return self._next("random", size, 0.0, 1.0)

    def uniform(self, low=0.0, high=1.0, size=None):
        return self._next("uniform", size, low, high, closed=True)


def _script_place(rng, p, lengths, max_shift, shifts=True):
    for i, n in enumerate(lengths):
        if n > N:
            rng.add("integers", p["crop_start"][i])
        if max_shift and shifts:
            rng.add("integers", p["shift"][i])


def _script_masks(rng, p, a):
    for i in range(len(p["shift"])):
        for kind, key in (("time", "t0"), ("freq", "f0")):
            for w, s in zip(p[f"{kind}_w"][i], p[f"{kind}_{key}"][i]):
                rng.add("integers", w)
                if w:
                    rng.add("integers", s)


def _jitter_ks(v, lo, hi, rng):
    """KS p-value of integers ``v`` against the discrete uniform on ``[lo, hi]`` (per-row
    bounds allowed): ``(v - lo + U(0, 1)) / (hi - lo + 1)`` is U(0, 1) exactly then."""
    v, lo, hi = (np.asarray(x, np.float64) for x in (v, lo, hi))
    assert np.all(v >= lo) and np.all(v <= hi)
    return stats.kstest((v - lo + rng.random(v.shape)) / (hi - lo + 1), "uniform").pvalue


# ------------------------------------------------------------------------- randomness


def test_element_uniforms_uniform_independent_and_pure():
    keys = tf.range(20000, dtype=tf.int64)
    u = A.element_uniforms(7, 3, keys, 6).numpy()
    assert u.dtype == np.float32 and u.shape == (20000, 6)
    assert u.min() >= 0.0 and u.max() < 1.0
    for j in range(6):
        assert stats.kstest(u[:, j], "uniform").pvalue > 1e-3
    # independence: draw numbers, neighbouring keys, epochs, seeds (|r| ~ 0.007 by chance)
    c = np.corrcoef(u.T)
    assert np.max(np.abs(c - np.eye(6))) < 0.035
    assert abs(np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1]) < 0.035
    other = A.element_uniforms(7, 4, keys, 6).numpy()
    assert abs(np.corrcoef(u[:, 0], other[:, 0])[0, 1]) < 0.035
    assert abs(np.corrcoef(u[:, 0], A.element_uniforms(8, 3, keys, 6).numpy()[:, 0])[0, 1]) < 0.035
    # 2-D uniformity of consecutive draws: chi-square over a 10x10 grid
    h = np.histogram2d(u[:, 0], u[:, 1], bins=10, range=[[0, 1], [0, 1]])[0]
    assert stats.chisquare(h.ravel()).pvalue > 1e-3
    # a pure function of (seed, epoch, key, draw): any subset, order or longer row agrees
    idx = np.array([19999, 5, 123, 5])
    sub = A.element_uniforms(7, 3, tf.constant(idx, tf.int64), 8).numpy()
    np.testing.assert_array_equal(sub[:, :6], u[idx])


# ------------------------------------------------------------- (a) distributions of draws


def test_draw_distributions_match_config(data):
    a = RECIPE
    aug = A.TFAugmenter(a, CFG, data.labels, data.bank, seed=5)
    # 20 epochs of the mixed-length clips: 6,400 elements
    rows = np.arange(len(data.mixed))
    ps = [_np(aug.draw_params(_batch(data.mixed, data.y, rows, epoch=e))) for e in range(20)]
    p = {k: np.concatenate([q[k] for q in ps]) for k in ps[0]}
    lengths = np.tile(data.mixed.lengths, 20)
    labels0 = np.tile(data.y, 20)
    rng = np.random.default_rng(0)
    long = lengths > N
    assert _jitter_ks(p["crop_start"][long], 0, lengths[long] - N, rng) > 1e-3
    np.testing.assert_array_equal(p["crop_start"][~long], -((N - lengths[~long]) // 2))
    ms = aug.max_shift
    assert ms == 1600
    silence = labels0 == data.labels.index("_silence_")
    speech = ~silence
    plain = ~(p["offset"] | p["partial"])
    assert _jitter_ks(p["shift"][plain], -ms, ms, rng) > 1e-3
    assert np.abs(p["shift"][plain]).max() > 0.98 * ms  # the range is reached, not halved
    # offset / partial shares among speech rows; silence rows never move off the plain shift
    assert not (p["offset"] | p["partial"])[silence].any()
    for share, want in ((p["partial"][speech].mean(), a.partial_prob),
                        (p["offset"][speech].mean(), a.offset_prob)):
        assert abs(share - want) < 4 * np.sqrt(want * (1 - want) / speech.sum())
    unknown = data.labels.index("_unknown_")
    assert np.all(p["label"][p["partial"]] == unknown) and np.all(p["aux"][p["partial"]] == -1)
    np.testing.assert_array_equal(p["label"][~p["partial"]], labels0[~p["partial"]])
    assert stats.kstest(p["keep"], "uniform", args=(0.2, 0.4)).pvalue > 1e-3
    assert abs(p["left"].mean() - 0.5) < 4 * np.sqrt(0.25 / len(p["left"]))
    assert stats.kstest(p["gain_db"], "uniform", args=(-6, 12)).pvalue > 1e-3
    mix = p["noise"]
    assert abs(mix.mean() - a.noise_prob) < 4 * np.sqrt(0.16 / len(mix))
    assert stats.kstest(p["snr_db"], "uniform", args=(5, 15)).pvalue > 1e-3
    assert stats.kstest(p["quiet_dbfs"], "uniform", args=(-60, 40)).pvalue > 1e-3
    gen = p["generated"]
    assert abs(gen[mix].mean() - 0.3) < 4 * np.sqrt(0.21 / mix.sum())
    src = p["noise_src"][mix]
    nf = aug.n_files
    assert nf == len(data.bank.arrays) == 6
    files = src[src < nf]
    assert stats.chisquare(np.bincount(files, minlength=nf)).pvalue > 1e-3
    pink = src[src >= nf] == nf + 1
    assert abs(pink.mean() - 0.5) < 4 * np.sqrt(0.25 / len(pink))
    lens = np.array([len(x) for x in data.bank.arrays] + [30 * CFG.sample_rate] * 2)
    st = p["noise_start"][mix]
    assert _jitter_ks(st, 0, lens[src] - N, rng) > 1e-3
    for kind, key, width, size in (("time", "t0", a.time_mask_frames, CFG.num_frames),
                                   ("freq", "f0", a.freq_mask_bins, CFG.n_mels)):
        w, s = p[f"{kind}_w"].ravel(), p[f"{kind}_{key}"].ravel()
        assert stats.chisquare(np.bincount(w, minlength=width + 1)).pvalue > 1e-3
        assert w.max() == width
        assert _jitter_ks(s, 0, size - w, rng) > 1e-3


def test_effective_gain_snr_and_levels_match_numpy(data):
    """Measured from the output audio, not from the parameters: a gain range off by 2x or an
    SNR applied as an amplitude ratio of 10^(snr/10) fails these two-sample tests."""
    a = AugmentConfig(time_shift=False, spec_augment=False)
    b = 1500
    tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(N) / CFG.sample_rate)).astype(np.float32)
    quiet = np.arange(b) % 5 == 0  # digital silence: the absolute-level branch
    Y = np.where(quiet[:, None], 0.0, tone[None, :]).astype(np.float32)

    def measure(out):
        """(gain dB, SNR dB of the tone rows, noise dBFS of the silent rows, noise added)."""
        g = out @ tone / (tone @ tone)
        resid = (out - g[:, None] * tone[None, :]).astype(np.float64)
        p_noise = np.mean(resid ** 2, axis=1) + 1e-30
        with np.errstate(divide="ignore"):
            snr = 10 * np.log10(np.mean((g[:, None] * tone) ** 2, axis=1) / p_noise)
        mixed = np.where(quiet, p_noise > 1e-20, snr < 60)  # float32 rounding: ~140 dB
        return (20 * np.log10(np.abs(g[~quiet])), snr[~quiet], 10 * np.log10(p_noise[quiet]),
                mixed)

    ref = measure(npaug.augment_waveforms(Y.copy(), a, np.random.default_rng(0), data.bank))
    aug = A.TFAugmenter(a, CFG, data.labels, data.bank, seed=0)
    keys = tf.range(b, dtype=tf.int64)
    batch = {"length": tf.fill([b], N), "wave": tf.zeros([b, 1], tf.int16),
             "label": tf.zeros([b], tf.int32), "aux": tf.zeros([b], tf.int32), "key": keys,
             "epoch": tf.zeros([b], tf.int64)}
    p = aug.draw_params(batch)
    got = measure(aug.waveform_ops(tf.constant(Y), p).numpy())
    (gr, sr, qr, mr), (gt, st, qt, mt) = ref, got
    assert stats.ks_2samp(gr, gt).pvalue > 1e-3
    assert np.ptp(gt) == pytest.approx(12.0, abs=0.1)
    assert stats.ks_2samp(sr[mr[~quiet]], st[mt[~quiet]]).pvalue > 1e-3
    assert st[mt[~quiet]].min() == pytest.approx(5.0, abs=0.3)
    assert st[mt[~quiet]].max() == pytest.approx(20.0, abs=0.3)
    assert stats.ks_2samp(qr[mr[quiet]], qt[mt[quiet]]).pvalue > 1e-3
    assert abs(mr.mean() - mt.mean()) < 4 * np.sqrt(2 * 0.16 / b)


# -------------------------------------------------------- (b) same parameters, same result


def test_place_equals_numpy(data):
    a = AugmentConfig()
    aug = A.TFAugmenter(a, CFG, data.labels, None, seed=2)
    rows = np.arange(96)
    batch = _batch(data.mixed, data.y, rows)
    p = _np(aug.draw_params(batch))
    rng = Scripted()
    lengths = data.mixed.lengths[rows]
    _script_place(rng, p, lengths, aug.max_shift)
    want = npaug.place([data.mixed.get(i) for i in rows], N, rng, aug.max_shift)
    assert not rng.q
    got = aug._place(batch["wave"], batch["length"], p["crop_start"], p["shift"]).numpy()
    np.testing.assert_array_equal(got, want)
    # and centred, unaugmented (validation)
    from bnnkws.frontend.reference import log_mel_batch
    from bnnkws.kws.features.cache import center_batch

    X, y, aux = aug.eval_features(batch)
    np.testing.assert_allclose(X.numpy(), log_mel_batch(center_batch(data.mixed, rows, N), CFG),
                               atol=2e-3)
    np.testing.assert_array_equal(y.numpy(), data.y[rows])


def test_window_shifts_and_partial_relabel_equal_numpy(data):
    a = AugmentConfig(offset_prob=0.4, partial_prob=0.4)
    aug = A.TFAugmenter(a, CFG, data.labels, None, seed=3)
    rows = np.arange(120)
    aux = np.arange(len(data.y), dtype=np.int32) % 4
    batch = _batch(data.mixed, data.y, rows, aux=aux)
    p = _np(aug.draw_params(batch))
    u, col = p["uniforms"], {s: i for i, s in enumerate(A.SLOTS)}
    rng = Scripted()
    lengths = data.mixed.lengths[rows]
    _script_place(rng, p, lengths, 0)
    Y0 = npaug.place([data.mixed.get(i) for i in rows], N, rng, 0)
    plain = A._integers(tf.constant(u[:, col["shift"]]), -aug.max_shift, aug.max_shift).numpy()
    rng.add("integers", plain)
    rng.add("random", u[:, col["window"]])
    rng.add("random", u[:, col["offset"]])
    rng.add("uniform", p["keep"])
    rng.add("random", u[:, col["left"]])
    speech = data.y[rows] != data.labels.index("_silence_")
    shifts, partial = npaug.window_shifts(Y0, a, rng, speech, aug.max_shift)
    assert not rng.q
    assert partial.sum() > 20 and p["offset"].sum() > 20
    np.testing.assert_array_equal(p["shift"], shifts)
    np.testing.assert_array_equal(p["partial"], partial)
    got = aug._place(batch["wave"], batch["length"], p["crop_start"], p["shift"]).numpy()
    np.testing.assert_array_equal(got, npaug.shift_rows(Y0, shifts))
    want_y = np.where(partial, data.labels.index("_unknown_"), data.y[rows])
    np.testing.assert_array_equal(p["label"], want_y)
    np.testing.assert_array_equal(p["aux"], np.where(partial, -1, aux[rows]))


def test_waveforms_logmel_and_masks_equal_numpy(data):
    """place -> augment_waveforms -> log_mel_batch -> spec_augment with TF's parameters."""
    from bnnkws.frontend.reference import log_mel_batch

    a = AugmentConfig()
    aug = A.TFAugmenter(a, CFG, data.labels, data.bank, seed=4)
    rows = np.arange(128)
    batch = _batch(data.mixed, data.y, rows)
    p = _np(aug.draw_params(batch))
    u = p["uniforms"]
    rng = Scripted()
    _script_place(rng, p, data.mixed.lengths[rows], aug.max_shift)
    Y = npaug.place([data.mixed.get(i) for i in rows], N, rng, aug.max_shift)
    rng.add("uniform", p["gain_db"])
    rng.add("random", np.where(p["noise"], 0.0, 0.999))
    mix = p["noise"]
    assert 80 < mix.sum() < 128 and not p["generated"].any()
    for s, st in zip(p["noise_src"][mix], p["noise_start"][mix]):
        rng.add("integers", s)
        rng.add("integers", st)
    rng.add("uniform", p["snr_db"][mix])
    g = 10 ** (p["gain_db"] / 20)
    quiet = np.sqrt(np.mean((Y * g[:, None].astype(np.float32)).astype(np.float64) ** 2,
                            axis=1)) < 1e-3
    rng.add("uniform", p["quiet_dbfs"][mix & quiet])
    Yn = npaug.augment_waveforms(Y.copy(), a, rng, data.bank)
    Yt = aug.waveforms(batch, p).numpy()
    np.testing.assert_allclose(Yt, Yn, rtol=0, atol=2e-6)
    tparams = {k: tf.constant(v) for k, v in p.items()}
    Xt = aug.logmel.call(tf.constant(Yt)).numpy()
    np.testing.assert_allclose(Xt, log_mel_batch(Yn, CFG), atol=2e-3)
    _script_masks(rng, p, a)
    want = npaug.spec_augment(Xt.copy(), a, rng)
    assert not rng.q
    got = aug.spec_augment(tf.constant(Xt), tparams).numpy()
    # the fill: numpy's float32 pairwise mean vs TF's reduction, ~1e-6 relative
    np.testing.assert_allclose(got, want, atol=5e-5)
    np.testing.assert_array_equal(got != Xt, want != Xt)
    assert np.mean(got != Xt) > 0.05  # masks did something
    X, y, _ = aug.apply(batch, tparams)
    # the layer's float32 arithmetic in another call: a few ulp of log-mel values near -14
    np.testing.assert_allclose(X.numpy(), got, atol=1e-4)


def test_band_limit_draws_and_filter_equal_numpy(data):
    """The band-limit draws come last, so every other draw is what it was without them; their
    share and cutoffs follow the config; with TF's draws replayed, TF's filtered waveforms are
    numpy's ``band_limit`` of the same noisy clips, and the rows not drawn are untouched."""
    a = AugmentConfig(band_limit_prob=0.4, band_limit_hz=(3400.0, 7000.0))
    plain = A.TFAugmenter(AugmentConfig(), CFG, data.labels, data.bank, seed=3)
    aug = A.TFAugmenter(a, CFG, data.labels, data.bank, seed=3)
    rows = np.arange(len(data.mixed))
    ps = [_np(aug.draw_params(_batch(data.mixed, data.y, rows, epoch=e))) for e in range(10)]
    p = {k: np.concatenate([q[k] for q in ps]) for k in ps[0]}
    band = p["band"]
    assert abs(band.mean() - 0.4) < 4 * np.sqrt(0.24 / len(band))
    assert stats.kstest(p["cutoff_hz"], "uniform", args=(3400, 3600)).pvalue > 1e-3

    batch = _batch(data.mixed, data.y, rows[:96])
    p = _np(aug.draw_params(batch))
    q = _np(plain.draw_params(batch))
    for k in q:
        if k not in ("uniforms", "band", "cutoff_hz"):
            np.testing.assert_array_equal(p[k], q[k], err_msg=k)
    np.testing.assert_array_equal(p["uniforms"][:, :plain.n_draws], q["uniforms"])
    Y = plain.waveforms(batch, {k: tf.constant(v) for k, v in q.items()}).numpy()
    band = p["band"]
    assert 20 < band.sum() < 76
    rng = Scripted()
    rng.add("random", np.where(band, 0.0, 0.999))
    rng.add("uniform", p["cutoff_hz"][band])
    want = npaug.band_limit(Y.copy(), a, rng, CFG.sample_rate)
    assert not rng.q
    got = aug.waveforms(batch, {k: tf.constant(v) for k, v in p.items()}).numpy()
    np.testing.assert_array_equal(got[~band], Y[~band])
    np.testing.assert_allclose(got[band], want[band], rtol=0, atol=1e-6)
    # the filter did something: the drawn rows lost their energy above the cutoff
    spec = np.abs(np.fft.rfft(got[band].astype(np.float64), axis=1)) ** 2
    before = np.abs(np.fft.rfft(Y[band].astype(np.float64), axis=1)) ** 2
    f = np.fft.rfftfreq(N, 1 / CFG.sample_rate)
    above = f[None, :] > p["cutoff_hz"][band][:, None]
    assert spec[above].sum() < 1e-6 * before[above].sum()


def test_generated_noise_segments_unit_rms_and_zero_mean(data):
    aug = A.TFAugmenter(AugmentConfig(), CFG, data.labels, NoiseBank([]), seed=0)
    assert aug.n_files == 0
    b = 400
    batch = {"length": tf.fill([b], N), "wave": tf.zeros([b, 1], tf.int16),
             "label": tf.zeros([b], tf.int32), "aux": tf.zeros([b], tf.int32),
             "key": tf.range(b, dtype=tf.int64), "epoch": tf.zeros([b], tf.int64)}
    p = aug.draw_params(batch)
    seg = aug.noise_segments(p).numpy().astype(np.float64)
    np.testing.assert_allclose(np.sqrt(np.mean(seg ** 2, axis=1)), 1.0, atol=1e-5)
    np.testing.assert_allclose(seg.mean(axis=1), 0.0, atol=1e-5)
    pink = p["noise_src"].numpy() == 1
    assert 0.4 < pink.mean() < 0.6
    # pink: power falls ~1/f (here 100 Hz vs 1 kHz bands, 10x), white stays flat
    spec = np.abs(np.fft.rfft(seg, axis=1)) ** 2
    ratio = spec[:, 90:110].mean(axis=1) / spec[:, 900:1100].mean(axis=1)
    assert 6 < np.median(ratio[pink]) < 15 and 0.7 < np.median(ratio[~pink]) < 1.4


# ---------------------------------------------------- (c) augmented log-mel statistics


def test_augmented_logmel_statistics_match_batchmaker(data):
    from bnnkws.kws.features.pipeline import BatchMaker

    a = RECIPE
    maker = BatchMaker(data.clips, CFG, a, data.labels, data.noise, seed=0,
                       cache_dir=data.cache, progress=False)
    Xn = np.concatenate([b[0] for e in range(2) for b in maker.epoch(64, epoch=e)])
    aug = A.TFAugmenter(a, CFG, data.labels, maker.noise, seed=0)
    Xt = np.concatenate([np.asarray(x) for e in range(2) for x, _, _ in A.make_train_pipeline(
        A.elements_from_waveforms(maker.waves, maker.y, epoch=e), aug, 64)])
    assert Xt.shape == Xn.shape
    mn, mt = Xn.mean(0), Xt.mean(0)
    sn, st = Xn.std(0), Xt.std(0)
    pooled = np.sqrt((sn ** 2 + st ** 2) / 2)
    # Two draws over the same 320 clips differ through per-clip effects (noise on/off, SNR)
    # common to all cells: numpy against itself with seeds 0..5 gives a median per-cell
    # |diff of means| / std of 0.02-0.07 and global means 0.1-0.2 apart.
    assert np.median(np.abs(mn - mt) / pooled) < 0.1
    assert abs(Xn.mean() - Xt.mean()) < 0.3
    assert 0.95 < np.median(st / sn) < 1.05
    # masked time frames (constant over the mels) and digital-silence cells (zero fill)
    tmask = lambda X: np.mean(np.ptp(X, axis=2) == 0)  # noqa: E731
    assert tmask(Xt) == pytest.approx(tmask(Xn), abs=0.01)
    assert np.mean(Xt < -13.8) == pytest.approx(np.mean(Xn < -13.8), abs=0.015)


# ---------------------------------------------------------------------- (d) determinism


def test_same_element_same_result_whatever_batching(data):
    aug = A.TFAugmenter(RECIPE, CFG, data.labels, data.bank, seed=9)
    rows = np.arange(48)
    el = lambda order, e=0: A.elements_from_waveforms(data.mixed, data.y, epoch=e,  # noqa
                                                      order=order)

    def run(order, bs, e=0):
        out = {}
        ds = A.batch_elements(el(order, e), bs, aug.max_len).map(
            lambda b: (b["key"], aug(b), aug.draw_params(b)["shift"]))
        for keys, (X, y, aux), shift in ds:
            for k, x, s in zip(keys.numpy(), X.numpy(), shift.numpy()):
                out[int(k)] = (x, s)
        return out

    one = run(rows, 48)
    other = run(rows[::-1].copy(), 7)
    for k in rows:
        assert one[k][1] == other[k][1]
        # the same arithmetic on a different batch size: float rounding of the DFT matmul at most
        np.testing.assert_allclose(one[k][0], other[k][0], atol=1e-4)
    later = run(rows, 48, e=1)
    assert np.mean([one[k][1] != later[k][1] for k in rows]) > 0.9
    assert np.mean([np.abs(one[k][0] - later[k][0]).max() > 0.1 for k in rows]) > 0.9
    assert el(rows).element_spec == A.ELEMENT_SPEC  # what kws.shards' dataset() yields
    # the pipeline yields in element order, with the labels of the elements
    X, y, aux = next(iter(A.make_train_pipeline(el(rows), aug, 16)))
    assert X.shape == (16, CFG.num_frames, CFG.n_mels) and X.dtype == tf.float32
    assert y.dtype == tf.int32 and aux.dtype == tf.int32
    np.testing.assert_allclose(X.numpy(), np.stack([one[k][0] for k in rows[:16]]), atol=1e-4)


def test_data_bench_prints_both_augmentation_rows(sc_v2, shared_data, capsys):
    from bnnkws.app.cli import main

    noise = str(shared_data / "speech_commands_background_noise")
    assert main(["data", "bench", str(sc_v2), "--clips", "150", "--noise-dir", noise]) == 0
    out = capsys.readouterr().out
    assert "\naugmented batches" in out and "tf.data augmented batches" in out
    row = next(r for r in out.splitlines() if r.startswith("tf.data"))
    assert int(row.split()[3]) == 150 - 64  # all clips but the warm-up batch
