"""Audio sources for the streaming path: a microphone, a file, or an array in memory.

Every source yields 16 kHz mono float32 blocks, so everything downstream is identical whether
the audio comes from a sound card or a recording. A file can be paced in real time (what a
microphone would deliver, block by block) or pushed as fast as the machine goes (``--fast``);
the detections are the same because the detection path only counts samples.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

DEFAULT_BLOCK_MS = 50.0


class SourceError(RuntimeError):
    """The audio source cannot be opened or read; the message says what to do about it."""


class ArraySource:
    """Blocks of an in-memory signal (already at the stream's sample rate)."""

    def __init__(self, audio, sample_rate: int = 16000, block_ms: float = DEFAULT_BLOCK_MS,
                 realtime: bool = False, name: str = "array"):
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"{name}: expected mono audio (n,), got shape {audio.shape}")
        self.audio = audio
        self.sample_rate = int(sample_rate)
        self.block = max(1, int(round(block_ms * self.sample_rate / 1000.0)))
        self.realtime = bool(realtime)
        self.name = name
        self.overflows = 0  # a file never overflows; kept so every source looks the same

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / self.sample_rate

    def describe(self) -> str:
        pace = "real time" if self.realtime else "as fast as possible"
        return f"{self.name} ({self.duration_s:.1f} s, {pace})"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[np.ndarray]:
        start = time.monotonic()
        for i in range(0, self.audio.shape[0], self.block):
            block = self.audio[i : i + self.block]
            if self.realtime:
                # A microphone hands over a block once its last sample has been recorded.
                due = start + (i + block.shape[0]) / self.sample_rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield block


class FileSource(ArraySource):
    """A sound file (any rate/format soundfile reads), resampled to the stream's rate, mono."""

    TAIL_S = 1.0

    def __init__(self, path, sample_rate: int = 16000, block_ms: float = DEFAULT_BLOCK_MS,
                 realtime: bool = True):
        from bnnkws.frontend.audio import load_audio

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"input file not found: {path}")
        audio = load_audio(path, sr=sample_rate)
        # One second of silence after the end: a microphone keeps delivering audio after a word,
        # and the smoother needs the hops that follow it to reach its minimum count. Without
        # this a one-second clip gives a single hop and can never fire. Time stamps are unchanged.
        audio = np.concatenate([audio, np.zeros(int(sample_rate * self.TAIL_S), audio.dtype)])
        super().__init__(audio, sample_rate, block_ms, realtime, name=str(path))


class MicrophoneSource:
    """Live capture through :class:`bnnkws.frontend.microphone.MicrophoneStream`.

    Overflows (audio the machine did not collect in time) are counted by the stream, shown by
    the view and reported in the summary; the stream keeps going. Device problems (no PortAudio,
    no capture device, busy device, unsupported rate) become a :class:`SourceError` whose message
    says what is missing.
    """

    realtime = True
    # A capture device that delivers nothing for this long has stopped (unplugged, suspended).
    STALL_S = 5.0

    def __init__(self, device=None, sample_rate: int = 16000, block_ms: float = DEFAULT_BLOCK_MS):
        from bnnkws.frontend.microphone import MicrophoneStream

        self.sample_rate = int(sample_rate)
        self.block = max(1, int(round(block_ms * self.sample_rate / 1000.0)))
        self.device = device
        # blocksize counts samples at the device's rate: at 48 kHz blocks are just shorter.
        # latency="high": PortAudio's larger capture buffer rides out scheduling hiccups of a
        # busy machine (overflows lose audio, which costs detections); a keyword spotter does not
        # need the ~10 ms "low" setting.
        self._stream = MicrophoneStream(sample_rate=self.sample_rate, device=device,
                                        blocksize=self.block, latency="high")
        self._block_ms = block_ms
        self.name = f"microphone {device if device is not None else '(default input)'}"

    @property
    def overflows(self) -> int:
        return int(getattr(self._stream, "overflows", 0))

    def describe(self) -> str:
        s = self._stream
        rate = s.device_rate or self.sample_rate
        resample = f", resampled from {rate} Hz" if rate != self.sample_rate else ""
        return f"{self.name} ({self.sample_rate} Hz mono{resample}, {self._block_ms:g} ms blocks)"

    def __enter__(self):
        from bnnkws.frontend.microphone import MicrophoneError, NoInputDeviceError

        s = self._stream
        try:
            s.start()
        except NoInputDeviceError as e:
            if self.device is None:
                raise SourceError(no_input_message()) from e
            raise SourceError(str(e)) from e
        except MicrophoneError as e:
            raise SourceError(str(e)) from e
        if s.device_name:
            self.name = f"microphone {s.device_name!r}"
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        self._stream.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        quiet = 0.0
        while True:
            block = self._stream.read(timeout=0.5)
            if block.size:
                quiet = 0.0
                yield np.asarray(block, dtype=np.float32).reshape(-1)
                continue
            quiet += 0.5
            if not self._stream.active:
                raise SourceError(f"{self.name} stopped delivering audio (device removed or "
                                  "suspended?)")
            if quiet >= self.STALL_S:
                raise SourceError(f"{self.name} delivered no audio for {quiet:.0f} s; is it "
                                  "muted, suspended or used exclusively by another program?")


PORTAUDIO_HINT = ("PortAudio (the library sounddevice records through) is not installed: "
                  "sudo apt-get install libportaudio2   (macOS: brew install portaudio)")


def _sounddevice():
    """The sounddevice module, or a SourceError saying which system library is missing."""
    try:
        import sounddevice as sd
    except OSError as e:  # raised at import when libportaudio cannot be loaded
        raise SourceError(f"{PORTAUDIO_HINT}\n  ({e})") from e
    except ImportError as e:
        raise SourceError("the Python package sounddevice is missing: pip install sounddevice") from e
    return sd


def audio_devices_report() -> str:
    """Every PortAudio device with its input/output channels; the default input marked."""
    sd = _sounddevice()
    devices = sd.query_devices()
    if len(devices) == 0:
        return no_input_message(devices=[])
    try:
        default_in = sd.default.device[0]
    except Exception:  # noqa: BLE001 - a broken default must not hide the list
        default_in = -1
    lines = ["audio devices ('>' = default input; use --device INDEX or a part of the name):"]
    for i, d in enumerate(devices):
        mark = ">" if i == default_in else " "
        kind = "input" if d["max_input_channels"] > 0 else "output only"
        api = sd.query_hostapis(d["hostapi"])["name"]
        lines.append(f"{mark} {i:3d}  {d['name']}  ({api}; {d['max_input_channels']} in, "
                     f"{d['max_output_channels']} out; {d['default_samplerate']:.0f} Hz) - {kind}")
    if not any(d["max_input_channels"] > 0 for d in devices):
        lines.append("no device can record: " + no_input_message(devices=devices).splitlines()[0])
    return "\n".join(lines)


def no_input_message(devices=None) -> str:
    """What is missing when there is nothing to record from, and what to do about it."""
    if devices is None:
        try:
            devices = list(_sounddevice().query_devices())
        except SourceError as e:
            return str(e)
    lines = ["no audio capture device found."]
    if len(devices) == 0:
        lines.append("  PortAudio sees no devices at all: no sound card, or no access to one "
                     "(in a container pass /dev/snd, or run PulseAudio / PipeWire and install "
                     "its ALSA plugin: sudo apt-get install libasound2-plugins pulseaudio).")
    else:
        names = ", ".join(f"{i}: {d['name']}" for i, d in enumerate(devices))
        lines.append(f"  Devices present, none with input channels: {names}.")
    lines.append("  Check a microphone is plugged in and not muted, then list the devices again with --list-devices.")
    return "\n".join(lines)


def open_source(input_path: Optional[str] = None, device=None, fast: bool = False,
                sample_rate: int = 16000, block_ms: float = DEFAULT_BLOCK_MS):
    """A file source when ``input_path`` is given (real time unless ``fast``), else the microphone."""
    if input_path is not None:
        return FileSource(input_path, sample_rate=sample_rate, block_ms=block_ms, realtime=not fast)
    return MicrophoneSource(device=device, sample_rate=sample_rate, block_ms=block_ms)
