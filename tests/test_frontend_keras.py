"""The Keras LogMel layer: builtin-only TFLite conversion, LCE interpreter parity on real audio,
and saving/loading inside a model."""
import numpy as np
import pytest

from bnnkws.frontend import DEFAULT_FRONTEND, FrontendConfig
from bnnkws.frontend.config import DFT_MODES
from bnnkws.frontend.reference import log_mel_batch

tf = pytest.importorskip("tensorflow")
from bnnkws.frontend.keras_layer import LogMel, convert, frontend_model, tflite_op_names  # noqa: E402
from larq_compute_engine.tflite.python.interpreter import Interpreter  # noqa: E402

# Every op the layer may use; anything else (Flex*, custom ops) fails the test.
ALLOWED = {
    "RESHAPE", "STRIDED_SLICE", "CONCATENATION", "FULLY_CONNECTED", "MUL", "ADD", "LOG",
    "PAD", "EXPAND_DIMS", "RFFT2D", "REAL", "IMAG", "TRANSPOSE", "DEPTHWISE_CONV_2D",
}

_converted = {}


def converted(dft, converter):
    if (dft, converter) not in _converted:
        _converted[dft, converter] = convert(frontend_model(DEFAULT_FRONTEND, dft), converter)
    return _converted[dft, converter]


@pytest.mark.parametrize("converter", ["lce", "tflite"])
@pytest.mark.parametrize("dft", DFT_MODES)
def test_converts_to_builtins_and_matches_reference(frontend_clips, dft, converter):
    fb = converted(dft, converter)
    ops = tflite_op_names(fb)
    assert set(ops) <= ALLOWED, f"non-builtin or unexpected ops: {set(ops) - ALLOWED}"
    assert not any(op.startswith("Flex") for op in ops)
    assert ("RFFT2D" in ops) == (dft == "rfft")

    names = sorted(frontend_clips)
    Y = np.stack([frontend_clips[n] for n in names])
    ref = log_mel_batch(Y)
    out = Interpreter(fb, num_threads=1).predict(Y)
    assert out.shape == (len(Y), 98, 64) and out.dtype == np.float32
    worst = np.abs(out - ref).max(axis=(1, 2))
    assert worst.max() <= 1e-3, f"{names[int(worst.argmax())]}: max abs diff {worst.max():.2e}"


def test_keras_graph_matches_reference_in_batch(frontend_clips):
    Y = np.stack(list(frontend_clips.values()))[:6]
    out = frontend_model()(Y).numpy()  # eager TF, no TFLite: the graph itself is right
    np.testing.assert_allclose(out, log_mel_batch(Y), atol=1e-3, rtol=0)


@pytest.mark.parametrize("n_fft,win_length,fmax", [(1024, 400, 8000.0), (480, 480, 7800.0)])
def test_fourstep_dft_fits_other_sizes(frontend_clips, n_fft, win_length, fmax):
    # 1024 = 32 x 32 with the band reaching Nyquist (a k past n_fft // 2 gets a zero mel row);
    # 480 = 20 x 24, not a power of two, with no zero padding at all.
    cfg = FrontendConfig(n_fft=n_fft, win_length=win_length, fmax=fmax)
    Y = np.stack(list(frontend_clips.values()))[:4]
    out = frontend_model(cfg, "fourstep")(Y).numpy()
    np.testing.assert_allclose(out, log_mel_batch(Y, cfg), atol=1e-3, rtol=0)


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_model_with_layer_saves_and_loads(tmp_path, frontend_clips):
    import tf_keras as keras

    audio = keras.Input((16000,))
    x = LogMel(DEFAULT_FRONTEND, dft="matmul", name="logmel")(audio)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(audio, keras.layers.Dense(3)(x))
    y = np.stack(list(frontend_clips.values())[:2])
    before = model(y).numpy()
    for path in (tmp_path / "m.h5", tmp_path / "m.keras"):
        model.save(path)
        loaded = keras.models.load_model(path)
        layer = loaded.get_layer("logmel")
        assert layer.cfg == DEFAULT_FRONTEND and layer.dft == "matmul"
        np.testing.assert_allclose(loaded(y).numpy(), before, atol=1e-5)
    assert LogMel.from_config(layer.get_config()).get_config() == layer.get_config()


def test_layer_rejects_unusable_input():
    import tf_keras as keras

    with pytest.raises(ValueError, match="fixed number of samples"):
        LogMel()(keras.Input((None,)))
    with pytest.raises(ValueError, match="fewer than one window"):
        LogMel()(keras.Input((100,)))
    with pytest.raises(ValueError, match="dft must be"):
        LogMel(dft="fft")


def test_rfft_needs_power_of_two_fft():
    cfg = FrontendConfig(n_fft=480)
    with pytest.raises(ValueError, match="power of two"):
        LogMel(cfg, dft="rfft")
    assert LogMel(cfg).dft == "fourstep" and LogMel(cfg, dft="matmul").dft == "matmul"
