"""Microphone input: 16 kHz float32 mono blocks from sounddevice, with errors a user can act on.

>>> with MicrophoneStream(sample_rate=16000, blocksize=1600) as mic:
...     while True:
...         block = mic.read(timeout=1.0)      # float32 (n,), empty on timeout
...         print(mic.level_db, mic.overflows)

* Overflows (the device delivered audio faster than we took it, or our queue was full because the
  consumer fell behind) are counted in ``.overflows`` and never raised: a live demo should keep
  listening and show the count.
* If the device cannot record at ``sample_rate`` it is opened at its own default rate and the
  blocks are resampled with soxr's streaming resampler (``.device_rate`` says which rate is used).
* sounddevice is imported lazily: importing this module never needs PortAudio. A missing
  PortAudio library, a missing or ambiguous device, a busy device and an unsupported rate each
  raise a :class:`MicrophoneError` subclass whose message says what to do.
"""
from __future__ import annotations

import importlib
import queue
import threading

import numpy as np

__all__ = [
    "MicrophoneError",
    "PortAudioMissingError",
    "NoInputDeviceError",
    "DeviceBusyError",
    "MicrophoneStream",
    "list_input_devices",
    "level_db",
]

SILENCE_DB = -120.0  # level reported for digital silence instead of -inf


class MicrophoneError(ValueError):
    """A microphone problem the user must fix (device, driver, rate)."""


class PortAudioMissingError(MicrophoneError):
    pass


class NoInputDeviceError(MicrophoneError):
    pass


class DeviceBusyError(MicrophoneError):
    pass


def _sounddevice():
    """Import sounddevice, turning 'PortAudio library not found' into an actionable message."""
    try:
        return importlib.import_module("sounddevice")
    except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise PortAudioMissingError(
            f"the PortAudio library is not installed ({exc}); install it with "
            "`sudo apt-get install libportaudio2` (Debian/Ubuntu/Raspberry Pi OS), "
            "`brew install portaudio` (macOS), then try again"
        ) from exc


def level_db(block: np.ndarray) -> float:
    """RMS level of a block in dB full scale (0 dB = full-scale square wave)."""
    if block.size == 0:
        return SILENCE_DB
    rms = float(np.sqrt(np.mean(np.square(block, dtype=np.float64))))
    return max(SILENCE_DB, 20.0 * np.log10(rms)) if rms > 0 else SILENCE_DB


def list_input_devices() -> list[dict]:
    """Devices that can record: dicts with index, name, hostapi, channels, default_samplerate,
    is_default. Empty if there are none (e.g. a headless server without a sound card)."""
    sd = _sounddevice()
    try:
        default_in = sd.default.device[0]
        devices = sd.query_devices()
        apis = sd.query_hostapis()
    except sd.PortAudioError as exc:
        raise MicrophoneError(f"cannot list audio devices: {exc}") from exc
    out = []
    for info in devices:
        if info["max_input_channels"] > 0:
            out.append(
                {
                    "index": info["index"],
                    "name": info["name"],
                    "hostapi": apis[info["hostapi"]]["name"],
                    "channels": info["max_input_channels"],
                    "default_samplerate": float(info["default_samplerate"]),
                    "is_default": info["index"] == default_in,
                }
            )
    return out


def _describe_devices(devices: list[dict]) -> str:
    if not devices:
        return (
            "no input devices found (is a microphone connected? on a server, check "
            "`arecord -l`, or start PulseAudio with `pulseaudio --start`)"
        )
    lines = [
        f"  {'*' if d['is_default'] else ' '}{d['index']:3d} {d['name']} ({d['hostapi']}, "
        f"{d['channels']} ch, {d['default_samplerate']:.0f} Hz)"
        for d in devices
    ]
    return "input devices (* = default):\n" + "\n".join(lines)


def _is_busy(exc: Exception) -> bool:
    text = str(exc).lower()
    code = exc.args[1] if len(getattr(exc, "args", ())) > 1 else None
    # paDeviceUnavailable = -9985; ALSA reports EBUSY as "Device or resource busy".
    return code == -9985 or "busy" in text or "unavailable" in text


class MicrophoneStream:
    """Context manager yielding float32 mono blocks at ``sample_rate`` from an input device.

    ``device``: None (the system default input), an index from :func:`list_input_devices`, or a
    case-insensitive name substring. ``blocksize``: samples per block at the device rate
    (default 100 ms). ``max_blocks``: queue bound; when the consumer falls behind, the oldest
    audio is dropped and counted in ``overflows`` rather than growing memory.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        blocksize: int | None = None,
        device=None,
        max_blocks: int = 50,
        latency="low",
    ):
        self.sample_rate = int(sample_rate)
        self.blocksize = blocksize
        self.device = device
        self.max_blocks = int(max_blocks)
        self.latency = latency
        self.overflows = 0
        self.dropped_blocks = 0
        self.level_db = SILENCE_DB
        self.device_rate: int | None = None
        self.device_name: str | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=self.max_blocks)
        self._lock = threading.Lock()
        self._resampler = None
        self._stream = None

    # ---- device selection -------------------------------------------------------------
    def _resolve_device(self, sd) -> dict:
        devices = list_input_devices()
        dev = self.device
        if isinstance(dev, str) and dev.strip().isdigit():
            dev = int(dev)
        if dev is None:
            for d in devices:
                if d["is_default"]:
                    return d
            if devices:  # no default configured: take the first that can record
                return devices[0]
            raise NoInputDeviceError("no microphone: " + _describe_devices(devices))
        if isinstance(dev, int):
            for d in devices:
                if d["index"] == dev:
                    return d
            raise NoInputDeviceError(
                f"device {dev} is not an input device; " + _describe_devices(devices)
            )
        matches = [d for d in devices if str(dev).lower() in d["name"].lower()]
        exact = [d for d in matches if d["name"].lower() == str(dev).lower()]
        if len(exact) == 1 or len(matches) == 1:
            return (exact or matches)[0]
        if not matches:
            raise NoInputDeviceError(
                f"no input device matches {dev!r}; " + _describe_devices(devices)
            )
        raise NoInputDeviceError(
            f"{dev!r} matches several input devices, use its index; "
            + _describe_devices(matches)
        )

    def _choose_rate(self, sd, info: dict) -> int:
        try:
            sd.check_input_settings(
                device=info["index"], channels=1, dtype="float32", samplerate=self.sample_rate
            )
            return self.sample_rate
        except sd.PortAudioError as exc:
            if _is_busy(exc):
                raise self._busy(info, exc) from exc
            native = int(round(info["default_samplerate"]))
            try:
                sd.check_input_settings(
                    device=info["index"], channels=1, dtype="float32", samplerate=native
                )
            except sd.PortAudioError as exc2:
                if _is_busy(exc2):
                    raise self._busy(info, exc2) from exc2
                raise MicrophoneError(
                    f"device {info['index']} ({info['name']}) records neither at "
                    f"{self.sample_rate} Hz nor at its default {native} Hz: {exc2}"
                ) from exc2
            return native

    def _busy(self, info: dict, exc: Exception) -> DeviceBusyError:
        return DeviceBusyError(
            f"device {info['index']} ({info['name']}) is busy or unavailable ({exc}); close the "
            "program using it or pick another with --device; " + _describe_devices(list_input_devices())
        )

    def _configure(self, device_rate: int) -> None:
        """Set up resampling from ``device_rate`` to ``sample_rate`` (no-op when equal)."""
        self.device_rate = int(device_rate)
        if self.device_rate != self.sample_rate:
            import soxr

            self._resampler = soxr.ResampleStream(
                self.device_rate, self.sample_rate, 1, dtype="float32", quality="HQ"
            )
        else:
            self._resampler = None

    # ---- stream lifecycle ------------------------------------------------------------
    def start(self) -> "MicrophoneStream":
        sd = _sounddevice()
        info = self._resolve_device(sd)
        self.device_name = info["name"]
        self._configure(self._choose_rate(sd, info))
        blocksize = self.blocksize or self.device_rate // 10
        try:
            self._stream = sd.InputStream(
                samplerate=self.device_rate,
                blocksize=blocksize,
                device=info["index"],
                channels=1,
                dtype="float32",
                latency=self.latency,
                callback=self._callback,
            )
            self._stream.start()
        except sd.PortAudioError as exc:
            self._stream = None
            if _is_busy(exc):
                raise self._busy(info, exc) from exc
            raise MicrophoneError(f"cannot open device {info['index']} ({info['name']}): {exc}") from exc
        return self

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            finally:
                self._stream = None

    def __enter__(self) -> "MicrophoneStream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- data path -------------------------------------------------------------------
    def _callback(self, indata, frames, time_info, status) -> None:
        """PortAudio thread: copy the block out, count overflows, never block or raise."""
        if status and getattr(status, "input_overflow", False):
            with self._lock:
                self.overflows += 1
        block = np.array(indata[:, 0] if indata.ndim == 2 else indata, dtype=np.float32)
        try:
            self._queue.put_nowait(block)
        except queue.Full:
            # Consumer fell behind: drop the oldest block so the newest audio gets through.
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            with self._lock:
                self.overflows += 1
                self.dropped_blocks += 1
            try:
                self._queue.put_nowait(block)
            except queue.Full:
                pass

    def read(self, timeout: float | None = None) -> np.ndarray:
        """Next block as float32 mono at ``sample_rate``; an empty array if ``timeout`` passes.

        With resampling, block lengths vary slightly around ``blocksize * rate ratio``.
        """
        try:
            block = self._queue.get(timeout=timeout)
        except queue.Empty:
            return np.zeros(0, dtype=np.float32)
        if self._resampler is not None:
            block = self._resampler.resample_chunk(block)
        self.level_db = level_db(block)
        return block

    @property
    def active(self) -> bool:
        return self._stream is not None and bool(self._stream.active)
