"""Issue 18: distilling a pretrained speech model's embedding into the exits' binary embeddings."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from bnnkws.kws.training import teacher as kteacher


def test_targets_are_standardised_unit_rows_and_missing_clips_get_none():
    """By hand; also: statistics from the ``fit`` rows only (the training clips)."""
    emb = np.array([[1.0, 10.0], [3.0, 10.0], [2.0, 40.0], [100.0, -100.0]])
    ok = np.array([True, True, True, False])
    t = kteacher.targets(emb, ok)
    # statistics over the first three rows only: mean (2, 20), std (sqrt(2/3), sqrt(200))
    z = (emb[:3] - [2.0, 20.0]) / [np.sqrt(2 / 3), np.sqrt(200.0)]
    np.testing.assert_allclose(t[:3], z / np.linalg.norm(z, axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(t[:3], axis=1), 1.0, rtol=1e-6)
    assert (t[3] == 0).all()
    fit = np.array([True, True, False, False])  # mean (2, 10), std (1, 1e-6 floor)
    t2 = kteacher.targets(emb, ok, fit)
    z2 = (emb[2] - [2.0, 10.0]) / [1.0 + 1e-6, 1e-6]
    np.testing.assert_allclose(t2[2], z2 / np.linalg.norm(z2), rtol=1e-5)
    with pytest.raises(kteacher.TeacherError, match="no clip"):
        kteacher.targets(emb, np.zeros(4, bool))


def test_cosine_loss_by_hand():
    t = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 0.0]], np.float32)
    p = np.array([[3.0, 4.0], [-2.0, 0.0], [5.0, 1.0]], np.float32)
    got = kteacher.cosine_loss(t, p).numpy()
    # parallel -> 0, opposite -> 2, no target -> 0 whatever the prediction
    np.testing.assert_allclose(got, [0.0, 2.0, 0.0], atol=1e-6)
    p2 = np.array([[4.0, 3.0]], np.float32)  # cos = (0.6*4 + 0.8*3) / 5 = 0.96
    np.testing.assert_allclose(kteacher.cosine_loss(t[:1], p2).numpy(), [0.04], rtol=1e-5)


def test_teacher_separates_digits_of_an_unseen_speaker(fsdd):
    """The reason to distil it: on real FSDD digits, 5 clips of one speaker per digit give
    centroids that name another speaker's digits (chance 10 %)."""
    pytest.importorskip("openwakeword", reason="the teacher ships in openwakeword "
                        "(pip install 'bnn-kws[distill]'; the test extra includes it)")
    from bnnkws.frontend.audio import load_audio
    from bnnkws.kws.data.fsdd import fsdd_files

    files = fsdd_files(fsdd)
    pick = {"theo": 5, "nicolas": 10}
    rows, digits, who = [], [], []
    for path, m in files:
        d, s = int(m.group("digit")), m.group("speaker")
        if s in pick and sum(1 for x, y in zip(digits, who) if x == d and y == s) < pick[s]:
            rows.append(load_audio(path, sr=16000, length=16000, crop="center"))
            digits.append(d)
            who.append(s)
    digits, who = np.array(digits), np.array(who)
    assert len(rows) == 150
    model = kteacher.Teacher()
    emb = kteacher.embed_clips(lambda a, b: np.stack(rows[a:b]), len(rows), model, chunk=64,
                               progress=False)
    assert emb.shape == (150, kteacher.DIM) and np.isfinite(emb).all()
    t = kteacher.targets(emb)
    tr = who == "theo"
    centroids = np.stack([t[tr & (digits == d)].mean(0) for d in range(10)])
    pred = np.argmax(t[~tr] @ centroids.T, axis=1)
    assert np.mean(pred == digits[~tr]) > 0.6


def test_cut_words_lose_their_teacher_target_too(sc_v2, tmp_path):
    from bnnkws.kws.features.augment import AugmentConfig
    from bnnkws.kws.data import load_dataset
    from bnnkws.kws.features.pipeline import BatchMaker

    tr = load_dataset(sc_v2).train
    pick = [c for c in tr if c.label == "_silence_"][:3] + [c for c in tr if c.label == "up"][:9]
    aux = np.stack([np.full(len(pick), 7), np.arange(len(pick))], 1).astype(np.int32)
    cfg = AugmentConfig(noise=False, gain=False, spec_augment=False, partial_prob=1.0)
    maker = BatchMaker(pick, augment=cfg, labels=tr.labels, seed=0, cache_dir=tmp_path,
                       progress=False, aux=aux)
    _, y, a = maker.batch(np.arange(len(pick)), np.random.default_rng(0))
    assert a.shape == (12, 2)
    assert (a[:3] == aux[:3]).all()  # silence is never cut
    assert (a[3:] == -1).all() and (np.array(tr.labels)[y[3:]] == "_unknown_").all()


def test_training_with_distillation_saves_a_task_only_model(sc_v2, sc_v1_sample, tmp_path):
    """A real (tiny) run with the auxiliary vocabulary and distillation: the teacher's targets
    are one row per training clip plus the zero row, every exit gets a finite cosine loss,
    and the saved model is the task's alone (the bundle does not change shape)."""
    pytest.importorskip("openwakeword", reason="the teacher ships in openwakeword "
                        "(pip install 'bnn-kws[distill]'; the test extra includes it)")
    from bnnkws.kws.training.run import load_run
    from bnnkws.kws.training.train import TrainConfig, TrainError, prepare_data, run_training

    common = dict(data=str(sc_v2), arch="quicknet", width=0.25, batch_size=32,
                  max_train_clips=64, seed=0, aux_vocab=True, aux_data=[str(sc_v1_sample)],
                  offset_prob=0.5, partial_prob=0.1, noise_prob=0.5,
                  cache_dir=os.environ.get("KWS_CACHE_DIR") or str(tmp_path / "cache"),
                  verbose=0)
    tc = TrainConfig(**common, epochs=1, distill="speech-embedding", distill_weight=2.0,
                     out=str(tmp_path / "run"))
    data = prepare_data(tc)
    n, nv = len(data.split["train"]), len(data.split["validation"])
    assert data.teacher.shape == (n + nv + 1, kteacher.DIM)
    assert (data.teacher[-1] == 0).all()
    np.testing.assert_allclose(np.linalg.norm(data.teacher[:-1], axis=1), 1.0, rtol=1e-5)
    assert data.train_aux.shape == (n, 2) and (data.train_aux[:, 1] == np.arange(n)).all()
    assert (data.val_aux[:, 1] == n + np.arange(nv)).all()
    # the training rows are standardised on their own statistics: they average to 0
    assert np.abs(data.teacher[:n].mean(0)).max() < 0.1

    run = run_training(tc)
    rows = list(csv.DictReader(open(run / "history.csv")))
    for k in range(1, 6):
        for key in (f"distill{k}_loss", f"val_distill{k}_loss"):  # Keras logs them unweighted
            assert 0 < float(rows[0][key]) <= 2
    assert json.loads((run / "train_config.json").read_text())["distill"] == "speech-embedding"
    _, model = load_run(run, "last")
    assert not any(layer.name.startswith(("distill", "aux")) for layer in model.layers)

    with pytest.raises(TrainError, match="in-memory pipeline"):
        TrainConfig(**common, distill="speech-embedding", pipeline="shards")
    with pytest.raises(TrainError, match="--distill 'wav2vec'"):
        TrainConfig(**common, distill="wav2vec")
