"""Issue 18: auxiliary vocabulary heads, words at any offset or cut, noise recordings mixed in."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from bnnkws.kws.data import vocab
from bnnkws.kws.features.augment import (AugmentConfig, NoiseBank, energy_cdf, place, shift_rows,
                                         speech_extent, window_shifts)
from bnnkws.kws.data import load_dataset
from bnnkws.kws.features.cache import load_waveforms


@pytest.fixture(scope="module")
def sc_dataset(sc_v2):
    return load_dataset(sc_v2)


@pytest.fixture(scope="module")
def word_batch(sc_dataset):
    """48 real training clips of three command words, placed centred in 1 s."""
    clips = [c for w in ("yes", "left", "stop")
             for c in [c for c in sc_dataset.train if c.label == w][:16]]
    waves = load_waveforms(clips, progress=False)
    return place([waves.get(i) for i in range(len(clips))], 16000, None, 0)


def test_extra_corpus_keeps_holdout_words_and_heldout_speakers_out(sc_dataset, sc_v1_sample):
    held = sc_dataset.speakers("validation") | sc_dataset.speakers("testing")
    clips, notes = vocab.extra_clips([str(sc_v1_sample)], sc_dataset.labels, held)
    assert clips and notes
    words = {c.source for c in clips}
    assert not words & set(vocab.DEFAULT_HOLDOUT)
    assert not {c.speaker for c in clips} & held
    for c in clips:  # a command keeps its label, any other word is the task's _unknown_
        assert c.label == (c.source if c.source in sc_dataset.labels else "_unknown_")
        assert c.split == "train"
    # The vocabulary names every word of the training data outside the holdout, the commands
    # and the source words of _unknown_ clips included; silence gets no auxiliary label.
    train = list(sc_dataset.train) + clips
    v = vocab.vocabulary(train)
    assert {"yes", "stop", "marvin", "backward"} <= set(v)
    assert not set(v) & set(vocab.DEFAULT_HOLDOUT)
    idx = vocab.aux_indices(train, v)
    for c, i in zip(train, idx):
        w = vocab.clip_word(c)
        assert (i == -1) == (w is None or w in vocab.DEFAULT_HOLDOUT)
        if i >= 0:
            assert v[i] == w


def test_fsdd_digits_are_named_as_words(fsdd):
    ds = load_dataset(fsdd)
    assert {vocab.clip_word(c) for c in ds.clips} == set(vocab.DIGIT_WORDS)


def test_offset_keeps_the_word_and_cut_keeps_only_part(word_batch):
    Y = word_batch
    rng = np.random.default_rng(0)
    cfg = AugmentConfig(offset_prob=0.5, partial_prob=0.5, partial_keep=(0.2, 0.6))
    speech = np.ones(len(Y), bool)
    speech[:4] = False  # rows treated as silence get only the plain shift
    shifts, partial = window_shifts(Y, cfg, rng, speech, max_shift=0)
    assert not partial[:4].any() and (shifts[:4] == 0).all()
    assert partial[4:].any() and (~partial[4:]).any()
    moved = shift_rows(Y, shifts)
    kept = np.sum(moved.astype(np.float64) ** 2, 1) / np.sum(Y.astype(np.float64) ** 2, 1)
    # Cut rows keep about partial_keep of their energy (frame resolution: 10 ms).
    assert np.all(kept[partial] > 0.1) and np.all(kept[partial] < 0.75)
    # Offset rows keep their whole word (its 2-98 % energy span) inside the window and land
    # at varied positions, not just the plain +-100 ms shift.
    off = speech & ~partial & (shifts != 0)
    assert off.sum() >= 5
    assert np.all(kept[off] > 0.93)
    assert np.ptp(shifts[off]) > 3200
    ext = speech_extent(moved[off])
    assert np.all(ext[:, 0] >= 0) and np.all(ext[:, 1] <= 16000)


def test_energy_cdf_is_monotone_and_ends_at_one(word_batch):
    c = energy_cdf(word_batch)
    assert np.all(np.diff(c, axis=1) >= 0)
    np.testing.assert_allclose(c[:, -1], 1.0)
    assert np.all(c[:, 0] == 0)


def test_batchmaker_cut_words_become_unknown_without_aux_label(sc_dataset, tmp_path):
    from bnnkws.kws.features.pipeline import BatchMaker

    tr = sc_dataset.train
    pick = [c for c in tr if c.label == "_silence_"][:4] + [c for c in tr if c.label == "no"][:12]
    aux = np.arange(len(pick), dtype=np.int32)
    cfg = AugmentConfig(noise=False, gain=False, spec_augment=False, partial_prob=1.0)
    maker = BatchMaker(pick, augment=cfg, labels=tr.labels, seed=1, cache_dir=tmp_path,
                       progress=False, aux=aux)
    X, y, a = maker.batch(np.arange(len(pick)), np.random.default_rng(0))
    labels = np.array(tr.labels)[y]
    assert X.shape == (len(pick), 98, 64)
    assert (labels[:4] == "_silence_").all() and (a[:4] == aux[:4]).all()
    assert (labels[4:] == "_unknown_").all() and (a[4:] == -1).all()


def test_noise_bank_mixes_generated_noise_among_recordings(sc_background_noise):
    from bnnkws.frontend import DEFAULT_FRONTEND
    from bnnkws.kws.features.augment import noise_files

    files = noise_files([sc_background_noise])
    assert len(files) == 6
    with pytest.raises(FileNotFoundError, match="nowhere"):
        noise_files([sc_background_noise / "nowhere"])
    full = NoiseBank.from_files([f for f in files if "running_tap" in f], DEFAULT_FRONTEND)
    # Five seconds of the recording keep the correlation search below cheap.
    bank = NoiseBank([full.arrays[0][:5 * 16000]])
    assert not bank.generated
    tap = bank.arrays[0].astype(np.float64)
    csum = np.concatenate([[0.0], np.cumsum(tap ** 2)])
    win = np.sqrt(csum[16000:] - csum[:-16000]) + 1e-12

    def best_match(seg):  # highest normalised correlation of seg with any 1-s cut of the tap
        from scipy.signal import correlate

        c = correlate(tap, seg.astype(np.float64), mode="valid", method="fft")
        return float(np.max(c / (win * np.linalg.norm(seg))))

    rec = bank.sample(2, np.random.default_rng(0))
    gen = bank.sample(2, np.random.default_rng(0), generated_prob=1.0)
    assert all(best_match(x) > 0.999 for x in rec)  # cuts of the recording ...
    assert all(best_match(x) < 0.5 for x in gen)  # ... or generated white/pink noise
    np.testing.assert_allclose(np.sqrt(np.mean(gen.astype(np.float64) ** 2, 1)), 1.0, rtol=1e-3)


def test_masked_cross_entropy_ignores_unlabelled_clips():
    import tensorflow as tf

    from bnnkws.kws.training.train import masked_sparse_ce

    logits = tf.constant(np.random.default_rng(0).normal(size=(4, 5)), tf.float32)
    y = tf.constant([2, -1, 0, -1])
    got = masked_sparse_ce(y, logits).numpy()
    ref = tf.keras.losses.sparse_categorical_crossentropy(tf.constant([2, 0, 0, 0]), logits,
                                                          from_logits=True).numpy()
    np.testing.assert_allclose(got[[0, 2]], ref[[0, 2]], rtol=1e-6)
    assert got[1] == 0 and got[3] == 0


def test_training_with_aux_heads_saves_a_task_only_model(sc_v2, sc_v1_sample,
                                                         sc_background_noise, tmp_path):
    """A real (tiny, single-exit) run: the auxiliary heads train beside the task's exit, the
    saved weights are the task model's alone, the split stays speaker-disjoint."""
    from bnnkws.kws.training.run import load_run
    from bnnkws.kws.training.train import TrainConfig, run_training

    tc = TrainConfig(data=str(sc_v2), arch="quicknet", width=0.25, single_exit=1, epochs=1,
                     batch_size=32, max_train_clips=64, seed=0, out=str(tmp_path / "run"),
                     noise_dirs=[str(sc_background_noise)], noise_prob=0.8, snr_db=(0, 20),
                     offset_prob=0.5, partial_prob=0.1, generated_noise_prob=0.2,
                     aux_vocab=True, aux_data=[str(sc_v1_sample)],
                     cache_dir=os.environ.get("KWS_CACHE_DIR") or str(tmp_path / "cache"),
                     verbose=0)
    run = run_training(tc)
    info = json.loads((run / "aux_vocab.json").read_text())
    assert info["words"] and not set(info["words"]) & set(vocab.DEFAULT_HOLDOUT)
    assert sum(info["train_counts"].values()) > 0
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert np.isfinite(float(rows[0]["aux1_loss"])) and float(rows[0]["aux1_loss"]) > 0
    assert "val_aux1_loss" in rows[0]
    cfg, model = load_run(run, "last")
    assert list(model.output_names) == ["exit1"] and len(cfg.labels) == 12
    assert not any(layer.name.startswith("aux") for layer in model.layers)
    split = json.loads((run / "split.json").read_text())
    v1 = [p for p in split["train"] if str(sc_v1_sample) in p]
    assert v1  # the extra corpus trained ...
    ds = load_dataset(sc_v2)
    from bnnkws.kws.data import speaker_from_name
    held = ds.speakers("validation") | ds.speakers("testing")
    assert not {speaker_from_name(p) for p in v1} & held  # ... without held-out speakers


def test_synthetic_corpus_trains_aux_words_without_task_labels(sc_dataset, sc_v1_sample,
                                                               tmp_path):
    """--aux-synth: a synthetic corpus's non-task words get the aux-only task label (-1, zero
    task loss) instead of _unknown_, while its command words keep their label; the same real
    corpus through --aux-data still gives _unknown_."""
    import tensorflow as tf

    from bnnkws.kws.features.pipeline import label_indices
    from bnnkws.kws.data.synth import synthesize
    from bnnkws.kws.training.train import sparse_ce

    synth = tmp_path / "synth"
    synthesize(["apple", "yes"], synth, per_word=3, seed=0)
    held = sc_dataset.speakers("validation") | sc_dataset.speakers("testing")
    clips, _ = vocab.extra_clips([str(sc_v1_sample)], sc_dataset.labels, held,
                                 aux_only=[str(synth)])
    from_synth = [c for c in clips if str(synth) in str(c.path)]
    assert {c.source for c in from_synth} == {"apple", "yes"}
    for c in from_synth:
        assert c.label == ("yes" if c.source == "yes" else vocab.AUX_ONLY)
    assert any(c.label == "_unknown_" for c in clips if str(synth) not in str(c.path))
    y = label_indices(from_synth, sc_dataset.labels)
    assert set(y.tolist()) == {-1, sc_dataset.labels.index("yes")}
    logits = tf.constant(np.random.default_rng(0).normal(size=(len(y), len(sc_dataset.labels))),
                         tf.float32)
    loss = sparse_ce(len(sc_dataset.labels))(tf.constant(y), logits).numpy()
    assert np.all(loss[y == -1] == 0) and np.all(loss[y >= 0] > 0)


def test_am_softmax_loss_matches_hand_computation():
    """--aux-margin's loss: -log softmax of s * (cos - m [c = y]) at y, 0 for unlabelled clips;
    a margin makes a correctly ranked clip pay until its cosine leads by more than m."""
    import tensorflow as tf

    from bnnkws.kws.training.train import am_softmax_ce

    rng = np.random.default_rng(1)
    cos = rng.uniform(-1, 1, size=(6, 5))
    y = np.array([2, -1, 0, 4, -1, 1])
    s, m = 16.0, 0.2
    got = am_softmax_ce(5, s, m)(tf.constant(y), tf.constant(cos, tf.float32)).numpy()
    for i, c in enumerate(y):
        if c < 0:
            assert got[i] == 0
            continue
        z = s * cos[i].copy()
        z[c] -= s * m
        ref = -(z[c] - np.log(np.sum(np.exp(z))))
        assert got[i] == pytest.approx(ref, rel=1e-5)
    # a clip whose own cosine leads by 0.1 (< m) still pays more than plain softmax would
    lead = tf.constant([[0.5, 0.4, 0.0]], tf.float32)
    plain = am_softmax_ce(3, s, 0.0)(tf.constant([0]), lead).numpy()[0]
    assert am_softmax_ce(3, s, m)(tf.constant([0]), lead).numpy()[0] > plain + 0.5


@pytest.mark.parametrize("binary", [True, False])
def test_cosine_aux_heads_output_exact_cosines(binary):
    """The AM-softmax heads output cos(w_c, e): for a binary model sign(w) . sign(e) / d of the
    stage's embedding (so Bop trains the kernel as any binary kernel), for a real-valued one
    the cosine of the raw vectors."""
    import tensorflow as tf

    from bnnkws.kws.training import optim
    from bnnkws.kws.config import ModelConfig
    from bnnkws.kws.models import build_model
    from bnnkws.kws.training.train import with_aux_heads

    cfg = ModelConfig(arch="quicknet", width=0.25, binary=binary, single_exit=2)
    model = build_model(cfg)
    aux = with_aux_heads(model, cfg, 7, cosine=True)
    x = np.random.default_rng(0).normal(size=(3, cfg.frontend.num_frames,
                                              cfg.frontend.n_mels)).astype(np.float32)
    cos = aux(x, training=False)["aux2"].numpy()
    stages = [model.get_layer(f"stage{k}") for k in (1, 2)]
    emb = stages[1](stages[0](x, training=False)["fmap"], training=False)["embedding"].numpy()
    w = aux.get_layer("aux_dense2").get_weights()[0]
    if binary:
        sg = lambda a: np.where(a >= 0, 1.0, -1.0)  # noqa: E731  (larq's ste_sign: sign(0) = 1)
        ref = sg(emb) @ sg(w) / emb.shape[1]
        assert aux.get_layer("aux_dense2") in [layer for layer in aux.layers]
        assert any(v is aux.get_layer("aux_dense2").kernel
                   for v in optim.binary_variables(aux))
    else:
        ref = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ \
            (w / np.linalg.norm(w, axis=0, keepdims=True))
    assert cos.shape == (3, 7)
    np.testing.assert_allclose(cos, ref, atol=1e-5)
    assert np.all(np.abs(cos) <= 1 + 1e-6)


def test_training_with_am_softmax_aux_heads(sc_v2, sc_v1_sample, tmp_path):
    """A real tiny run with --aux-margin: the margin loss trains beside the task's exit and
    the saved model is the task's alone; the option is refused without --aux-vocab."""
    from bnnkws.kws.training.run import load_run
    from bnnkws.kws.training.train import TrainConfig, TrainError, run_training

    with pytest.raises(TrainError, match="--aux-margin needs --aux-vocab"):
        TrainConfig(data=str(sc_v2), aux_margin=0.2)
    with pytest.raises(TrainError, match="aux-margin must be in"):
        TrainConfig(data=str(sc_v2), aux_vocab=True, aux_margin=1.5)
    tc = TrainConfig(data=str(sc_v2), arch="quicknet", width=0.25, single_exit=1, epochs=1,
                     batch_size=32, max_train_clips=64, seed=0, out=str(tmp_path / "run"),
                     aux_vocab=True, aux_data=[str(sc_v1_sample)], aux_margin=0.2,
                     cache_dir=os.environ.get("KWS_CACHE_DIR") or str(tmp_path / "cache"),
                     verbose=0)
    run = run_training(tc)
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert np.isfinite(float(rows[0]["aux1_loss"])) and float(rows[0]["aux1_loss"]) > 0
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["aux_margin"] == 0.2 and saved["aux_scale"] == 16.0
    cfg, model = load_run(run, "last")
    assert list(model.output_names) == ["exit1"]
    assert not any(layer.name.startswith("aux") for layer in model.layers)


def test_aux_only_clips_are_drawn_per_epoch_and_rare_words_left_out(sc_v2, tmp_path):
    """--aux-only-per-epoch: an epoch holds every task clip plus N of the --aux-only clips
    (the optimizer's steps follow), and an --aux-only clip of a word too rare for an auxiliary
    class is left out of training (it would train nothing)."""
    from bnnkws.kws.data.synth import synthesize
    from bnnkws.kws.training.train import TrainConfig, TrainError, prepare_data

    synth = tmp_path / "synth"
    synthesize(["apple", "cherry", "melon"], synth, per_word=6, seed=0, progress=False)
    for f in sorted((synth / "melon").iterdir())[2:]:  # melon: 2 clips, below --aux-min-clips
        f.unlink()
    with pytest.raises(TrainError, match="--aux-only-per-epoch draws from the --aux-only"):
        TrainConfig(data=str(sc_v2), aux_vocab=True, aux_only_per_epoch=5)
    cache = os.environ.get("KWS_CACHE_DIR") or str(tmp_path / "cache")
    tc = dict(data=str(sc_v2), max_train_clips=40, seed=0, aux_vocab=True,
              aux_synth=[str(synth)], aux_min_clips=3, cache_dir=cache, verbose=0)
    every = prepare_data(TrainConfig(**tc))
    drawn = prepare_data(TrainConfig(**tc, aux_only_per_epoch=5))
    assert "melon" not in every.aux_labels and {"apple", "cherry"} <= set(every.aux_labels)
    assert len(every.train_y) == 40 + 12, "the two melon clips are left out"
    assert any("fewer than 3 clips left out" in n for n in every.aux_info["notes"])
    assert every.num_train == 52 and drawn.num_train == 40 + 5
