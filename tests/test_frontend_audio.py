"""load_audio on real formats and real broken files, each made here for the test."""
import os

import numpy as np
import pytest
import soundfile as sf

from bnnkws.frontend.audio import (
    AudioError,
    AudioFileNotFoundError,
    load_audio,
    pad_or_crop,
)


@pytest.fixture()
def speech(sc_v2):
    path = sorted((sc_v2 / "yes").glob("*.wav"))[0]
    y, sr = sf.read(path, dtype="float32")
    assert sr == 16000
    return y


@pytest.mark.parametrize(
    "ext,kw", [("wav", {"subtype": "PCM_16"}), ("flac", {}), ("ogg", {"subtype": "VORBIS"})]
)
def test_reads_wav_flac_ogg(tmp_path, speech, ext, kw):
    path = tmp_path / f"clip.{ext}"
    sf.write(path, speech, 16000, **kw)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    if ext == "ogg":
        # Vorbis is lossy and may shift a few samples: the waveform stays highly correlated
        assert abs(len(y) - len(speech)) < 1024
        n = min(len(y), len(speech))
        assert np.corrcoef(y[:n], speech[:n])[0, 1] > 0.95
    else:  # lossless: exact up to 16-bit quantisation
        assert len(y) == len(speech)
        assert np.abs(y - speech).max() <= 1 / 32768


def test_stereo_is_mixed_to_mono_and_resampled(tmp_path, speech):
    import soxr

    left, right = speech, 0.5 * speech[::-1]
    path = tmp_path / "stereo_44k.wav"
    sf.write(path, soxr.resample(np.stack([left, right], 1), 16000, 44100), 44100, subtype="FLOAT")
    y = load_audio(path)
    assert abs(len(y) - len(speech)) <= 1
    n = min(len(y), len(speech))
    mono = (left + right)[:n] / 2
    assert np.sqrt(np.mean((y[:n] - mono) ** 2)) < 0.01 * np.sqrt(np.mean(mono**2))


def test_fsdd_8k_is_resampled_to_16k(fsdd):
    path = fsdd / "0_jackson_0.wav"
    raw, sr = sf.read(path, dtype="float32")
    assert sr == 8000
    y = load_audio(path)
    assert len(y) == 2 * len(raw)
    # every other 16 kHz sample approximates the 8 kHz original (band-limited interpolation)
    core = slice(200, len(raw) - 200)
    rel = np.sqrt(np.mean((y[::2][core] - raw[core]) ** 2)) / np.sqrt(np.mean(raw[core] ** 2))
    assert rel < 0.05
    # no energy above the original Nyquist (4 kHz) appears
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / 16000)
    assert spec[f > 4200].sum() < 1e-3 * spec.sum()
    fixed = load_audio(path, length=16000, crop="center")
    assert fixed.shape == (16000,)


def test_pad_or_crop_modes():
    y = np.arange(1, 11, dtype=np.float32)
    np.testing.assert_array_equal(pad_or_crop(y, 4, "start"), [1, 2, 3, 4])
    np.testing.assert_array_equal(pad_or_crop(y, 4, "center"), [4, 5, 6, 7])
    np.testing.assert_array_equal(pad_or_crop(y, 14, "start"), list(range(1, 11)) + [0] * 4)
    np.testing.assert_array_equal(pad_or_crop(y, 14, "center"), [0, 0] + list(range(1, 11)) + [0, 0])
    offsets = {int(pad_or_crop(y, 4, "random", rng=s)[0]) - 1 for s in range(50)}
    assert offsets == set(range(7))  # every crop position is reachable
    assert pad_or_crop(y, 4, "random", rng=3)[0] == pad_or_crop(y, 4, "random", rng=3)[0]
    with pytest.raises(ValueError, match="crop must be"):
        pad_or_crop(y, 4, "middle")


def _wav_bytes(tmp_path):
    p = tmp_path / "good.wav"
    sf.write(p, (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16000, subtype="PCM_16")
    return p.read_bytes()


def check_error(path, *words):
    with pytest.raises(AudioError) as info:
        load_audio(path)
    err = info.value
    assert err.path == str(path) and str(path) in str(err)
    for w in words:
        assert w in err.problem, err.problem
    return err


def test_missing_file(tmp_path):
    err = check_error(tmp_path / "nope.wav", "no such file")
    assert isinstance(err, AudioFileNotFoundError) and isinstance(err, FileNotFoundError)
    check_error(tmp_path, "directory")


def test_empty_and_zero_length(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    check_error(empty, "empty file")
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0, np.float32), 16000)
    assert zero.stat().st_size > 0  # a valid header with no samples
    check_error(zero, "no audio samples")


def test_truncated_and_corrupt_wav(tmp_path):
    good = _wav_bytes(tmp_path)
    trunc = tmp_path / "trunc.wav"
    trunc.write_bytes(good[: len(good) // 2])  # interrupted copy
    check_error(trunc, "truncated", str(len(good) - 44))
    header_only = tmp_path / "header_only.wav"
    header_only.write_bytes(good[:44])
    check_error(header_only, "truncated")
    bad_fmt = tmp_path / "bad_fmt.wav"
    bad_fmt.write_bytes(good[:20])  # cut inside the 'fmt ' chunk
    check_error(bad_fmt, "corrupt", "WAV")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF" + os.urandom(4000))
    check_error(garbage, "corrupt", "WAV")
    wrong_magic = tmp_path / "wrong_magic.wav"
    wrong_magic.write_bytes(b"XXXX" + good[4:])
    check_error(wrong_magic, "corrupt WAV", "header")
    flac = tmp_path / "noise.flac"
    flac.write_bytes(b"fLaC" + os.urandom(3000))
    check_error(flac, "corrupt", "FLAC")


def test_unsupported_format(tmp_path):
    m4a = tmp_path / "voice.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A isomiso2" + os.urandom(500))
    check_error(m4a, "unsupported format", "M4A", "ffmpeg")
    txt = tmp_path / "notes.txt"
    txt.write_text("these are not samples\n" * 50)
    check_error(txt, "unsupported format", "WAV")  # lists what is readable


def test_nan_and_inf_samples(tmp_path):
    y = np.zeros(1600, np.float32)
    y[800] = np.nan
    y[900] = np.inf
    p = tmp_path / "nan.wav"
    sf.write(p, y, 16000, subtype="FLOAT")
    check_error(p, "2 sample(s)", "NaN", "0.050 s")
