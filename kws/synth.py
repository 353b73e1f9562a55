"""Synthetic keyword datasets from espeak-ng: bootstrap a word no dataset has.

Each clip is one word spoken by one espeak-ng *speaker* (an English voice with a voice
variant), at a random rate and pitch, resampled to 16 kHz, trimmed, placed at a random position
in one second at a random level, with a little white or pink noise. Output is folder per class
with Speech Commands style names, ``<word>/<speaker>_nohash_<n>.wav``, so the folder reader
splits it by speaker (a voice never appears in two splits).
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
# eSpeak's own English voices; mbrola voices (mb/...) need extra packages that may be missing.
_FALLBACK_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029"]
_FALLBACK_VARIANTS = ["m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4", "klatt", "klatt2"]
# Variants that do not sound like a person speaking (robots, monsters, croaks).
_ODD_VARIANT = re.compile(r"robo|robot|demonic|croak|tweaky|whisper", re.IGNORECASE)


class SynthError(RuntimeError):
    """espeak-ng is missing or failed; the message says what to do."""


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

    @property
    def speaker(self) -> str:
        return re.sub(r"[^A-Za-z0-9-]+", "-", f"{self.voice}-{self.variant}").strip("-").lower()


def espeak_binary() -> str:
    exe = shutil.which("espeak-ng")
    if not exe:
        raise SynthError(f"espeak-ng was not found on PATH; {INSTALL_HINT}")
    return exe


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


def plan(words, per_word: int = 50, seed: int = 0, speakers: int | None = None,
         voices=None, variants=None) -> list[Utterance]:
    """The clips to make, deterministic for ``seed``.

    A pool of ``speakers`` voice+variant pairs (default ``max(12, per_word // 2)``) says all
    words, so each speaker has several clips and a speaker split keeps every word on each side.
    """
    voices = voices or list_voices()
    variants = variants or list_variants()
    rng = np.random.default_rng(seed)
    pairs = [(v, w) for v in voices for w in variants]
    n_spk = min(len(pairs), speakers or max(12, per_word // 2))
    pool = [pairs[i] for i in rng.choice(len(pairs), n_spk, replace=False)]
    out = []
    for word in words:
        # Speakers take turns (in a fresh order per word), so every speaker says every word
        # about equally often and a speaker split keeps the classes balanced.
        turn = rng.permutation(n_spk)
        for j in range(per_word):
            voice, variant = pool[int(turn[j % n_spk])]
            out.append(Utterance(
                word=word, voice=voice, variant=variant,
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

    from .features import generated_noise

    rate = u.rate
    for _ in range(4):  # slow voices can run past one second: speak faster until it fits
        proc = _run([espeak_binary(), "-v", f"{u.voice}+{u.variant}", "-s", str(rate),
                     "-p", str(u.pitch), "--stdout", u.word])
        if proc.returncode != 0 or len(proc.stdout) < 100:
            raise SynthError(f"espeak-ng failed for {u.word!r} with voice "
                             f"{u.voice}+{u.variant}: {proc.stderr.decode(errors='replace')[:200]}")
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


def _trim(y: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Cut espeak's leading and trailing silence (samples below ``threshold`` of the peak)."""
    if not len(y):
        return y
    loud = np.flatnonzero(np.abs(y) > threshold * np.max(np.abs(y)))
    if not len(loud):
        return y
    pad = 160  # keep 10 ms around the word so onsets are not clipped
    return y[max(loud[0] - pad, 0):loud[-1] + pad]


def folder_name(word: str) -> str:
    name = re.sub(r"\s+", "_", word.strip().lower())
    if not name or name.startswith(("_", ".")) or "/" in name or "\\" in name:
        raise ValueError(f"cannot use {word!r} as a class folder name")
    return name


def synthesize(words, out, per_word: int = 50, seed: int = 0, speakers: int | None = None,
               jobs: int = 2, progress: bool = True, sample_rate: int = 16000) -> dict:
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
    espeak_binary()
    out = Path(out)
    names = {w: folder_name(w) for w in words}
    utts = plan(words, per_word, seed, speakers)
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
    manifest = {"words": words, "per_word": per_word, "seed": seed,
                "speakers": sorted({u.speaker for u in utts}), "sample_rate": sample_rate,
                "clips": [dict(asdict(u), file=str(t.relative_to(out)))
                          for u, t in zip(utts, targets)]}
    (out / "synth.json").write_text(json.dumps(manifest, indent=1))
    counts: dict[str, int] = {}
    for u in utts:
        counts[u.word] = counts.get(u.word, 0) + 1
    return counts
