"""Forced alignment and small-vocabulary recognition with PocketSphinx (offline, en-us).

PocketSphinx 5 (PyPI ``pocketsphinx``) ships its US-English acoustic model and CMUdict in the
wheel. :class:`Aligner` finds where each word of a known transcript is in a recording
(``Decoder.set_align_text`` then ``seg()``); :class:`Recogniser` says which of a fixed
vocabulary one clip holds (a one-word finite-state grammar), the check of cut words that does
not rely on their alignment. Words missing from CMUdict are added from a corpus lexicon (CMU
phones, see :func:`bnnkws.kws.data.transcripts.cmu_phones`). Audio is float32 mono at 16 kHz.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
FRAME_RATE = 100  # PocketSphinx frames per second (10 ms)
INSTALL_HINT = "pip install 'bnn-kws[words]' (or pip install 'pocketsphinx>=5,<6')"
FILLERS = {"<s>", "</s>", "<sil>", "(NULL)", "[NOISE]", "+SPN+", "+NSN+"}


class AlignerUnavailable(ValueError):
    """PocketSphinx is not installed (or is not version 5); the message says how to get it."""


def _pocketsphinx():
    try:
        import pocketsphinx
    except ImportError as exc:
        raise AlignerUnavailable(f"forced alignment needs pocketsphinx, which is not "
                                 f"installed: {INSTALL_HINT}") from exc
    if not hasattr(pocketsphinx.Decoder, "set_align_text"):
        raise AlignerUnavailable(f"pocketsphinx {getattr(pocketsphinx, '__version__', '?')} "
                                 f"has no forced alignment; {INSTALL_HINT}")
    return pocketsphinx


def version() -> str:
    """The installed PocketSphinx version (raises :class:`AlignerUnavailable`)."""
    from importlib.metadata import version as v

    _pocketsphinx()
    return v("pocketsphinx")


def pcm16(audio: np.ndarray) -> bytes:
    """float32 samples in [-1, 1] as the little-endian int16 bytes PocketSphinx reads."""
    return (np.clip(np.asarray(audio, np.float32), -1.0, 1.0) * 32767).astype("<i2").tobytes()


@dataclass(frozen=True)
class Segment:
    """One aligned word: ``start``/``end`` in seconds (end exclusive)."""

    word: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


class _Base:
    def __init__(self, lexicon: dict[str, list[str]] | None = None, **config):
        ps = _pocketsphinx()
        config.setdefault("loglevel", "FATAL")
        self.decoder = ps.Decoder(**config)
        self.added: dict[str, str] = {}
        new = [(w, prons[0]) for w, prons in sorted((lexicon or {}).items())
               if prons and self.decoder.lookup_word(w) is None]
        for i, (word, pron) in enumerate(new):
            self.decoder.add_word(word, pron, update=i == len(new) - 1)
            self.added[word] = pron

    def knows(self, word: str) -> bool:
        """Whether ``word`` has a pronunciation (CMUdict or the lexicon given)."""
        return self.decoder.lookup_word(word) is not None

    def phones(self, word: str) -> list[str]:
        """The phones of ``word``'s first pronunciation ([] when unknown)."""
        return (self.decoder.lookup_word(word) or "").split()

    def _decode(self, audio: np.ndarray) -> None:
        d = self.decoder
        # a fresh feature extractor: the cepstral mean otherwise carries over from the last
        # utterance, and results would depend on which utterances a worker saw before
        d.reinit_feat()
        d.start_utt()
        d.process_raw(pcm16(audio), no_search=False, full_utt=True)
        d.end_utt()


class Aligner(_Base):
    """Word-level forced alignment of a transcript with PocketSphinx's en-us model."""

    def __init__(self, lexicon: dict[str, list[str]] | None = None):
        super().__init__(lexicon, lm=None)

    def align(self, audio: np.ndarray, words) -> list[Segment] | None:
        """Where each of ``words`` (all known, see :meth:`knows`) is in ``audio``; None when
        the decoder finds no alignment (the recording does not fit the transcript)."""
        words = list(words)
        if not words:
            return []
        try:
            self.decoder.set_align_text(" ".join(words))
            self._decode(audio)
        except RuntimeError:
            return None
        found = self.decoder.seg()  # None when no path through the transcript was found
        if found is None:
            return None
        segs = [Segment(s.word, s.start_frame / FRAME_RATE, (s.end_frame + 1) / FRAME_RATE)
                for s in found if s.word not in FILLERS]
        # alternates come back as ``word(2)``
        segs = [Segment(s.word.split("(")[0], s.start, s.end) for s in segs]
        if [s.word for s in segs] != words:
            return None
        return segs


class Recogniser(_Base):
    """Which one word of ``vocabulary`` a clip holds (silence allowed around it)."""

    def __init__(self, vocabulary, lexicon: dict[str, list[str]] | None = None):
        super().__init__(lexicon, lm=None)
        self.vocabulary = sorted({w for w in vocabulary if self.knows(w)})
        if not self.vocabulary:
            raise ValueError("Recogniser: no word of the vocabulary has a pronunciation")
        p = 1.0 / len(self.vocabulary)
        fsg = self.decoder.create_fsg("words", 0, 1, [(0, 1, p, w) for w in self.vocabulary])
        self.decoder.add_fsg("words", fsg)
        self.decoder.activate_search("words")

    def recognise(self, audio: np.ndarray) -> str | None:
        """The vocabulary word heard in ``audio`` (None when the decoder finds none)."""
        self._decode(audio)
        hyp = self.decoder.hyp()
        if hyp is None or not hyp.hypstr.strip():
            return None
        return hyp.hypstr.split()[0].split("(")[0]
