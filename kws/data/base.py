"""Clips, datasets and the file check every reader shares (no TensorFlow, no numpy)."""
from __future__ import annotations

import collections
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "validation", "testing")
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
BACKGROUND = "_background_noise_"
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus")

# Speech Commands names clips `<speaker>_nohash_<n>.wav`; the prepared test set prefixes the
# original word for `_unknown_` clips (`<word>_<speaker>_nohash_<n>.wav.wav`).
_NOHASH = re.compile(r"^(?:(?P<word>[^_]+)_)?(?P<speaker>[^_]+)_nohash_\d+")


@dataclass(frozen=True)
class Clip:
    """One labelled recording.

    ``path`` is the audio file. ``source`` is what the clip was before label mapping: the
    original word (``"backward"`` for a clip relabelled ``_unknown_``), or ``_silence_``.
    ``speaker`` is ``None`` where the clip has no speaker (silence cut from noise).
    ``start``/``gain`` only matter for silence cut from a long noise file: the clip is
    ``gain * audio[start : start + clip_samples]`` (``start`` in samples at the frontend rate).
    """

    path: str
    label: str
    speaker: str | None
    split: str
    source: str
    start: int = 0
    gain: float = 1.0

    @property
    def is_segment(self) -> bool:
        """True for a window cut out of a longer noise file (generated silence)."""
        return self.source == BACKGROUND


class ClipList(list):
    """A list of clips that remembers the dataset's label order and noise files.

    It is a plain ``list`` for every other purpose, so code written against ``list[Clip]``
    keeps working; :mod:`bnnkws.kws.features.pipeline` reads ``labels`` and ``noise_paths`` from it.
    """

    def __init__(self, clips=(), labels=(), noise_paths=()):
        super().__init__(clips)
        self.labels = list(labels)
        self.noise_paths = list(noise_paths)

    def __getitem__(self, item):
        got = super().__getitem__(item)
        return ClipList(got, self.labels, self.noise_paths) if isinstance(item, slice) else got

    def __add__(self, other):
        return ClipList(list(self) + list(other), self.labels, self.noise_paths)


@dataclass
class Dataset:
    """Clips with their split, the ordered label list and the background noise files."""

    clips: list[Clip]
    labels: list[str]
    noise_paths: list[str] = field(default_factory=list)
    name: str = ""
    kind: str = ""  # "speech_commands" | "sc_test" | "fsdd" | "folder"
    root: str = ""
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, what is wrong)
    notes: list[str] = field(default_factory=list)  # how the split was made, what was ignored

    def split(self, name: str) -> ClipList:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return ClipList([c for c in self.clips if c.split == name], self.labels, self.noise_paths)

    @property
    def train(self) -> ClipList:
        return self.split("train")

    @property
    def validation(self) -> ClipList:
        return self.split("validation")

    @property
    def testing(self) -> ClipList:
        return self.split("testing")

    def label_index(self, label: str) -> int:
        return self.labels.index(label)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{split: {label: clips}}`` for every split and label (zeros included)."""
        out = {s: {lab: 0 for lab in self.labels} for s in SPLITS}
        for c in self.clips:
            out[c.split][c.label] += 1
        return out

    def speakers(self, split: str | None = None) -> set[str]:
        return {c.speaker for c in self.clips
                if c.speaker is not None and (split is None or c.split == split)}

    def speaker_overlap(self) -> dict[str, set[str]]:
        """Speakers found in more than one split (empty when the split is speaker-disjoint)."""
        where = collections.defaultdict(set)
        for c in self.clips:
            if c.speaker is not None:
                where[c.speaker].add(c.split)
        return {spk: s for spk, s in where.items() if len(s) > 1}

    def drop(self, bad_paths) -> "Dataset":
        """A copy without the clips whose path is in ``bad_paths``."""
        bad = set(map(str, bad_paths))
        return Dataset([c for c in self.clips if c.path not in bad], self.labels,
                       self.noise_paths, self.name, self.kind, self.root,
                       list(self.problems), list(self.notes))

    def __len__(self) -> int:
        return len(self.clips)


def speaker_from_name(path: str | os.PathLike) -> str | None:
    """Speaker id from a Speech Commands style name, else ``None``."""
    m = _NOHASH.match(Path(path).name)
    return m.group("speaker") if m else None


def word_from_name(path: str | os.PathLike) -> str | None:
    """The word prefix of a prepared-test ``_unknown_`` name (``bed_<speaker>_nohash_0``)."""
    m = _NOHASH.match(Path(path).name)
    return m.group("word") if m else None


def is_audio(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith(AUDIO_EXTENSIONS)


def list_audio(folder: Path) -> list[Path]:
    """Audio files directly in ``folder``, sorted (``x.wav.wav`` counts as audio)."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    except OSError as exc:  # e.g. no permission: skip the folder, say so, keep going
        import warnings

        warnings.warn(f"{folder}: cannot list ({exc.strerror or exc}); skipped", stacklevel=2)
        return []
    return sorted(Path(e.path) for e in entries
                  if e.is_file() and not e.name.startswith(".")
                  and e.name.lower().endswith(AUDIO_EXTENSIONS))


def check_file(path: str | os.PathLike) -> str | None:
    """What is wrong with an audio file (empty, wrong header, truncated, undecodable, ...), or
    ``None``. Decodes it with the frontend's ``load_audio``, the reader training uses."""
    from bnnkws.frontend.audio import AudioError, load_audio

    try:
        load_audio(path, sr=16000)
    except AudioError as exc:
        return exc.problem
    except Exception as exc:  # anything else libsndfile throws still only skips this file
        return f"unreadable ({_short(exc)})"
    return None


def _short(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg[:160]
