"""Early-exit architectures: shapes and names, E_s and real twins, LCE binary kernels, costs,
the exit head's numpy arithmetic, and that a few gradient steps on real speech lower the loss.

Widths are tiny (0.125-0.25) so the four architectures build, convert and train in seconds.
"""
import collections

import numpy as np
import pytest

import bnnkws.frontend  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import larq as lq
import tensorflow as tf

from bnnkws.frontend.audio import load_audio
from bnnkws.frontend.reference import log_mel
from bnnkws.kws.config import SPEECH_COMMANDS_12, ModelConfig
from bnnkws.kws.models import build_model, build_stages, describe
from bnnkws.kws.models.exits import head_params
from bnnkws.kws.models.head_math import exit_logits

ARCHS = ["quicknet", "birealnet", "meliusnet", "binarydensenet"]


def binary_convs(model):
    """Binary QuantConv2D layers of a chained model or stage (input and kernel quantized)."""
    layers = []
    for lay in model.layers:
        if isinstance(lay, tf.keras.Model):
            layers += binary_convs(lay)
        elif (isinstance(lay, lq.layers.QuantConv2D) and lay.kernel_quantizer is not None
              and getattr(lay.input_quantizer, "precision", None) == 1):
            layers.append(lay)
    return layers


def tflite_op_counts(flatbuffer: bytes) -> collections.Counter:
    """Operator name -> count in a TFLite flatbuffer (custom ops by their custom code)."""
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


@pytest.fixture(scope="module")
def speech(sc_v2):
    """Two clips per class of the 12-class test layout as log-mel (24, 98, 64) + labels."""
    x, y = [], []
    for i, label in enumerate(SPEECH_COMMANDS_12):
        files = sorted((sc_v2 / label).glob("*.wav"))[:2]
        assert len(files) == 2, f"expected clips under {sc_v2 / label}"
        for f in files:
            x.append(log_mel(load_audio(f, length=16000)))
            y.append(i)
    x = np.stack(x).astype("float32")
    return x, np.array(y, dtype="int32")


def norm_cfg(speech, **kw):
    x, _ = speech
    return ModelConfig(norm_mean=float(x.mean()), norm_std=float(x.std()), **kw)


_BUILT = {}


@pytest.fixture(params=ARCHS)
def built(request, speech):
    """(cfg, model) per architecture at width 0.125, built once for the whole module (building
    is most of the cost); the training test runs last and may change its weights."""
    arch = request.param
    if arch not in _BUILT:
        import tensorflow as tf

        # Seeded: with unseeded random weights the LCE-vs-Keras check below failed for QuickNet
        # in 3 of 4 module runs on 2026-12-01 (an untrained net has near-zero pre-activations
        # whose signs may flip), though it passed in the full suites the same day.
        tf.keras.utils.set_random_seed(0)
        cfg = norm_cfg(speech, arch=arch, width=0.125)
        _BUILT[arch] = (cfg, build_model(cfg))
    return _BUILT[arch]


def test_builds_with_named_logit_exits(built):
    cfg, model = built
    _check_model(cfg, model, 12)


@pytest.mark.parametrize("arch", ARCHS)
def test_builds_for_35_classes(arch):
    cfg = ModelConfig(arch=arch, width=0.125, labels=[f"w{i}" for i in range(35)])
    _check_model(cfg, build_model(cfg), 35)


def _check_model(cfg, model, classes):
    assert model.input_shape == (None, 98, 64)
    x = np.random.default_rng(0).normal(size=(3, 98, 64)).astype("float32")
    out = model(x, training=False)
    assert sorted(out) == cfg.exit_names
    for name in cfg.exit_names:
        assert out[name].shape == (3, classes)
        assert np.all(np.isfinite(out[name].numpy()))
    # stages are the shared layers stage1..stage5 with the contract's outputs
    stages = [model.get_layer(f"stage{k}") for k in range(1, 6)]
    for k, st in enumerate(stages, start=1):
        expect = {"embedding", "logits"} | ({"fmap"} if k < 5 else set())
        assert set(st.output) == expect, (k, st.output)
    # chaining = running the stages by hand with the same weights; logits, not probabilities
    h = x
    for k, st in enumerate(stages, start=1):
        o = st(h, training=False)
        np.testing.assert_allclose(o["logits"].numpy(), out[f"exit{k}"].numpy(), atol=1e-4)
        h = o.get("fmap")
    assert not np.allclose(out["exit5"].numpy().sum(-1), 1.0)


def test_single_exit_variant_stops_after_its_exit(built):
    full_cfg, full_model = built
    cfg = full_cfg.replace(single_exit=2)
    model = build_model(cfg)
    assert list(model.output_names) == ["exit2"]
    stage_names = [lay.name for lay in model.layers if isinstance(lay, tf.keras.Model)]
    assert stage_names == ["stage1", "stage2"]
    assert set(model.get_layer("stage1").output) == {"fmap"}  # no exit head before exit 2
    full = describe(full_model)
    es = describe(cfg)
    assert [c.exit for c in es] == [2]
    # same backbone up to exit 2 minus exit 1's head
    assert es[0].binary_macs < full[1].binary_macs
    assert es[0].binary_macs > full[0].binary_macs
    out = model(np.zeros((1, 98, 64), "float32"))
    assert out["exit2"].shape == (1, 12)


def test_real_valued_twin_is_same_graph_without_quantizers(built):
    cfg, b = built
    r = build_model(cfg.replace(binary=False))
    for k in range(1, 6):
        bl, rl = b.get_layer(f"stage{k}").layers, r.get_layer(f"stage{k}").layers
        assert [lay.name for lay in bl] == [lay.name for lay in rl]
        assert [w.shape for w in b.get_layer(f"stage{k}").weights] == \
               [w.shape for w in r.get_layer(f"stage{k}").weights]
        for lay in rl:
            assert getattr(lay, "kernel_quantizer", None) is None
            assert getattr(lay, "kernel_constraint", None) is None
            assert getattr(getattr(lay, "input_quantizer", None), "precision", 32) == 32
    assert binary_convs(r) == [] and len(binary_convs(b)) >= 10
    assert describe(r)[-1].binary_macs == 0 and describe(r)[-1].real_macs > 0


def test_describe_is_cumulative_and_matches_larq_summary(built):
    cfg, model = built
    stages = [model.get_layer(f"stage{k}") for k in range(1, 6)]
    d = describe(model)
    assert d.to_dicts() == describe(cfg, stages=stages).to_dicts()
    assert [c.exit for c in d] == [1, 2, 3, 4, 5]
    for prev, cur in zip(d, d[1:]):
        assert cur.binary_macs > prev.binary_macs > 0
        assert cur.real_macs >= prev.real_macs > 0
        assert cur.binary_params > prev.binary_params
        assert cur.binary_size_bytes > prev.binary_size_bytes
        assert cur.float32_size_bytes > prev.float32_size_bytes
    # binary MACs of stage 1 by hand: every binary conv's out pixels x k*k x c_in x c_out + head
    st1 = stages[0]
    macs = sum(int(np.prod(lay.output_shape[1:3])) * int(np.prod(lay.kernel.shape))
               for lay in binary_convs(st1))
    macs += int(np.prod(st1.get_layer("exit_dense").kernel.shape))
    assert d[0].binary_macs == macs
    # size arithmetic: 1 bit per binary weight, 32 per real
    c = d[-1]
    assert c.binary_size_bytes == pytest.approx(c.binary_params / 8 + c.real_params * 4, abs=2)
    assert c.float32_size_bytes == 4 * c.params
    # and larq's own printed summary of the stage agrees
    lines = []
    lq.models.summary(st1, print_fn=lines.append)
    text = "\n".join(lines)
    total = d[0].binary_macs + d[0].real_macs
    printed = [ln for ln in text.splitlines() if "Number of MACs" in ln][0]
    value, unit = printed.split("Number of MACs")[1].strip(" |").split()[:2]
    assert float(value) * {"k": 1e3, "M": 1e6}[unit] == pytest.approx(total, rel=5e-3)
    assert "exit5" in str(d) and "binary MACs" in d.table()


@pytest.mark.parametrize("binary", [True, False])
def test_exit_head_numpy_arithmetic_reproduces_logits(speech, binary):
    x, _ = speech
    cfg = norm_cfg(speech, arch="quicknet", width=0.125, binary=binary)
    stages = build_stages(cfg)
    h = x
    for st in stages:
        out = st(h, training=False)
        p = head_params(st)
        assert p["binary"] == binary
        want = out["logits"].numpy()
        got = exit_logits(out["embedding"].numpy(), p["kernel"], p["scale"], p["bias"],
                          binary=p["binary"])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
        h = out.get("fmap")


def test_lce_converts_every_binary_conv_to_lce_bconv2d(built, speech):
    """Every binary conv becomes an LceBconv2d, and the converted graph computes what Keras
    computes. Compared stage by stage on the 24 speech clips: the converted model outputs every
    stage's fmap and embedding beside the logits, and Keras's stage k is fed LCE's stage k-1
    fmap; judged per element (tests/stage_agreement.py). Logits of one input end to end are
    not compared: in an untrained net some pre-activations sit within rounding of zero, whether
    LCE's fused arithmetic rounds them to the other sign depends on the weight draw and the
    CPU's kernels, and one such flip moves every later logit (unseeded, that check failed 3 of
    4 runs; issue 36)."""
    import larq_compute_engine as lce
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    from bnnkws.deploy.export import stage_models, tflite_io
    from stage_agreement import assert_same_network, compare_stages, keras_stages

    cfg, model = built
    n_binary = len(binary_convs(model))
    stages = stage_models(model, cfg)
    inp = tf.keras.Input((98, 64), batch_size=1, name="log_mel")
    h, outs = inp, {}
    for k, st in enumerate(stages, start=1):
        o = st(h)
        for name in ("fmap", "embedding", "logits"):
            if name in o:
                named = tf.keras.layers.Activation("linear", name=f"{name}{k}")
                outs[f"{name}{k}"] = named(o[name])
        h = o.get("fmap")
    fb = lce.convert_keras_model(tf.keras.Model(inp, outs))
    ops = tflite_op_counts(fb)
    assert ops["LceBconv2d"] == n_binary, ops
    assert ops["CONV_2D"] < n_binary  # the real-valued convs stay few (stem, transitions)
    position = {o["name"]: o["index"] for o in tflite_io(fb)[1]}
    assert len(position) == len(outs)
    x, _ = speech
    interp = Interpreter(fb, num_threads=1)
    got = [interp.predict(xi[None]) for xi in x]

    def lce_stage(k, xs):  # stage k of LCE's own chain, i.e. fed LCE's stage k-1 fmap (= xs)
        return {name: np.stack([np.asarray(g[position[f"{name}{k}"]])[0] for g in got])
                for name in ("fmap", "embedding") if f"{name}{k}" in position}

    agree = compare_stages(lce_stage, keras_stages(cfg, model), x)
    assert len(agree) == len(stages)
    assert_same_network(agree, f"{cfg.arch}: LCE vs Keras")


def test_expanded_exit_head_is_one_more_binary_conv_and_keeps_the_head_contract(speech):
    import larq_compute_engine as lce

    from bnnkws.kws.config import ConfigError

    x, _ = speech
    cfg = norm_cfg(speech, arch="quicknet", width=0.125, head_channels=[48, 0, 0, 0, 0])
    plain = build_stages(cfg.replace(head_channels=None))[0]
    st = build_stages(cfg)[0]
    out = st(x[:4], training=False)
    assert out["embedding"].shape == (4, 48)  # exit 1 pools the 48 expanded channels
    assert plain(x[:4], training=False)["embedding"].shape == (4, 8)
    assert len(binary_convs(st)) == len(binary_convs(plain)) + 1
    ops = tflite_op_counts(lce.convert_keras_model(st))
    assert ops["LceBconv2d"] == len(binary_convs(st)), ops
    p = head_params(st)  # CWR* and the numpy head see a 48-wide embedding
    got = exit_logits(out["embedding"].numpy(), p["kernel"], p["scale"], p["bias"], binary=True)
    np.testing.assert_allclose(got, out["logits"].numpy(), rtol=1e-4, atol=1e-3)
    for bad in ([48, 0, 0, 0], [-1, 0, 0, 0, 0]):
        with pytest.raises(ConfigError, match="head_channels"):
            ModelConfig(head_channels=bad)


def test_stage_filters_set_each_stage_width_with_stride_1_transitions(speech):
    import larq_compute_engine as lce

    from bnnkws.kws.config import ConfigError

    x, _ = speech
    cfg = norm_cfg(speech, arch="quicknet", width=0.125, stage_filters=[64, 128, 256, 512, 512])
    stages = build_stages(cfg)
    h = x[:2]
    shapes = []
    for st in stages[:-1]:
        h = st(h, training=False)["fmap"]
        shapes.append(tuple(h.shape[1:]))
    # widths follow the plan times 0.125; stage 4 widens without losing resolution
    assert shapes == [(25, 8, 8), (13, 4, 16), (7, 2, 32), (7, 2, 64)], shapes
    assert stages[4](h, training=False)["embedding"].shape == (2, 64)
    stage4 = stages[3]
    assert "s4_trans_pw" in [lay.name for lay in stage4.layers]
    assert not any("blurpool" in lay.name for lay in stage4.layers)
    assert not any("trans" in lay.name for lay in stages[4].layers)  # same width: no transition
    ops = tflite_op_counts(lce.convert_keras_model(stage4))
    assert ops["LceBconv2d"] == len(binary_convs(stage4)) == 2, ops
    plain = build_stages(cfg.replace(stage_filters=None))
    assert plain[3].output["fmap"].shape[-1] == 32  # default plan: 256 at width 1
    for bad, arch in (([64, 128, 256, 512], "quicknet"), ([64, 0, 256, 512, 512], "quicknet"),
                      ([64, 128, 256, 512, 512], "birealnet")):
        with pytest.raises(ConfigError, match="stage_filters"):
            ModelConfig(arch=arch, stage_filters=bad)


def test_binary_bn_epsilon_reaches_only_the_batch_norms_after_binary_convs(speech):
    from bnnkws.kws.config import ConfigError

    cfg = norm_cfg(speech, arch="quicknet", width=0.125, binary_bn_epsilon=1.0)
    st = build_stages(cfg)[0]
    eps = {lay.name: lay.epsilon for lay in st.layers if "bn" in lay.name}
    assert eps["s1_b0_bn"] == eps["s1_b2_bn"] == 1.0
    assert eps["stem_bn1"] == 1e-5  # real-valued layers keep the usual epsilon
    assert ModelConfig.from_dict(cfg.to_dict()).binary_bn_epsilon == 1.0
    assert ModelConfig.from_dict({k: v for k, v in cfg.to_dict().items()
                                  if k != "binary_bn_epsilon"}).binary_bn_epsilon == 1e-5
    for bad in ({"binary_bn_epsilon": 0.0}, {"arch": "meliusnet", "binary_bn_epsilon": 1.0}):
        with pytest.raises(ConfigError, match="binary_bn_epsilon"):
            ModelConfig(**bad)


def test_a_few_gradient_steps_lower_the_loss_on_real_speech(speech, built):
    x, y = speech
    cfg, model = built
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = tf.keras.optimizers.Adam(1e-2)

    def step():  # eager: tracing the gradient graph would cost more than the steps
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = tf.add_n([loss_fn(y, out[k]) for k in cfg.exit_names])
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    losses = [float(step()) for _ in range(12)]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:2]), losses
    # the weight clip constraint holds on every binary kernel latent
    for lay in binary_convs(model):
        clip = lay.kernel_constraint.clip_value
        assert float(tf.reduce_max(tf.abs(lay.kernel))) <= clip + 1e-6
