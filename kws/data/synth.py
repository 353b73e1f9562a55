"""Synthetic keyword datasets from espeak-ng and flite: bootstrap a word no dataset has.

Each clip is one word spoken by one synthetic *speaker* at a random rate and pitch, resampled
to 16 kHz, trimmed, placed at a random position in one second at a random level, with a little
white or pink noise. Output is folder per class with Speech Commands style names,
``<word>/<speaker>_nohash_<n>.wav``, so the folder reader splits it by speaker (a voice never
appears in two splits).

Speakers of the two engines:

* ``espeak-ng`` (formant synthesis): an English voice with a voice variant (``en-us+m3``);
* ``flite`` (CMU Flite; ``kal16`` is a diphone voice, ``awb``, ``rms`` and ``slt`` are
  clustergen voices built from recordings of three CMU ARCTIC speakers) with a vocal-tract
  factor ``a`` in 0.88-1.12: the waveform is resampled as if recorded at ``a * sr``, which scales
  every formant (and the pitch) by ``a`` and the duration by ``1 / a``, the way vocal-tract
  length differs between people. Rate ``r`` words per minute maps to Flite's
  ``duration_stretch = 170 / r`` and pitch ``p`` (0-99, espeak-ng's scale) to
  ``int_f0_target_mean = 80 + 1.8 p`` Hz.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bnnkws.kws.fileio import atomic_path

INSTALL_HINT = "install it with `sudo apt-get install espeak-ng` (Debian/Ubuntu)"
FLITE_HINT = "install it with `sudo apt-get install flite` (Debian/Ubuntu)"
ENGINES = ("espeak-ng", "flite")
# Flite's English voices that read any text at 16 kHz (``kal`` is kal16 at 8 kHz, ``awb_time``
# only tells the time).
_FLITE_VOICES = ("kal16", "awb", "rms", "slt")
_FLITE_TRACTS = {"vt088": 0.88, "vt094": 0.94, "vt100": 1.0, "vt106": 1.06, "vt112": 1.12}
# eSpeak's own English voices; mbrola voices (mb/...) need extra packages that may be missing.
_FALLBACK_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029"]
_FALLBACK_VARIANTS = ["m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4", "klatt", "klatt2"]
# Variants that do not sound like a person speaking (robots, monsters, croaks).
_ODD_VARIANT = re.compile(r"robo|robot|demonic|croak|tweaky|whisper", re.IGNORECASE)


class SynthError(RuntimeError):
    """A synthesizer is missing or failed; the message says what to do."""


@dataclass(frozen=True)
class Utterance:
    word: str
    voice: str
    variant: str
    rate: int  # words per minute
    pitch: int  # 0..99
    level_db: float  # peak level, dBFS
    noise_db: float  # noise RMS, dBFS
    noise_kind: str
    position: float  # 0..1: where in the free space of the second the word starts
    seed: int
    engine: str = "espeak-ng"

    @property
    def speaker(self) -> str:
        name = f"{self.voice}-{self.variant}"
        if self.engine != "espeak-ng":
            name = f"{self.engine}-{name}"
        return re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-").lower()


def espeak_binary() -> str:
    exe = shutil.which("espeak-ng")
    if not exe:
        raise SynthError(f"espeak-ng was not found on PATH; {INSTALL_HINT}")
    return exe


def flite_binary() -> str:
    exe = shutil.which("flite")
    if not exe:
        raise SynthError(f"flite was not found on PATH; {FLITE_HINT}")
    return exe


def _binary(engine: str) -> str:
    """The synthesizer's executable; a clear error when it is unknown or not installed."""
    find = {"espeak-ng": espeak_binary, "flite": flite_binary}.get(engine)
    if find is None:
        raise ValueError(f"unknown synthesizer {engine!r}; choose from {', '.join(ENGINES)}")
    return find()


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, timeout=60)


def list_voices() -> list[str]:
    """English eSpeak voices (language codes such as ``en-gb-scotland``)."""
    out = _run([espeak_binary(), "--voices=en"]).stdout.decode(errors="replace")
    voices = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5 and parts[4].startswith("gmw/") and parts[1] not in voices:
            voices.append(parts[1])
    return voices or list(_FALLBACK_VOICES)


def list_variants() -> list[str]:
    """Voice variants (``m3``, ``f2``, ``klatt``, ...), without the non-human ones."""
    out = _run([espeak_binary(), "--voices=variant"]).stdout.decode(errors="replace")
    found = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5 and parts[4].startswith("!v/"):
            name = parts[4][3:]
            if not _ODD_VARIANT.search(name):
                found.append(name)
    return found or list(_FALLBACK_VARIANTS)


def list_flite_voices() -> list[str]:
    """Flite's English voices that read any text at 16 kHz (of those ``flite -lv`` lists)."""
    out = _run([flite_binary(), "-lv"]).stdout.decode(errors="replace")
    listed = out.split(":", 1)[-1].split()
    return [v for v in _FLITE_VOICES if v in listed] or list(_FLITE_VOICES)


def _engine_pairs(engine: str, voices, variants) -> list[tuple[str, str, str]]:
    _binary(engine)
    if engine == "flite":
        voices, variants = list_flite_voices(), list(_FLITE_TRACTS)
    else:
        voices, variants = voices or list_voices(), variants or list_variants()
    return [(engine, v, w) for v in voices for w in variants]


def plan(words, per_word: int = 50, seed: int = 0, speakers: int | None = None,
         voices=None, variants=None, engines=("espeak-ng",)) -> list[Utterance]:
    """The clips to make, deterministic for ``seed``.

    A pool of ``speakers`` synthetic speakers (default ``max(12, per_word // 2)``), shared
    equally between ``engines``, says all words, so each speaker has several clips and a
    speaker split keeps every word on each side. ``voices``/``variants`` choose espeak-ng's.
    """
    engines = list(dict.fromkeys(engines))
    if not engines:
        raise ValueError(f"no synthesizer given; choose from {', '.join(ENGINES)}")
    rng = np.random.default_rng(seed)
    n_spk = speakers or max(12, per_word // 2)
    pool = []
    for i, engine in enumerate(engines):
        pairs = _engine_pairs(engine, voices, variants)
        share = n_spk // len(engines) + (i < n_spk % len(engines))
        pool += [pairs[j] for j in rng.choice(len(pairs), min(len(pairs), share), replace=False)]
    n_spk = len(pool)
    out = []
    for word in words:
        # Speakers take turns (in a fresh order per word), so every speaker says every word
        # about equally often and a speaker split keeps the classes balanced.
        turn = rng.permutation(n_spk)
        for j in range(per_word):
            engine, voice, variant = pool[int(turn[j % n_spk])]
            out.append(Utterance(
                word=word, voice=voice, variant=variant, engine=engine,
                rate=int(rng.integers(110, 211)), pitch=int(rng.integers(15, 86)),
                level_db=float(rng.uniform(-20, -1)), noise_db=float(rng.uniform(-70, -45)),
                noise_kind="pink" if rng.random() < 0.5 else "white",
                position=float(rng.random()), seed=int(rng.integers(2**31 - 1))))
    return out


def render(u: Utterance, sample_rate: int = 16000, clip_samples: int = 16000) -> np.ndarray:
    """One clip as float32 ``(clip_samples,)``."""
    import io

    import soundfile as sf

    from bnnkws.frontend.audio import resample

    from bnnkws.kws.features.cache import generated_noise

    rate = u.rate
    for _ in range(4):  # slow voices can run past one second: speak faster until it fits
        if u.engine == "flite":
            y, sr = _flite(u, rate)
            # read as if recorded at a * sr: formants and pitch x a, duration / a
            sr = int(round(sr * _FLITE_TRACTS[u.variant]))
        else:
            proc = _run([espeak_binary(), "-v", f"{u.voice}+{u.variant}", "-s", str(rate),
                         "-p", str(u.pitch), "--stdout", u.word])
            if proc.returncode != 0 or len(proc.stdout) < 100:
                raise SynthError(f"espeak-ng failed for {u.word!r} with voice {u.voice}+"
                                 f"{u.variant}: {proc.stderr.decode(errors='replace')[:200]}")
            y, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
        y = resample(y, int(sr), sample_rate)
        y = _trim(y)
        if len(y) <= 0.95 * clip_samples:
            break
        rate = int(rate * 1.25)
    y = y[:clip_samples]
    rng = np.random.default_rng(u.seed)
    peak = float(np.max(np.abs(y))) or 1.0
    y = y * (10 ** (u.level_db / 20) / peak)
    out = generated_noise(u.noise_kind, clip_samples, rng) * np.float32(10 ** (u.noise_db / 20))
    start = int(u.position * (clip_samples - len(y)))
    out[start:start + len(y)] += y
    return out.astype(np.float32)


def _flite(u: Utterance, rate: int) -> tuple[np.ndarray, int]:
    """Flite's waveform of ``u.word`` at ``rate`` words per minute (see module docstring)."""
    import tempfile

    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "word.wav"
        proc = _run([flite_binary(), "-voice", u.voice,
                     "--setf", f"duration_stretch={170.0 / rate:.3f}",
                     "--setf", f"int_f0_target_mean={80 + 1.8 * u.pitch:.1f}",
                     "-t", u.word, "-o", str(wav)])
        if proc.returncode != 0 or not wav.exists() or wav.stat().st_size < 100:
            raise SynthError(f"flite failed for {u.word!r} with voice {u.voice}: "
                             f"{proc.stderr.decode(errors='replace')[:200]}")
        y, sr = sf.read(str(wav), dtype="float32")
    return y, int(sr)


def _trim(y: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Cut espeak's leading and trailing silence (samples below ``threshold`` of the peak)."""
    if not len(y):
        return y
    loud = np.flatnonzero(np.abs(y) > threshold * np.max(np.abs(y)))
    if not len(loud):
        return y
    pad = 160  # keep 10 ms around the word so onsets are not clipped
    return y[max(loud[0] - pad, 0):loud[-1] + pad]


def takes(word: str, n: int, seed: int = 0, engines=ENGINES, sample_rate: int = 16000,
          jobs: int = 2) -> tuple[np.ndarray, list[str]]:
    """``n`` one-second takes of ``word`` in memory, each by a different synthetic speaker
    where the engines have enough: ``(clips (n, sample_rate) float32, speaker names)``.

    For enrolment (`kws enroll --synth`): typed-word takes as extra positives in voices the
    user's own takes do not have.
    """
    if n < 1:
        raise ValueError(f"the number of synthetic takes must be at least 1, got {n}")
    utts = plan([word], per_word=n, seed=seed, speakers=n, engines=engines)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        clips = list(pool.map(lambda u: render(u, sample_rate, sample_rate), utts))
    return np.stack(clips).astype(np.float32), [u.speaker for u in utts]


def folder_name(word: str) -> str:
    name = re.sub(r"\s+", "_", word.strip().lower())
    if not name or name.startswith(("_", ".")) or "/" in name or "\\" in name:
        raise ValueError(f"cannot use {word!r} as a class folder name")
    return name


def synthesize(words, out, per_word: int = 50, seed: int = 0, speakers: int | None = None,
               jobs: int = 2, progress: bool = True, sample_rate: int = 16000,
               engines=("espeak-ng",)) -> dict:
    """Write ``out/<word>/<speaker>_nohash_<n>.wav`` (16-bit, ``sample_rate``) for each word.

    Returns ``{word: clips written}``. Re-running with the same arguments rewrites the same
    files. Each file is written to a temporary name and renamed, so an interrupted run leaves
    only complete clips.
    """
    import soundfile as sf
    from tqdm.auto import tqdm

    words = [w.strip() for w in words if w and w.strip()]
    if not words:
        raise ValueError("no words given")
    if per_word < 1:
        raise ValueError(f"per_word must be at least 1, got {per_word}")
    engines = list(dict.fromkeys(engines))
    for engine in engines:
        _binary(engine)
    out = Path(out)
    names = {w: folder_name(w) for w in words}
    utts = plan(words, per_word, seed, speakers, engines=engines)
    counters: dict[tuple[str, str], int] = {}
    targets = []
    for u in utts:
        k = counters.get((u.word, u.speaker), 0)
        counters[(u.word, u.speaker)] = k + 1
        targets.append(out / names[u.word] / f"{u.speaker}_nohash_{k}.wav")
    for w in words:
        (out / names[w]).mkdir(parents=True, exist_ok=True)

    def make(i: int) -> None:
        y = render(utts[i], sample_rate, sample_rate)
        dest = targets[i]
        with atomic_path(dest, suffix=".wav") as tmp:
            sf.write(tmp, y, sample_rate, subtype="PCM_16")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, \
            tqdm(total=len(utts), desc="synthesizing", unit="clip",
                 disable=not progress or None) as bar:
        for _ in pool.map(make, range(len(utts))):
            bar.update(1)
    manifest = {"words": words, "per_word": per_word, "seed": seed, "engines": engines,
                "speakers": sorted({u.speaker for u in utts}), "sample_rate": sample_rate,
                "clips": [dict(asdict(u), file=str(t.relative_to(out)))
                          for u, t in zip(utts, targets)]}
    (out / "synth.json").write_text(json.dumps(manifest, indent=1))
    counts: dict[str, int] = {}
    for u in utts:
        counts[u.word] = counts.get(u.word, 0) + 1
    return counts
