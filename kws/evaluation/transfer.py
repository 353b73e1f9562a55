"""How well the frozen exit embeddings learn words they were never trained on (issue 18).

Every enrolled word is learnt by a linear head on an exit's embedding, so the embedding caps
what any head rule can do. The benchmark takes clips of *new* words by *new* speakers, trains
on ``shots`` clips per word of one speaker and tests on every clip of those words by another
speaker, per exit:

- **linear probe**: multinomial logistic regression (scikit-learn, L2, ``C``) on
  ``sign(embedding)`` (sign(0) = +1, what a binary head sees): a ceiling for any head rule;
- **CWR\\***: the exit's exported head grown by one unit per new word and trained with
  :class:`bnnkws.kws.continual.cwr.CWRStar` on the same clips (the enrolment rule), scored two ways:
  the argmax among the new words only, and among all classes (old + new, so a new word lost to
  ``_unknown_`` counts as wrong).

Accuracies are averaged over every ordered (train speaker, test speaker) pair and ``draws``
random draws of the training clips (and of the word subset when fewer words than the corpus
has are asked for); the spread over pairs is reported too. numpy + scikit-learn only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

# ``sign(x)`` with sign(0) = +1, as the binary heads and Larq's ste_sign see it
from bnnkws.kws.models.head_math import sign as signed


def probe_accuracy(x_train, y_train, x_test, y_test, C: float = 1.0) -> float:
    """Top-1 accuracy of a logistic regression fitted on ``x_train`` (already signed)."""
    from sklearn.linear_model import LogisticRegression

    y_train = np.asarray(y_train)
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"a probe needs at least 2 words, got {np.unique(y_train).tolist()}")
    clf = LogisticRegression(C=C, max_iter=2000)
    clf.fit(np.asarray(x_train, np.float32), y_train)
    return float(np.mean(clf.predict(np.asarray(x_test, np.float32)) == np.asarray(y_test)))


def cwr_accuracy(w, b, x_train, y_train, x_test, y_test, *, past: int = 100, lr: float = 0.05,
                 epochs: int = 30, seed: int = 0) -> tuple[float, float]:
    """``(among new words, among all classes)`` accuracy after CWR* enrolment of the new words.

    ``w (D, C), b (C,)`` is the exit's linear head (``logits = x @ w + b``, ``x`` the head's
    input: signed embedding for binary heads); ``y`` are 0-based new-word indices. The old
    classes count ``past`` consolidated samples each, as an exported head does.
    """
    from bnnkws.kws.continual.cwr import CWRStar

    w = np.asarray(w, np.float32)
    old = w.shape[1]
    k = int(np.max(y_train)) + 1
    head = CWRStar(w, b, past=np.full(old, past), lr=lr, epochs=epochs, seed=seed)
    for _ in range(k):
        head.add_class()
    head.fit_batch(np.asarray(x_train, np.float32), np.asarray(y_train) + old)
    z = head.logits(np.asarray(x_test, np.float32))
    y = np.asarray(y_test)
    new = float(np.mean(np.argmax(z[:, old:], axis=1) == y))
    every = float(np.mean(np.argmax(z, axis=1) == y + old))
    return new, every


@dataclass
class Corpus:
    """Embeddings of one corpus of new words: per exit ``(n, D_k)``, with word/speaker ids."""

    name: str
    embeddings: list  # per exit (n, D_k) float32, raw (before the sign)
    words: np.ndarray  # (n,) str
    speakers: np.ndarray  # (n,) str
    exits: list = field(default_factory=list)  # 1-based exit numbers

    def __post_init__(self):
        self.words = np.asarray(self.words)
        self.speakers = np.asarray(self.speakers)
        n = len(self.words)
        if len(self.speakers) != n or any(len(e) != n for e in self.embeddings):
            raise ValueError(f"{self.name}: embeddings, words and speakers disagree in length")
        if not self.exits:
            self.exits = list(range(1, len(self.embeddings) + 1))


def speaker_pairs(corpus: Corpus, words: Sequence[str], min_clips: int):
    """Ordered (train, test) speaker pairs where both speakers have >= ``min_clips`` clips of
    every word in ``words`` (train side) and >= 1 (test side)."""
    ok_train, ok_test = [], []
    for s in sorted(set(corpus.speakers.tolist())):
        counts = [int(np.sum((corpus.speakers == s) & (corpus.words == w))) for w in words]
        if min(counts) >= min_clips:
            ok_train.append(s)
        if min(counts) >= 1:
            ok_test.append(s)
    return [(a, b) for a in ok_train for b in ok_test if a != b]


def _score(corpus: Corpus, per: dict, tr_idx, tr_y, te_idx, te_y, heads, C, cwr_past, seed):
    """Probe (and CWR*) accuracy of one train/test draw at every exit, appended to ``per``."""
    out = {}
    for i, k in enumerate(corpus.exits):
        e = corpus.embeddings[i]
        acc = probe_accuracy(signed(e[tr_idx]), tr_y, signed(e[te_idx]), te_y, C)
        per[k]["probe"].append(acc)
        out[k] = acc
        if heads is not None and k in heads:
            W, bias, sign_input = heads[k]
            f = signed if sign_input else (lambda v: np.asarray(v, np.float32))
            new, every = cwr_accuracy(W, bias, f(e[tr_idx]), tr_y, f(e[te_idx]), te_y,
                                      past=cwr_past, seed=seed)
            per[k]["cwr_new"].append(new)
            per[k]["cwr_all"].append(every)
    return out


def _subsets(vocab, num_words, draws, rng):
    if num_words > len(vocab):
        raise ValueError(f"{num_words} words asked, the corpus has {len(vocab)} "
                         f"({', '.join(vocab)})")
    if num_words == len(vocab):
        return [list(vocab)]
    return [sorted(rng.choice(vocab, num_words, replace=False).tolist()) for _ in range(draws)]


def run(corpus: Corpus, *, num_words: int, shots: int, draws: int = 5, seed: int = 0,
        heads: Optional[dict] = None, C: float = 1.0, cwr_past: int = 100,
        by_speaker: bool = True) -> dict:
    """One cell of the benchmark table: ``num_words`` new words, ``shots`` clips each.

    ``by_speaker``: train on ``shots`` clips of each word by *one* speaker, test on every clip
    of those words by another, over every ordered speaker pair (FSDD: 4 speakers x 50 clips per
    digit). ``by_speaker=False`` (corpora with one clip per speaker and word, such as the
    Speech Commands v0.01 sample): ``shots`` random clips per word train, the word's clips by
    every *other* speaker test. ``heads``: optional ``{exit: (W, b, sign_input)}`` of the
    exported heads, for the CWR* columns. Returns ``{"corpus", "words", "shots", "pairs",
    "draws", "exits": {k: {"probe", "probe_min", "probe_max"[, "cwr_new", "cwr_all"]}}}``;
    min/max are over speaker pairs (over draws when not by speaker).
    """
    vocab = sorted(set(corpus.words.tolist()))
    rng = np.random.default_rng(seed)
    try:
        subsets = _subsets(vocab, num_words, draws, rng)
    except ValueError as e:
        raise ValueError(f"{corpus.name}: {e}") from None
    per = {k: {"probe": [], "cwr_new": [], "cwr_all": []} for k in corpus.exits}
    groups = {k: {} for k in corpus.exits}  # accuracy per speaker pair (or per draw)
    if by_speaker and len(subsets) == 1:
        # When every speaker has exactly `shots` clips of each word, every draw is the same:
        # one is enough (FSDD's 50 clips per digit at 50 shots).
        counts = {int(np.sum((corpus.speakers == sp) & (corpus.words == w)))
                  for sp in set(corpus.speakers.tolist()) for w in subsets[0]}
        if counts <= {shots} or max(counts) <= shots:
            draws = 1
    for d in range(draws):
        words = subsets[d % len(subsets)]
        if by_speaker:
            plans = []
            for a, b in speaker_pairs(corpus, words, shots):
                tr_idx, tr_y = [], []
                for j, w in enumerate(words):
                    pool = np.flatnonzero((corpus.speakers == a) & (corpus.words == w))
                    tr_idx += rng.choice(pool, shots, replace=False).tolist()
                    tr_y += [j] * shots
                te_idx = np.flatnonzero((corpus.speakers == b) & np.isin(corpus.words, words))
                plans.append(((a, b), tr_idx, tr_y, te_idx))
        else:
            tr_idx, tr_y = [], []
            for j, w in enumerate(words):
                pool = np.flatnonzero(corpus.words == w)
                if len(pool) <= shots:
                    raise ValueError(f"{corpus.name}: word {w!r} has {len(pool)} clips; "
                                     f"{shots} to train leave none to test")
                tr_idx += rng.choice(pool, shots, replace=False).tolist()
                tr_y += [j] * shots
            seen = set(corpus.speakers[tr_idx].tolist())
            te_idx = np.flatnonzero(np.isin(corpus.words, words)
                                    & ~np.isin(corpus.speakers, list(seen)))
            plans = [(d, tr_idx, tr_y, te_idx)] if len(te_idx) else []
        for key, tr_idx, tr_y, te_idx in plans:
            te_y = np.searchsorted(np.array(words), corpus.words[te_idx])
            accs = _score(corpus, per, tr_idx, tr_y, te_idx, te_y, heads, C, cwr_past,
                          seed + d)
            for k, acc in accs.items():
                groups[k].setdefault(key, []).append(acc)
    if not groups[corpus.exits[0]]:
        raise ValueError(f"{corpus.name}: no train/test draw possible with {shots} clips of "
                         f"each of {num_words} words by one speaker and other speakers to test; "
                         f"use fewer shots")
    out = {"corpus": corpus.name, "words": num_words, "vocab": sorted(set(map(str, corpus.words))),
           "shots": shots, "pairs": len(groups[corpus.exits[0]]) if by_speaker else 0, "draws": draws,
           "by_speaker": bool(by_speaker), "exits": {}}
    for k in corpus.exits:
        gm = [float(np.mean(v)) for v in groups[k].values()]
        row = {"probe": float(np.mean(per[k]["probe"])), "probe_min": min(gm),
               "probe_max": max(gm)}
        if per[k]["cwr_new"]:
            row["cwr_new"] = float(np.mean(per[k]["cwr_new"]))
            row["cwr_all"] = float(np.mean(per[k]["cwr_all"]))
        out["exits"][int(k)] = row
    return out


def table_markdown(results: Sequence[dict]) -> str:
    """One row per cell, one column per exit: ``probe % (CWR* new / all %)``."""
    if not results:
        return ""
    exits = sorted(results[0]["exits"])
    head = "| corpus | words | clips/word | pairs | " + " | ".join(f"exit {k}" for k in exits) \
        + " | best |"
    lines = [head, "|" + "---|" * (5 + len(exits))]
    for r in results:
        cells = []
        for k in exits:
            e = r["exits"][k]
            c = f"{100 * e['probe']:.1f}"
            if "cwr_new" in e:
                c += f" ({100 * e['cwr_new']:.0f}/{100 * e['cwr_all']:.0f})"
            cells.append(c)
        best = max(exits, key=lambda k: r["exits"][k]["probe"])
        lines.append(f"| {r['corpus']} | {r['words']} | {r['shots']} | {r['pairs'] or '-'} | "
                     + " | ".join(cells) + f" | {100 * r['exits'][best]['probe']:.1f} "
                     f"(exit {best}) |")
    return "\n".join(lines) + "\n"


__all__ = ["Corpus", "run", "probe_accuracy", "cwr_accuracy", "signed", "speaker_pairs",
           "table_markdown"]
