"""MicrophoneStream without a sound card: device errors, the PortAudio-missing message, and the
data path (queue, overflow counting, level, resampling) driven through the real callback."""
import sys

import numpy as np
import pytest

from bnnkws.frontend import microphone as mic
from bnnkws.frontend.microphone import (
    MicrophoneError,
    MicrophoneStream,
    NoInputDeviceError,
    PortAudioMissingError,
    level_db,
    list_input_devices,
)


def test_list_input_devices_matches_portaudio():
    import sounddevice as sd

    expected = [d["index"] for d in sd.query_devices() if d["max_input_channels"] > 0]
    devices = list_input_devices()
    assert [d["index"] for d in devices] == expected
    for d in devices:
        assert d["channels"] > 0 and d["default_samplerate"] > 0 and d["name"]


def test_bogus_device_name_is_a_clear_error():
    with pytest.raises(NoInputDeviceError) as info:
        with MicrophoneStream(device="no-such-microphone-xyz"):
            pass
    msg = str(info.value)
    assert "no-such-microphone-xyz" in msg
    # the message lists what exists (or says nothing exists)
    names = [d["name"] for d in list_input_devices()]
    assert all(n in msg for n in names) if names else "no input devices found" in msg
    with pytest.raises(NoInputDeviceError, match="9999 is not an input device"):
        MicrophoneStream(device=9999).start()


def test_portaudio_missing_says_how_to_install(monkeypatch):
    class NoPortAudio:
        def find_spec(self, name, path=None, target=None):
            if name == "sounddevice":
                raise OSError("PortAudio library not found")  # what sounddevice raises
            return None

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoPortAudio()] + sys.meta_path)
    with pytest.raises(PortAudioMissingError, match="apt-get install libportaudio2"):
        list_input_devices()
    with pytest.raises(MicrophoneError, match="PortAudio library not found"):
        MicrophoneStream().start()


class Flags:
    def __init__(self, overflow):
        self.input_overflow = overflow

    def __bool__(self):
        return self.input_overflow


def test_callback_queue_overflow_and_level():
    m = MicrophoneStream(sample_rate=16000, max_blocks=3)
    m._configure(16000)
    tone = (0.5 * np.sin(np.arange(1600) * 0.1)).astype(np.float32)[:, None]
    m._callback(tone, 1600, None, Flags(False))
    m._callback(tone * 0, 1600, None, Flags(True))  # device overflow: counted, not raised
    assert m.overflows == 1
    block = m.read(timeout=0.1)
    assert block.dtype == np.float32 and block.shape == (1600,)
    np.testing.assert_array_equal(block, tone[:, 0])
    assert abs(m.level_db - 20 * np.log10(0.5 / np.sqrt(2))) < 0.1  # -9.03 dBFS sine
    assert m.read(timeout=0.1).shape == (1600,) and m.level_db == mic.SILENCE_DB
    assert m.read(timeout=0.01).shape == (0,)  # timeout: empty block, no exception
    # consumer falls behind: the oldest blocks are dropped and counted
    for i in range(5):
        m._callback(np.full((1600, 1), i, np.float32), 1600, None, None)
    assert m.dropped_blocks == 2 and m.overflows == 3
    assert [m.read(0.1)[0] for _ in range(3)] == [2, 3, 4]


def test_resampling_from_device_rate_is_continuous():
    # A 48 kHz-only device: blocks are resampled to 16 kHz with soxr's streaming resampler.
    import soxr

    m = MicrophoneStream(sample_rate=16000)
    m._configure(48000)
    assert m.device_rate == 48000
    t = np.arange(48000 * 2) / 48000
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = []
    for i in range(0, len(x), 4800):
        m._callback(x[i : i + 4800, None], 4800, None, None)
        out.append(m.read(0.1))
    y = np.concatenate(out)
    assert abs(len(y) - 32000) < 200  # the resampler's delay holds back a few samples
    whole = soxr.resample(x, 48000, 16000, quality="HQ")
    # streaming output is the one-shot resampling of the whole signal: no seams between blocks
    assert np.abs(y[100:] - whole[100 : len(y)]).max() < 1e-5


def test_level_db():
    assert level_db(np.zeros(100, np.float32)) == mic.SILENCE_DB
    assert level_db(np.ones(100, np.float32)) == pytest.approx(0.0)
    assert level_db(np.full(100, 0.1, np.float32)) == pytest.approx(-20.0)


PROBE = r"""
import json, sys, time
import numpy as np
from bnnkws.frontend.microphone import MicrophoneStream, list_input_devices
devices = list_input_devices()
with MicrophoneStream(sample_rate=16000, blocksize=800) as m:
    blocks, levels = [m.read(timeout=10.0)], []  # capture really runs once a block arrives
    print("READY", flush=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < float(sys.argv[2]):
        b = m.read(timeout=0.5)
        blocks.append(b)
        levels.append(m.level_db)
    np.save(sys.argv[1], np.concatenate(blocks))
    print(json.dumps({"devices": devices, "max_level": max(levels), "overflows": m.overflows,
                      "device_name": m.device_name, "device_rate": m.device_rate}))
"""


@pytest.mark.audio_stack
def test_records_real_speech_through_pulseaudio(tmp_path, sc_v2):
    """A private PulseAudio server (tests/e2e_pulse.py) gives a real capture device: play a
    speech clip into its null sink and find it, sample for sample, in what the stream read."""
    import json
    import subprocess
    import time

    from e2e_pulse import PulseServer, pulse_missing

    from bnnkws.frontend.audio import load_audio

    if pulse_missing():
        pytest.skip(f"PulseAudio binaries missing: {pulse_missing()}")
    clip = sorted((sc_v2 / "yes").glob("*.wav"))[0]
    speech = load_audio(clip)
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    rec = tmp_path / "rec.npy"
    with PulseServer(tmp_path / "pulse") as pa:
        # PortAudio reads ALSA's configuration when sounddevice is imported: use a subprocess
        proc = subprocess.Popen([sys.executable, str(script), str(rec), "4.0"], env=pa.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
        time.sleep(0.3)
        pa.play(clip).wait(timeout=30)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    info = json.loads(out.strip().splitlines()[-1])
    assert any(d["is_default"] for d in info["devices"]), info["devices"]
    assert info["device_rate"] == 16000 and info["overflows"] == 0
    got = np.load(rec)
    assert got.dtype == np.float32 and len(got) > 16000
    # locate the clip in the recording by cross-correlation, then compare sample by sample
    corr = np.correlate(got, speech, mode="valid")
    lag = int(np.argmax(corr))
    seg = got[lag : lag + len(speech)]
    assert np.corrcoef(seg, speech)[0, 1] > 0.99, f"clip not found intact (lag {lag})"
    assert info["max_level"] > -40.0  # the level meter saw the speech


def test_busy_device_errors_are_recognised():
    import sounddevice as sd

    assert mic._is_busy(sd.PortAudioError("Device unavailable", -9985))
    assert mic._is_busy(sd.PortAudioError("Unanticipated host error", -9999,
                                          (0, -16, "Device or resource busy")))
    assert not mic._is_busy(sd.PortAudioError("Invalid sample rate", -9997))
    err = MicrophoneStream()._busy({"index": 3, "name": "USB mic"}, sd.PortAudioError("Device unavailable", -9985))
    assert isinstance(err, mic.DeviceBusyError)
    assert "device 3 (USB mic) is busy" in str(err) and "--device" in str(err)
