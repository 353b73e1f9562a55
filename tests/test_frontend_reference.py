"""The numpy reference log-mel against librosa on real speech, and its batch/edge behaviour."""
import numpy as np
import pytest

from bnnkws.frontend import DEFAULT_FRONTEND, FrontendConfig
from bnnkws.frontend.reference import frame_signal, log_mel, log_mel_batch, mel_matrix


def librosa_log_mel(y, cfg):
    """librosa with centre=False. librosa frames n_fft samples with the window centred inside
    them, so shift the signal by the centring offset to put window t on [t*hop, t*hop+win)."""
    import librosa

    off = (cfg.n_fft - cfg.win_length) // 2
    S = librosa.feature.melspectrogram(
        y=np.pad(y.astype(np.float64), (off, off)), sr=cfg.sample_rate, n_fft=cfg.n_fft,
        hop_length=cfg.hop_length, win_length=cfg.win_length, window="hann", center=False,
        power=2.0, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax,
    )
    return np.log(S.T + cfg.log_offset)


def test_matches_librosa_on_real_clips(frontend_clips):
    cfg = DEFAULT_FRONTEND
    for name, y in frontend_clips.items():
        ours = log_mel(y, cfg)
        assert ours.shape == (98, 64) and ours.dtype == np.float32, name
        ref = librosa_log_mel(y, cfg)
        assert ref.shape == ours.shape
        # float32 rounding of values up to ~|log(1e-6)| = 13.8 is ~1e-6
        np.testing.assert_allclose(ours, ref, atol=5e-6, rtol=0, err_msg=name)


def test_batch_equals_single(frontend_clips):
    Y = np.stack(list(frontend_clips.values()))
    batch = log_mel_batch(Y, batch_size=5)  # uneven last block on purpose
    assert batch.shape == (len(Y), 98, 64) and batch.dtype == np.float32
    for i, y in enumerate(Y):
        np.testing.assert_allclose(batch[i], log_mel(y), atol=1e-6, rtol=0)


def test_silence_floor_and_speech_range(frontend_clips):
    floor = np.log(DEFAULT_FRONTEND.log_offset)
    # FSDD clips are zero-padded to 1 s: their first frames are digital silence
    fsdd = log_mel(frontend_clips["fsdd/0_jackson_0.wav"])
    assert np.allclose(fsdd[0], floor, atol=1e-6)
    speech = log_mel(next(y for k, y in frontend_clips.items() if k.startswith("yes/")))
    assert speech.max() > floor + 10  # speech rises far above the floor


def test_frames_and_shapes():
    cfg = DEFAULT_FRONTEND
    assert cfg.num_frames == 98
    y = np.arange(1000, dtype=np.float64)
    fr = frame_signal(y, cfg)
    assert fr.shape == (1 + (1000 - 400) // 160, 400)
    assert fr[2, 0] == 320 and fr[2, -1] == 719
    assert log_mel(np.zeros(399)).shape == (0, 64)  # shorter than one window: no frame
    m = mel_matrix(cfg)
    assert m.shape == (257, 64) and mel_matrix(cfg) is m  # cached
    # nothing below fmin=60 Hz (bin 1 = 31 Hz) or above fmax=7800 Hz (bin 250 = 7812 Hz)
    assert not m[:2].any() and not m[250:].any()


def test_integer_pcm_is_scaled_and_bad_input_refused():
    rng = np.random.default_rng(0)
    y = (rng.standard_normal(16000) * 3000).astype(np.int16)
    np.testing.assert_allclose(log_mel(y), log_mel(y / 32768.0), atol=1e-6)
    with pytest.raises(ValueError, match="NaN"):
        log_mel(np.array([0.0, np.nan] * 300))
    with pytest.raises(ValueError, match="1-D"):
        log_mel(np.zeros((2, 16000)))


def test_other_config_changes_output():
    y = np.random.default_rng(1).standard_normal(16000).astype(np.float32)
    cfg = FrontendConfig(n_mels=40, fmax=8000)
    out = log_mel(y, cfg)
    assert out.shape == (98, 40)
    np.testing.assert_allclose(out, librosa_log_mel(y, cfg), atol=5e-6, rtol=0)
