"""Training machinery on real speech features with a small stand-in early-exit BNN.

The stand-in has the contract's shape (log-mel (98, 64) in, logits ``exit1..exit5`` out, Larq
binary convolutions with SteSign + WeightClip, like the real blocks) but traces in seconds, so
these tests check the optimizer, the flip ratio, checkpoints and resume, not the architectures
(tests/test_train_run.py trains the real QuickNet through the ``tiny_run`` fixture).
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from bnnkws.kws.training import callbacks as cbs
from bnnkws.kws.training import optim
from bnnkws.kws.training import train
from bnnkws.kws.config import ModelConfig

import larq as lq
import tensorflow as tf


def standin_model(cfg: ModelConfig) -> tf.keras.Model:
    """Five exits over five tiny stages; binary 3x3 convolutions unless cfg.binary is False."""
    from bnnkws.kws.models.blocks import Standardize

    inp = tf.keras.Input((cfg.frontend.num_frames, cfg.frontend.n_mels), name="logmel")
    x = Standardize(cfg.norm_mean, cfg.norm_std)(inp)
    x = tf.keras.layers.Reshape((98, 64, 1))(x)
    x = tf.keras.layers.Conv2D(16, 5, strides=4, padding="same", use_bias=False)(x)
    x = tf.keras.layers.BatchNormalization(momentum=0.9)(x)
    outputs = {}
    for k in range(1, cfg.num_stages + 1):
        if cfg.binary:
            q = dict(input_quantizer=lq.quantizers.SteSign(clip_value=1.25),
                     kernel_quantizer=lq.quantizers.SteSign(clip_value=1.25),
                     kernel_constraint=lq.constraints.WeightClip(1.25), pad_values=1.0)
        else:
            q = dict(input_quantizer=None, kernel_quantizer=None)
        y = lq.layers.QuantConv2D(16, 3, padding="same", use_bias=False,
                                  kernel_initializer="glorot_normal", name=f"b{k}", **q)(x)
        y = tf.keras.layers.BatchNormalization(momentum=0.9)(y)
        x = tf.keras.layers.Add()([x, y])
        if k in cfg.active_exits:
            z = tf.keras.layers.GlobalAveragePooling2D()(x)
            z = tf.keras.layers.BatchNormalization()(z)
            outputs[f"exit{k}"] = tf.keras.layers.Dense(cfg.num_classes, name=f"exit{k}")(z)
    return tf.keras.Model(inp, outputs)


@pytest.fixture(scope="module")
def small_data(sc_v2, tmp_path_factory):
    """Real log-mel features of a few hundred sc_v2 clips, speaker-disjoint splits."""
    tc = train.TrainConfig(data=str(sc_v2), max_train_clips=192, augment=False,
                           cache_dir=str(tmp_path_factory.mktemp("cache")), verbose=0)
    data = train.prepare_data(tc)
    # Keep validation/test small: these tests check the mechanics, not accuracy.
    data.val_x, data.val_y = data.val_x[:96], data.val_y[:96]
    data.test_x, data.test_y = data.test_x[:96], data.test_y[:96]
    return data


def _cfg(tmp_path, **kw):
    base = dict(data="sc_v2", epochs=2, batch_size=64, augment=False, seed=3,
                out=str(tmp_path / "run"), verbose=0)
    base.update(kw)
    return train.TrainConfig(**base)


def _history(run_dir):
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_prepared_data_is_real_and_speaker_disjoint(small_data):
    d = small_data
    assert d.train_x.shape[1:] == (98, 64) and len(d.train_x) == 192
    assert {"_silence_", "_unknown_", "yes", "go"} <= set(d.labels) and len(d.labels) == 12
    # log-mel of real speech: a spread of values, every class index in range
    assert d.train_x.std() > 1.0 and set(np.unique(d.train_y)) <= set(range(12))
    from bnnkws.kws.data.base import speaker_from_name

    spk = {s: {speaker_from_name(p) for p in d.split[s]} - {None} for s in d.split}
    assert not spk["train"] & spk["validation"] and not spk["train"] & spk["testing"]
    mean, std = d.norm_stats()
    assert mean == pytest.approx(float(d.train_x.mean()), rel=1e-4)
    assert std == pytest.approx(float(d.train_x.std()), rel=1e-4)


def test_bop_steps_lower_loss_flip_signs_and_keep_kernels_binary(small_data):
    tf.keras.utils.set_random_seed(0)
    mean, std = small_data.norm_stats()
    cfg = ModelConfig(labels=small_data.labels, norm_mean=mean, norm_std=std)
    model = standin_model(cfg)
    opt = optim.bop_case_optimizer(gamma=1e-2, threshold=1e-7, lr=1e-2)
    train.compile_model(model, cfg, opt)
    binaries = optim.binary_variables(model)
    # Bop claims exactly the binary conv kernels (5 of them), Adam the rest.
    assert sorted(v.name.split("/")[0] for v in binaries) == [f"b{k}" for k in range(1, 6)]
    before = [v.numpy().copy() for v in binaries]
    bn_before = model.get_layer("exit5").kernel.numpy().copy()
    x, y = small_data.train_x[:64], small_data.train_y[:64]
    loss0 = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    for _ in range(15):
        model.train_on_batch(x, y)
    loss1 = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert loss1 < 0.9 * loss0, (loss0, loss1)
    after = [v.numpy() for v in binaries]
    flipped = sum(int(np.sum(np.sign(a) != np.sign(b))) for a, b in zip(after, before))
    total = sum(a.size for a in after)
    assert 0 < flipped < total
    # Bop's latent-free update leaves the kernels at exactly +-1 (no magnitudes to drift).
    for a in after:
        assert set(np.unique(a)) <= {-1.0, 1.0}
    # the real-valued variables moved with Adam
    assert not np.allclose(model.get_layer("exit5").kernel.numpy(), bn_before)
    # Bop's moving averages exist for every binary kernel (they go into the checkpoint)
    bop = optim.find_bop(opt)
    assert all(bop.get_slot(v, "m") is not None for v in binaries)


def test_flip_counter_counts_sign_changes():
    v = tf.Variable(np.array([1.0, -1.0, 0.5, -0.2], np.float32))
    fc = cbs.FlipCounter([v])
    fc.on_epoch_begin(0)
    v.assign([-1.0, -1.0, 0.5, 0.3])  # two flips
    fc.on_train_batch_end(0)
    v.assign([1.0, -1.0, 0.5, 0.3])  # one more
    fc.on_train_batch_end(1)
    logs = {}
    fc.on_epoch_end(0, logs)
    assert logs["flips"] == 3
    assert logs["flip_ratio"] == pytest.approx(math.log(3 / 4 + 1e-9))
    assert logs["flip_ratio_step"] == pytest.approx(math.log(1.5 / 4 + 1e-9))
    fc.on_epoch_begin(1)
    fc.on_epoch_end(1, logs)
    assert logs["flips"] == 0 and logs["flip_ratio"] == pytest.approx(math.log(1e-9))


def test_gamma_decays_per_epoch():
    g = optim.decay_schedule(1e-3, "exp", total_steps=100, steps_per_epoch=10, final_ratio=0.01)
    assert float(g(0)) == pytest.approx(1e-3)
    assert float(g(9)) == pytest.approx(1e-3)  # constant within an epoch
    assert float(g(10)) < 1e-3
    assert float(g(90)) == pytest.approx(1e-5, rel=1e-3)  # last epoch at the final ratio
    c = optim.decay_schedule(1e-3, "cosine", 100, 10, 0.1)
    assert float(c(100)) == pytest.approx(1e-4, rel=1e-3)
    assert optim.decay_schedule(1e-3, "none", 100, 10) == 1e-3


@pytest.fixture(scope="module")
def straight_run(small_data, tmp_path_factory):
    """Two epochs of Bop training in one go (no augmentation)."""
    tmp = tmp_path_factory.mktemp("straight")
    out = train.run_training(_cfg(tmp), data=small_data, model_fn=standin_model)
    return out


def test_run_directory_history_and_flip_ratio(straight_run, small_data):
    out = straight_run
    for name in ("config.json", "train_config.json", "split.json", "weights.h5", "best.h5",
                 "history.csv", "test_metrics.json"):
        assert (out / name).is_file(), name
    assert any((out / "tb").rglob("events.out.tfevents*"))
    rows = _history(out)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for k in range(1, 6):
        for col in (f"exit{k}_loss", f"exit{k}_accuracy", f"val_exit{k}_loss",
                    f"val_exit{k}_accuracy"):
            assert col in rows[0], col
    for r in rows:
        fr = float(r["flip_ratio"])
        # ln(flips / params + 1e-9): finite, between "nothing flips" and "everything flips"
        assert math.log(1e-9) <= fr < math.log(5), fr
        assert float(r["flips"]) >= 0
    assert float(rows[0]["flips"]) > 0  # Bop flips in the first epoch
    assert all(float(r["epoch_seconds"]) > 0 for r in rows)
    assert float(rows[1]["bop_gamma"]) < float(rows[0]["bop_gamma"])  # gamma decays
    cfg = ModelConfig.load(out / "config.json")
    assert cfg.labels == small_data.labels
    mean, std = small_data.norm_stats()
    assert cfg.norm_mean == pytest.approx(mean) and cfg.norm_std == pytest.approx(std)
    tm = json.loads((out / "test_metrics.json").read_text())
    assert set(tm["last"]) == {f"exit{k}" for k in range(1, 6)}
    assert tm["num_clips"] == 96
    split = json.loads((out / "split.json").read_text())
    assert split["train"] == small_data.split["train"]


class _Weights(tf.keras.callbacks.Callback):
    """Keeps the model's weights as they are when training begins."""

    def on_train_begin(self, logs=None):
        self.start = [w.copy() for w in self.model.get_weights()]


def test_init_from_starts_from_the_source_weights_and_keeps_its_input_scaling(
        straight_run, small_data, tmp_path):
    """A warm start (``--init-from``, e.g. a fine-tune on one corpus of a multi-corpus run)
    begins at the source run's best weights and keeps the source's norm_mean/std: the weights
    were learnt on that scaling, and the new data's own statistics (here shifted by +2) would
    move every input under them."""
    import dataclasses

    shifted = dataclasses.replace(small_data, train_x=small_data.train_x + 2.0, norm=None)
    assert shifted.norm_stats()[0] == pytest.approx(small_data.norm_stats()[0] + 2.0)
    seen = _Weights()
    out = train.run_training(_cfg(tmp_path, epochs=1, init_from=str(straight_run)),
                             data=shifted, model_fn=standin_model, extra_callbacks=[seen])
    src_cfg = ModelConfig.load(straight_run / "config.json")
    cfg = ModelConfig.load(out / "config.json")
    assert (cfg.norm_mean, cfg.norm_std) == (src_cfg.norm_mean, src_cfg.norm_std)
    src = standin_model(src_cfg)
    src.load_weights(str(straight_run / "best.h5"))
    for a, b in zip(seen.start, src.get_weights()):
        np.testing.assert_array_equal(a, b)


class _CtrlC(tf.keras.callbacks.Callback):
    """Presses Ctrl-C (SIGINT to this process) during the first epoch's second batch."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 1 and not getattr(self, "sent", False):
            import os
            import signal

            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_then_resume_continues_the_same_trajectory(straight_run, small_data, tmp_path,
                                                           capsys):
    # Ctrl-C in epoch 1 of a 2-epoch run: the epoch finishes, is checkpointed, training stops.
    first = _cfg(tmp_path)
    out = train.run_training(first, data=small_data, model_fn=standin_model,
                             extra_callbacks=[_CtrlC()])
    assert "--resume" in capsys.readouterr().err
    assert len(_history(out)) == 1
    assert tf.train.latest_checkpoint(str(out / "checkpoints")).endswith("ckpt-1")
    # Starting again without --resume must refuse rather than overwrite the run.
    with pytest.raises(train.TrainError, match="--resume"):
        train.run_training(first, data=small_data, model_fn=standin_model)
    # A changed trajectory option is refused on resume.
    with pytest.raises(train.TrainError, match="bop_gamma"):
        train.run_training(_cfg(tmp_path, resume=True, bop_gamma=5e-3),
                           data=small_data, model_fn=standin_model)
    train.run_training(_cfg(tmp_path, resume=True), data=small_data, model_fn=standin_model)
    a = ModelConfig.load(straight_run / "config.json")
    m1, m2 = standin_model(a), standin_model(a)
    m1.load_weights(str(straight_run / "weights.h5"))
    m2.load_weights(str(out / "weights.h5"))
    w1, w2 = m1.get_weights(), m2.get_weights()
    assert len(w1) == len(w2)
    for x, y in zip(w1, w2):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    h1, h2 = _history(straight_run), _history(out)
    assert [r["epoch"] for r in h2] == ["0", "1"]
    for key in ("loss", "val_exit5_accuracy", "flips", "bop_gamma"):
        assert float(h2[1][key]) == pytest.approx(float(h1[1][key]), rel=1e-4, abs=1e-6), key


def test_checkpoint_killed_mid_write_leaves_previous(straight_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(straight_run, run)
    ck = run / "checkpoints"
    # A save killed before the index was rewritten: new data files, index still at ckpt-2.
    (ck / "ckpt-3.data-00000-of-00001").write_bytes(b"\0" * 100)
    (ck / "ckpt-3.index").write_bytes(b"garbage")
    latest = tf.train.latest_checkpoint(str(ck))
    assert latest.endswith("ckpt-2")
    # ... and that checkpoint restores the model of the last completed epoch, with its epoch.
    cfg = ModelConfig.load(run / "config.json")
    tc = train.TrainConfig(**json.loads((run / "train_config.json").read_text()))
    model = standin_model(cfg)
    epoch = tf.Variable(0, dtype=tf.int64)
    ckpt = tf.train.Checkpoint(model=model, optimizer=train.make_optimizer(tc, 3), epoch=epoch)
    ckpt.restore(latest).expect_partial()
    assert int(epoch.numpy()) == 2
    ref = standin_model(cfg)
    ref.load_weights(str(run / "weights.h5"))
    for x, y in zip(model.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(x, y)


def test_two_stage_switches_clipping_off_then_on(small_data, tmp_path):
    cfg = ModelConfig(labels=small_data.labels)
    model = standin_model(cfg)
    layer = model.get_layer("b1")
    saved = optim.disable_clipping(model)
    assert layer.kernel_quantizer.clip_value is None and layer.input_quantizer.clip_value is None
    assert layer.kernel.latent_variable.constraint is None
    optim.restore_clipping(saved)
    assert layer.kernel_quantizer.clip_value == 1.25
    assert layer.kernel.latent_variable.constraint is not None

    out = train.run_training(_cfg(tmp_path, optimizer="two-stage", stage1_epochs=1, lr=2e-2),
                             data=small_data, model_fn=standin_model)
    rows = _history(out)
    assert len(rows) == 2 and "bop_gamma" not in rows[0]
    m = standin_model(cfg)
    m.load_weights(str(out / "weights.h5"))
    k = m.get_layer("b1").kernel.numpy()
    # latent weights (Adam), not Bop's +-1, and clipped again after stage 2
    assert len(np.unique(k)) > 2 and np.abs(k).max() <= 1.25 + 1e-6


def test_real_valued_needs_adam(tmp_path):
    with pytest.raises(train.TrainError, match="real-valued"):
        train.TrainConfig(data="x", real_valued=True, optimizer="bop")
    assert train.TrainConfig(data="x", real_valued=True).optimizer == "adam"
    assert train.TrainConfig(data="x").optimizer == "bop"
    with pytest.raises(train.TrainError, match="exit-weights"):
        train.make_model_config(train.TrainConfig(data="x", exit_weights=[1, 2]),
                                ["a", "b"], 0.0, 1.0)
    with pytest.raises(train.TrainError, match="head-channels"):
        train.make_model_config(train.TrainConfig(data="x", head_channels=[64]),
                                ["a", "b"], 0.0, 1.0)
    mc = train.make_model_config(train.TrainConfig(data="x", head_channels=[64, 0, 0, 0, 0]),
                                 ["a", "b"], 0.0, 1.0)
    assert mc.head_channels == [64, 0, 0, 0, 0]
    with pytest.raises(train.TrainError, match="head-channels"):
        train.TrainConfig(data="x", head_channels=[-8, 0, 0, 0, 0])
    with pytest.raises(train.TrainError, match="stage-filters"):
        train.make_model_config(train.TrainConfig(data="x", stage_filters=[64, 128]),
                                ["a", "b"], 0.0, 1.0)
    with pytest.raises(train.TrainError, match="stage-filters"):
        train.TrainConfig(data="x", stage_filters=[64, 128, 0, 256, 256])
    with pytest.raises(train.TrainError, match="stage-filters.*birealnet"):
        train.TrainConfig(data="x", arch="birealnet", stage_filters=[64, 128, 256, 512, 512])
    mc = train.make_model_config(
        train.TrainConfig(data="x", stage_filters=[64, 128, 256, 512, 512]), ["a", "b"], 0.0, 1.0)
    assert mc.stage_filters == [64, 128, 256, 512, 512]
    with pytest.raises(train.TrainError, match="binary-bn-epsilon.*birealnet"):
        train.TrainConfig(data="x", arch="birealnet", binary_bn_epsilon=1.0)
    with pytest.raises(train.TrainError, match="binary-bn-epsilon"):
        train.TrainConfig(data="x", binary_bn_epsilon=-1.0)
    mc = train.make_model_config(train.TrainConfig(data="x", binary_bn_epsilon=1.0),
                                 ["a", "b"], 0.0, 1.0)
    assert mc.binary_bn_epsilon == 1.0
