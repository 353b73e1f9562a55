"""Piecewise approximation (issue 41): the PA quantizers against their definitions, the 1-base
case against Larq's ste_sign, the piecewise backward, the {0,1}-to-+-1 identity through LCE,
PA convolutions as M x N LceBconv2d, and a tiny PA bundle against Keras stage by stage.

The definitions are those of bnnkws.kws.models.pa's docstring (eq. 1-6); the expected values
here are written out by hand from them, not computed with the module's helpers.
"""
from __future__ import annotations

import collections

import numpy as np
import pytest

import bnnkws.frontend  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import larq as lq
import tensorflow as tf

from bnnkws.kws.config import SPEECH_COMMANDS_12, ConfigError, ModelConfig
from bnnkws.kws.models import build_model, build_stages, describe
from bnnkws.kws.models.pa import PAActivation, PAConv2D, PAWeight, pa_layers


def H(z):
    """The {0,1} base: 1 where z >= 0 (Larq's and LCE's sign map 0 to +1)."""
    return (np.asarray(z) >= 0).astype(np.float64)


def tflite_ops(flatbuffer: bytes) -> collections.Counter:
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    names = []
    for oc in model.operatorCodes:
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        names.append(oc.customCode.decode() if code == schema.BuiltinOperator.CUSTOM
                     else builtin[code])
    return collections.Counter(names[op.opcodeIndex] for sg in model.subgraphs
                               for op in sg.operators)


def lce_predict(flatbuffer: bytes, x):
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    return np.asarray(Interpreter(flatbuffer, num_threads=1).predict(x))


def activation(n, v=None, beta=None):
    """A built PAActivation(n) with its endpoints and coefficients set."""
    q = PAActivation(n)
    q.build((None,))
    if v is not None:
        q.thresholds.assign(np.asarray(v, "float32"))
        q.scales.assign(np.asarray(beta, "float32"))
    return q


# ---------------------------------------------------------------------------------------------
# forward values (eq. 1-4) on hand-made tensors
# ---------------------------------------------------------------------------------------------
# mean 0, population std sqrt(10.5 / 6) = 1.3229: endpoints +-1.323 (M = 2), 0 and +-1.764
# (M = 3)
W_HAND = np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], "float32")
W_EXPECTED = {
    1: [-1, -1, -1, 1, 1, 1],                   # sign(W - mu)
    2: [-1, 0, 0, 0, 0, 1],                     # -1 + H(W + 1.32) + H(W - 1.32)
    3: [-1, -1 / 3, -1 / 3, 1 / 3, 1 / 3, 1],   # -1 + 2/3 (H(W + 1.76) + H(W) + H(W - 1.76))
}


@pytest.mark.parametrize("m", [1, 2, 3])
def test_weight_bases_forward_is_the_fixed_endpoint_staircase(m):
    """W_PA = -1 + sum_i (2/M) H(W - u_i), u_i = mu + sigma t_i, t uniform in +-2 (eq. 1-3)."""
    got = PAWeight(m)(tf.constant(W_HAND)).numpy()
    np.testing.assert_allclose(got, W_EXPECTED[m], atol=1e-6)
    # the same from the definition on a less regular tensor (no value near an endpoint)
    w = np.array([[-0.9, -0.52, -0.31, -0.12], [0.0, 0.07, 0.22, 0.41], [0.7, 1.1, -1.4, 0.33]],
                 "float32")
    mu, sigma = w.mean(), w.std()
    t = {1: [0.0], 2: [-1.0, 1.0], 3: [-4 / 3, 0.0, 4 / 3]}[m]
    u = [mu + sigma * ti for ti in t]
    assert min(abs(float(x) - ui) for x in w.ravel() for ui in u) > 1e-3
    want = -1.0 + sum(2.0 / m * H(w - ui) for ui in u)
    np.testing.assert_allclose(PAWeight(m)(tf.constant(w)).numpy(), want, atol=1e-6)
    # decompose() is the same staircase as M scaled +-1 bases (eq. 2)
    parts = PAWeight(m).decompose(tf.constant(w))
    assert len(parts) == m and all(set(np.unique(t.numpy())) <= {-1.0, 1.0} for _, t in parts)
    np.testing.assert_allclose(sum(a * t.numpy() for a, t in parts), want, atol=1e-6)


ACT = {1: ([0.25], [1.5]), 2: ([-0.3, 0.4], [0.5, 1.5]), 3: ([-0.6, 0.0, 0.8], [0.4, 1.0, 0.6])}


@pytest.mark.parametrize("n", [1, 2, 3])
def test_activation_bases_forward_is_the_learnt_endpoint_staircase(n):
    """A_PA = sum_j beta_j (H(x - v_j) - 1/2) (eq. 4), including x exactly at an endpoint."""
    v, beta = ACT[n]
    x = np.array([-2.0, -0.7, -0.3, -0.1, 0.0, 0.25, 0.4, 0.6, 0.8, 1.5], "float32")
    want = sum(b * (H(x - np.float32(vj)) - 0.5) for vj, b in zip(v, beta))
    got = activation(n, v, beta)(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    if n == 2:  # written out: levels -1, -0.5 / +0.5 ... at x < -0.3, [-0.3, 0.4), >= 0.4
        np.testing.assert_allclose(got, [-1, -1, -0.5, -0.5, -0.5, -0.5, 1, 1, 1, 1], atol=1e-6)
    # the initial values: the n-step staircase of clip(x, -1, 1), levels -1 .. 1
    q = activation(n)
    levels = np.unique(q(tf.constant(np.linspace(-3, 3, 601, dtype="float32"))).numpy())
    np.testing.assert_allclose(levels, np.linspace(-1, 1, n + 1), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# one base = Larq's ste_sign network
# ---------------------------------------------------------------------------------------------
def test_one_activation_base_is_larqs_ste_sign_forward_and_backward():
    x = tf.constant(np.array([-1.7, -1.0, -0.99, -0.2, 0.0, 0.3, 1.0, 1.01, 2.5], "float32"))
    pa, ste = activation(1), lq.quantizers.SteSign(clip_value=1.0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        a, b = pa(x), ste(x)
        la, lb = tf.reduce_sum(a * tf.range(9.0)), tf.reduce_sum(b * tf.range(9.0))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(tape.gradient(la, x).numpy(), tape.gradient(lb, x).numpy())


def test_pa_bases_1_1_builds_todays_network():
    """pa_bases [1, 1] (and an old config without the key) is exactly the 1-bit network."""
    base = ModelConfig(arch="quicknet", width=0.125)
    old = {k: v for k, v in base.to_dict().items() if k != "pa_bases"}
    assert ModelConfig.from_dict(old) == base and not base.uses_pa
    models = []
    for cfg in (base, base.replace(pa_bases=[1, 1])):
        tf.keras.utils.set_random_seed(0)
        models.append(build_model(cfg))
    plain, ones = models
    assert pa_layers(ones) == [] and plain.name == ones.name
    assert [type(w).__name__ for w in plain.weights] == [type(w).__name__ for w in ones.weights]
    for a, b in zip(plain.get_weights(), ones.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).normal(size=(2, 98, 64)).astype("float32")
    pa_out, out = ones(x, training=False), plain(x, training=False)
    for k in out:
        np.testing.assert_array_equal(pa_out[k].numpy(), out[k].numpy())


@pytest.mark.parametrize("training", [False, True])
def test_pa_conv_with_one_bit_quantizers_is_larqs_quant_conv(training):
    """A PAConv2D whose quantizers are both 1-bit computes what QuantConv2D computes, in its
    training (fused) and its inference (decomposed) path."""
    kw = dict(filters=6, kernel_size=3, padding="same", pad_values=1.0, use_bias=False,
              input_quantizer="ste_sign", kernel_quantizer="ste_sign",
              kernel_constraint="weight_clip", activation="relu")
    a, b = PAConv2D(**kw), lq.layers.QuantConv2D(**kw)
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 5, 4, 3)).astype("float32"))
    a.build(x.shape)
    b.build(x.shape)
    b.set_weights(a.get_weights())
    np.testing.assert_array_equal(a(x, training=training).numpy(), b(x).numpy())


# ---------------------------------------------------------------------------------------------
# backward: the piecewise-linear slopes (eq. 5)
# ---------------------------------------------------------------------------------------------
def test_weight_gradient_is_one_over_two_sigma_within_two_sigma():
    w = tf.Variable(np.array([-3.0, -0.6, -0.3, -0.1, 0.0, 0.1, 0.25, 0.5, 0.8, 3.2], "float32"))
    wn = w.numpy()
    mu, sigma = wn.mean(), wn.std()
    inside = np.abs(wn - mu) <= 2 * sigma
    assert inside.any() and not inside.all()
    for m in (2, 3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(PAWeight(m)(w))
        np.testing.assert_allclose(tape.gradient(loss, w).numpy(),
                                   np.where(inside, 1 / (2 * sigma), 0.0), rtol=1e-5)


def test_activation_gradients_follow_the_cells_of_the_endpoints():
    """Endpoints v = (-0.6, 0, 0.8), jumps beta = (0.4, 1, 0.6): cells [-0.9, -0.3), [-0.3,
    0.4), [0.4, 1.2] (inner edges the midpoints, outer ones mirrored), slopes beta / width =
    2/3, 1/0.7, 0.75, nothing outside; dA/dv_j = -slope_j on cell j; dA/dbeta_j = sign(x-v_j)/2."""
    x = tf.constant(np.array([-1.0, -0.8, -0.2, 0.3, 0.5, 1.1, 1.3], "float32"))
    for perm in ([0, 1, 2], [2, 0, 1]):  # the order the endpoints are stored in is irrelevant
        v = np.array([-0.6, 0.0, 0.8])[perm]
        beta = np.array([0.4, 1.0, 0.6])[perm]
        q = activation(3, v, beta)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(q(x))
        dx, dv, dbeta = tape.gradient(loss, [x, q.thresholds, q.scales])
        np.testing.assert_allclose(dx.numpy(), [0, 2 / 3, 1 / 0.7, 1 / 0.7, 0.75, 0.75, 0],
                                   rtol=1e-5)
        np.testing.assert_allclose(dv.numpy(), np.array([-2 / 3, -2 / 0.7, -1.5])[perm],
                                   rtol=1e-5)
        np.testing.assert_allclose(dbeta.numpy(), np.array([1.5, 0.5, -1.5])[perm], rtol=1e-6)
    # uniform initial endpoints: slope 1 on [-1, 1] (the hard tanh's), 0 outside
    z = tf.constant(np.linspace(-1.5, 1.5, 31, dtype="float32"))
    for n in (2, 3):
        with tf.GradientTape() as tape:
            tape.watch(z)
            loss = tf.reduce_sum(activation(n)(z))
        np.testing.assert_allclose(tape.gradient(loss, z).numpy(),
                                   np.where(np.abs(z.numpy()) <= 1 + 1e-6, 1.0, 0.0), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# {0,1} bases as +-1 kernels: the identity, through LCE
# ---------------------------------------------------------------------------------------------
def test_zero_one_bases_are_plus_minus_one_bases_with_a_scale_and_bias():
    """a = (s + 1) / 2: sum(a w) = (sum(s w) + sum(w)) / 2 (numpy), and through LCE: a layer
    that computes 1/2 bconv(sign(x - v), w) + 1/2 sum(w) converts to one LceBconv2d (scale and
    bias fused) and reproduces the convolution of the {0,1} tensor H(x - v) exactly."""
    import larq_compute_engine as lce

    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, size=(50, 36)).astype(np.float64)
    w = rng.normal(size=(36,))
    s = 2 * a - 1
    np.testing.assert_allclose(a @ w, (s @ w + w.sum()) / 2, rtol=1e-12)
    # both sides {0,1}: sum(a b) = (sum(s t) + sum(s) + sum(t) + K) / 4
    b = rng.integers(0, 2, size=(36,)).astype(np.float64)
    t = 2 * b - 1
    np.testing.assert_allclose(a @ b, (s @ t + s.sum(1) + t.sum() + 36) / 4, rtol=1e-12)
    # PA's offset -sum(beta)/2 is the bias of the identity: the staircase is sum (beta/2) s
    beta, hs = np.array([0.4, 1.0]), rng.integers(0, 2, size=(2, 9)).astype(np.float64)
    np.testing.assert_allclose(beta @ hs - beta.sum() / 2, (beta / 2) @ (2 * hs - 1))

    v, cin, cout = 0.3, 4, 8
    x = rng.normal(size=(1, 6, 5, cin)).astype("float32")
    kernel = np.where(rng.normal(size=(3, 3, cin, cout)) >= 0, 1.0, -1.0).astype("float32")
    # the {0,1} input, "same"-padded with 1 (the +1 of the +-1 base), convolved in float64
    a01 = np.pad(H(x - np.float32(v)), [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=1.0)
    want = np.zeros((1, 6, 5, cout))
    for i in range(6):
        for j in range(5):
            want[0, i, j] = np.tensordot(a01[0, i:i + 3, j:j + 3], kernel, axes=3)

    inp = tf.keras.Input((6, 5, cin), batch_size=1)
    shifted = tf.keras.layers.Lambda(lambda z: z - v)(inp)
    conv = lq.layers.QuantConv2D(cout, 3, padding="same", pad_values=1.0, use_bias=False,
                                 input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                 kernel_constraint="weight_clip")
    y = conv(shifted)
    bias = tf.constant(0.5 * kernel.sum(axis=(0, 1, 2)))
    out = tf.keras.layers.Lambda(lambda z: 0.5 * z + bias)(y)
    model = tf.keras.Model(inp, out)
    conv.set_weights([kernel])
    np.testing.assert_allclose(model(x).numpy(), want, atol=1e-5)
    fb = lce.convert_keras_model(model)
    ops = tflite_ops(fb)
    assert ops["LceBconv2d"] == 1 and "CONV_2D" not in ops, ops
    np.testing.assert_allclose(lce_predict(fb, x).reshape(want.shape), want, atol=1e-5)


@pytest.mark.parametrize("m,n", [(2, 2), (3, 3), (2, 1), (1, 3)])
def test_pa_conv_converts_to_m_times_n_lce_bconvs_and_matches_keras(m, n):
    """One PA convolution (ReLU, BN after it, as in QuickNet) converts into M x N LceBconv2d
    and no float convolution; LCE's output equals Keras's up to float rounding (the input of
    the only quantizers is the model input itself, so no activation can flip)."""
    import larq_compute_engine as lce

    from bnnkws.kws.models.blocks import QUICKNET_Q, binary_conv

    tf.keras.utils.set_random_seed(1)
    inp = tf.keras.Input((7, 6, 16), batch_size=1)
    y = binary_conv(inp, 24, 3, QUICKNET_Q, True, activation="relu", name="pa", pa=(m, n))
    y = tf.keras.layers.BatchNormalization(name="bn")(y)
    model = tf.keras.Model(inp, y)
    layer = model.get_layer("pa")
    assert isinstance(layer, PAConv2D) and layer.pa_bases == (m, n)
    rng = np.random.default_rng(2)
    bn = model.get_layer("bn")
    bn.set_weights([rng.uniform(0.5, 2, 24), rng.normal(size=24), rng.normal(size=24) * 3,
                    rng.uniform(1, 20, 24)])
    if n > 1:  # learnt endpoints and coefficients away from their initial values
        layer.input_quantizer.thresholds.assign(np.sort(rng.uniform(-1, 1, n)).astype("float32"))
        layer.input_quantizer.scales.assign(rng.uniform(0.2, 1.5, n).astype("float32"))
    fb = lce.convert_keras_model(model)
    ops = tflite_ops(fb)
    assert ops["LceBconv2d"] == m * n and "CONV_2D" not in ops, ops
    x = rng.normal(size=(1, 7, 6, 16)).astype("float32")
    want = model(x, training=False).numpy()
    got = lce_predict(fb, x).reshape(want.shape)
    np.testing.assert_allclose(got, want, atol=1e-5 * max(1.0, float(np.abs(want).max())))
    # the training path (one convolution of the two staircases) is the same function
    np.testing.assert_allclose(layer(x, training=True).numpy(), layer(x, training=False).numpy(),
                               atol=1e-5 * max(1.0, float(np.abs(want).max())))


# ---------------------------------------------------------------------------------------------
# models: every architecture, costs, optimiser, serialisation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["quicknet", "birealnet", "meliusnet", "binarydensenet"])
def test_every_architecture_builds_pa_stages_that_lce_converts(arch):
    import larq_compute_engine as lce

    tf.keras.utils.set_random_seed(0)
    cfg = ModelConfig(arch=arch, width=0.125, pa_bases=[[1, 1], [2, 2], [1, 1], [1, 1], [3, 2]])
    stages = build_stages(cfg)
    assert pa_layers(stages[0]) == [] and pa_layers(stages[2]) == []
    assert {lay.pa_bases for lay in pa_layers(stages[1])} == {(2, 2)}
    assert {lay.pa_bases for lay in pa_layers(stages[4])} == {(3, 2)}
    ops = tflite_ops(lce.convert_keras_model(stages[1]))
    assert ops["LceBconv2d"] == 4 * len(pa_layers(stages[1])), ops  # the exit dense: FC


def test_describe_counts_m_times_n_binary_macs_and_m_bit_kernels():
    plain_cfg = ModelConfig(arch="quicknet", width=0.125)
    plain, pa = describe(plain_cfg), describe(plain_cfg.replace(pa_bases=[2, 3]))
    head = [12 * d for d in (8, 16, 32, 32, 32)]  # exit dense MACs per stage (D x 12 classes)
    cum_head = np.cumsum(head)
    for p, q, h in zip(plain, pa, cum_head):
        assert q.binary_macs - h == 6 * (p.binary_macs - h)
        assert q.real_macs == p.real_macs and q.binary_params == p.binary_params
    n_pa = sum(len(pa_layers(s)) for s in build_stages(plain_cfg.replace(pa_bases=[2, 3])))
    assert pa[-1].real_params == plain[-1].real_params + 2 * 3 * n_pa  # v and beta per layer
    conv_bits = sum(8 * 8 * 9 for _ in range(3)) + sum(16 * 16 * 9 for _ in range(3)) \
        + sum(32 * 32 * 9 for _ in range(6))
    assert pa[-1].binary_size_bytes - plain[-1].binary_size_bytes == \
        pytest.approx((conv_bits + 32 * 2 * 3 * n_pa) / 8, abs=2)


def test_bop_leaves_multi_base_kernels_to_adam():
    from bnnkws.kws.training.optim import binary_variables

    cfg = ModelConfig(arch="quicknet", width=0.125)
    n_plain = len(binary_variables(build_model(cfg)))
    assert len(binary_variables(build_model(cfg.replace(pa_bases=[2, 2])))) == 5  # exit denses
    # a 1-base kernel side stays 1-bit: Bop takes it
    assert len(binary_variables(build_model(cfg.replace(pa_bases=[1, 3])))) == n_plain


def test_quantizers_and_pa_model_save_and_load(tmp_path):
    for q in (PAWeight(3), PAActivation(2, half_width=1.25)):
        back = lq.quantizers.get(lq.quantizers.serialize(q))
        assert type(back) is type(q) and back.get_config() == q.get_config()
    assert isinstance(lq.quantizers.get("pa_weight"), PAWeight)
    assert isinstance(lq.quantizers.get("pa_activation"), PAActivation)
    # a whole Keras model with PA layers, saved and loaded (learnt endpoints kept)
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((6, 5, 8))
    y = PAConv2D(8, 3, padding="same", pad_values=1.0, input_quantizer=PAActivation(3),
                 kernel_quantizer=PAWeight(2), kernel_constraint="weight_clip",
                 use_bias=False, name="pa")(inp)
    model = tf.keras.Model(inp, y)
    model.get_layer("pa").input_quantizer.thresholds.assign([-0.4, 0.1, 0.5])
    model.save(tmp_path / "pa.h5")
    loaded = tf.keras.models.load_model(tmp_path / "pa.h5")
    x = np.random.default_rng(0).normal(size=(2, 6, 5, 8)).astype("float32")
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    np.testing.assert_array_equal(loaded.get_layer("pa").input_quantizer.thresholds.numpy(),
                                  model.get_layer("pa").input_quantizer.thresholds.numpy())
    # a run directory's way: weights.h5, the model rebuilt from its ModelConfig
    cfg = ModelConfig(arch="quicknet", width=0.125, pa_bases=[2, 2])
    a = build_model(cfg)
    pa_layers(a)[0].input_quantizer.scales.assign([0.3, 1.2])
    a.save_weights(str(tmp_path / "w.h5"))
    b = build_model(ModelConfig.from_json(cfg.to_json()))
    b.load_weights(str(tmp_path / "w.h5"))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_float_twin_of_a_pa_model_takes_its_latent_weights():
    from bnnkws.deploy.export import float_twin_stages

    cfg = ModelConfig(arch="birealnet", width=0.125, pa_bases=[2, 2])
    stages = build_stages(cfg)
    twins = float_twin_stages(cfg, stages)
    assert all(pa_layers(t) == [] for t in twins)
    k = pa_layers(stages[1])[0]
    np.testing.assert_array_equal(twins[1].get_layer(k.name).kernel.numpy(),
                                  k.kernel.latent_variable.numpy())


def test_config_and_cli_options():
    from argparse import ArgumentTypeError

    from bnnkws.app.commands.train import _pa_bases
    from bnnkws.kws.training.config import TrainConfig, TrainError

    cfg = ModelConfig(pa_bases=[[1, 1], [1, 1], [2, 2], [2, 2], [3, 3]])
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert cfg.stage_pa_bases[2:] == [(2, 2), (2, 2), (3, 3)] and cfg.uses_pa
    assert ModelConfig(pa_bases=[2, 1]).stage_pa_bases == [(2, 1)] * 5
    assert not ModelConfig(pa_bases=[2, 2], binary=False).uses_pa
    for bad in ([0, 2], [9, 1], [2], [[2, 2]] * 4, [2.0, 2], "22"):
        with pytest.raises(ConfigError, match="pa_bases"):
            ModelConfig(pa_bases=bad)
    assert _pa_bases("2,2") == [2, 2]
    assert _pa_bases("1x1,1x1,2x2,2x2,3x2") == [[1, 1], [1, 1], [2, 2], [2, 2], [3, 2]]
    for bad in ("2", "2,2,2", "a,b"):
        with pytest.raises(ArgumentTypeError):
            _pa_bases(bad)
    assert TrainConfig(data="x", pa_bases=[3, 3]).pa_bases == [3, 3]
    with pytest.raises(TrainError, match="--pa-bases"):
        TrainConfig(data="x", pa_bases=[3, 9])
    with pytest.raises(TrainError, match="real-valued"):
        TrainConfig(data="x", pa_bases=[2, 2], real_valued=True, optimizer="adam")


# ---------------------------------------------------------------------------------------------
# a tiny PA model exported into a bundle
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech(sc_v2):
    """Two clips per class of the 12-class test layout: audio (24, 16000) and labels."""
    from bnnkws.frontend.audio import load_audio

    x, y = [], []
    for i, label in enumerate(SPEECH_COMMANDS_12):
        for f in sorted((sc_v2 / label).glob("*.wav"))[:2]:
            x.append(load_audio(f, length=16000))
            y.append(i)
    return np.stack(x), np.array(y, "int32")


@pytest.fixture(scope="module")
def pa_bundle(speech, tmp_path_factory):
    """QuickNet width 0.25 with PA (2, 2) everywhere, three Adam steps on 24 real clips (the
    training path, BN statistics moved), exported lean (LCE stages only)."""
    from bnnkws.deploy.export import export_bundle
    from bnnkws.frontend.reference import log_mel_batch

    audio, y = speech
    feats = log_mel_batch(audio)
    cfg = ModelConfig(arch="quicknet", width=0.25, pa_bases=[2, 2],
                      norm_mean=float(feats.mean()), norm_std=float(feats.std()))
    tf.keras.utils.set_random_seed(0)
    model = build_model(cfg)
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(tf.keras.optimizers.Adam(3e-3), loss={k: loss for k in cfg.exit_names})
    before = [v.numpy().copy() for v in pa_layers(model)[0].input_quantizer.weights]
    model.fit(feats, {k: y for k in cfg.exit_names}, epochs=1, batch_size=8, verbose=0)
    after = [v.numpy() for v in pa_layers(model)[0].input_quantizer.weights]
    assert not all(np.array_equal(a, b) for a, b in zip(before, after))  # v, beta are learnt
    out = tmp_path_factory.mktemp("pa") / "bundle"
    export_bundle(out, cfg=cfg, model=model, progress=False, include_full=False, twins=False)
    return out, cfg, model, feats


def test_tiny_pa_bundle_computes_the_keras_network_stage_by_stage(pa_bundle):
    """The bundle's LCE stages (M x N LceBconv2d per PA convolution) compute the Keras stages
    they came from: each stage fed the same input (Keras's previous fmap), per element within
    float tolerance of the clip's largest output, with the bounds of tests/stage_agreement.py
    (which allow only for activations that sit within rounding of an endpoint)."""
    from bnnkws.deploy.bundle import Bundle
    from bnnkws.deploy.runtime import Detector
    from stage_agreement import (assert_same_network, compare_stages, detector_stages,
                                 keras_stages)

    path, cfg, model, feats = pa_bundle
    b = Bundle.load(path)
    assert ModelConfig.from_dict(b.manifest["model_config"]).stage_pa_bases == [(2, 2)] * 5
    for spec, stage in zip(b.stages, [model.get_layer(f"stage{k}") for k in range(1, 6)]):
        ops = tflite_ops((path / spec.file).read_bytes())
        assert ops["LceBconv2d"] == 4 * len(pa_layers(stage)), (spec.file, ops)
        assert "CONV_2D" not in ops or spec.index <= 3  # stem / transitions only
    det = Detector(b, backend="lce")
    agree = compare_stages(detector_stages(det, "features"), keras_stages(cfg, model), feats)
    assert [a.stage for a in agree] == [1, 2, 3, 4, 5]
    assert_same_network(agree, "PA LCE vs Keras")
    # the runtime's contract: named outputs, numpy heads reproduce the TFLite logits
    res = det.run_all(audio=np.zeros(16000, "float32"))
    np.testing.assert_allclose(np.stack(res["logits"]), np.stack(res["tflite_logits"]),
                               atol=1e-3)
