#!/usr/bin/env python
"""Check of a word corpus cut by ``kws data words`` that does not trust the alignment (issue #37).

The cuts were placed by PocketSphinx's forced aligner, which is told which words are there. This
script samples ``--clips`` cut words at random and asks PocketSphinx's *recogniser* which word
each clip holds, with nothing but a one-word grammar over a closed vocabulary:

* ``all``: every word of the cut corpus (thousands: the hard test);
* ``frequent``: the words with at least ``--min-clips`` clips (those a model would train on),
  scored on the sampled clips of those words;
* a control: for each sampled clip, a window of the same recording moved off the word by the
  word's length plus 0.1 s (a cut that missed), scored against the same label: how often the
  recogniser "agrees" with a wrong cut;
* optionally ``--reference DIR`` (one folder per word, e.g. Speech Commands): clips cut by
  hand whose words are in the vocabulary, the recogniser's own accuracy on good cuts.

It prints the rates, writes every answer to ``--json``, and draws ``--sheet``: log-mel
spectrograms of 20 sampled clips with their word, speaker and the recogniser's answer.

    .venv/bin/python benchmarks/words_check.py /work/words/so762 --clips 200 \\
        --reference ../shared/data/speech_commands_v2_test --sheet docs/so762_words.png \\
        --json /tmp/so762_check.json
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np


def _records(out: Path) -> dict[str, dict]:
    from bnnkws.kws.data.words import STATE

    recs = {}
    for p in (out / STATE / "done").glob("*/*.json"):
        rec = json.loads(p.read_text())
        recs[rec["id"]] = rec
    return recs


def _clips(out: Path) -> list[dict]:
    """Every clip of the corpus with its source utterance and aligned times."""
    from bnnkws.kws.data.mswc import language_folder

    lang = language_folder(out)
    if lang is None:
        raise SystemExit(f"{out}: no word corpus (<lang>/clips/, <lang>/<lang>_splits.csv)")
    rows = []
    for utt, rec in sorted(_records(out).items()):
        for s, link, word, spk, gender, start, end in rec["rows"]:
            rows.append({"utt": utt, "path": str(lang / "clips" / link), "word": word,
                         "speaker": spk, "set": s, "start": start, "end": end})
    return rows


def _shifted(audio: np.ndarray, start: float, end: float, cfg) -> np.ndarray:
    """The word's window moved off it by its length + 0.1 s (forwards, else backwards)."""
    from bnnkws.kws.data.words import cut_clip

    shift = (end - start) + 0.1
    total = len(audio) / 16000
    if end + shift > total:
        shift = -shift
    s, e = max(0.0, start + shift), min(total, end + shift)
    return cut_clip(audio, s, e, cfg)


def _reference(folder: Path, vocabulary: set, per_word: int) -> list[tuple[str, str]]:
    out = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        if d.name in vocabulary:
            out += [(d.name, str(f)) for f in sorted(d.glob("*.wav"))[:per_word]]
    return out


def draw_sheet(picked: list[dict], path: Path, title: str) -> None:
    """Log-mel spectrograms of ``picked`` clips (dicts with path, word, speaker, set, got)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bnnkws.frontend.audio import load_audio
    from bnnkws.frontend.reference import log_mel
    from bnnkws.kws import fileio

    cols = 5
    rows = -(-len(picked) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.1 * rows), squeeze=False)
    for ax, c in zip(axes.ravel(), picked):
        m = log_mel(load_audio(c["path"], sr=16000, length=16000))
        # nearest: the log-mel's own cells, which keeps the PNG small
        ax.imshow(m.T, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                  extent=(0, 1, 0, m.shape[1]))
        mark = "=" if c["got"] == c["word"] else "≠"
        ax.set_title(f"{c['word']}  ({c['speaker']}, {c['set']})\nheard {mark} {c['got']}",
                     fontsize=8)
        ax.set_xticks([0, 0.5, 1])
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(picked):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.supxlabel("time (s)", fontsize=8)
    fig.supylabel("mel band", fontsize=8)
    fig.tight_layout()
    fileio.atomic_savefig(fig, path, dpi=90)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("corpus", type=Path, help="the --out folder of `kws data words`")
    p.add_argument("--clips", type=int, default=200, help="cut words to sample")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.add_argument("--min-clips", type=int, default=20,
                   help="words with at least this many clips form the `frequent` vocabulary")
    p.add_argument("--reference", type=Path, default=None,
                   help="folder of one sub-folder per word (e.g. Speech Commands): its clips of "
                        "vocabulary words score the recogniser on cuts made by hand")
    p.add_argument("--reference-per-word", type=int, default=10,
                   help="reference clips per word")
    p.add_argument("--sheet", type=Path, default=None,
                   help="PNG of 20 sampled clips' log-mel spectrograms with the answers")
    p.add_argument("--json", type=Path, default=None, help="write every answer here")
    args = p.parse_args(argv)

    from bnnkws.frontend.audio import load_audio
    from bnnkws.kws.data.align import Recogniser
    from bnnkws.kws.data.transcripts import load_corpus
    from bnnkws.kws.data.words import SUMMARY, CutConfig

    t0 = time.perf_counter()
    summary = json.loads((args.corpus / SUMMARY).read_text())
    corpus = load_corpus(f"{summary['kind']}:{summary['corpus']}")
    utts = {u.id: u for u in corpus.utterances}
    cfg = CutConfig(**summary["settings"])
    clips = _clips(args.corpus)
    counts = collections.Counter(c["word"] for c in clips)
    frequent = {w for w, n in counts.items() if n >= args.min_clips}
    rng = np.random.default_rng(args.seed)
    sample = [clips[i] for i in rng.choice(len(clips), min(args.clips, len(clips)),
                                           replace=False)]
    rec_all = Recogniser(counts, corpus.lexicon)
    rec_freq = Recogniser(frequent, corpus.lexicon)
    for c in sample:
        audio = load_audio(c["path"], sr=16000, length=16000)
        c["got"] = rec_all.recognise(audio)
        if c["word"] in frequent:
            c["got_frequent"] = rec_freq.recognise(audio)
        source = load_audio(utts[c["utt"]].path, sr=16000)
        moved = _shifted(source, c["start"], c["end"], cfg)
        c["moved_got"] = rec_all.recognise(moved)
    n = len(sample)
    freq_sample = [c for c in sample if "got_frequent" in c]
    result = {
        "corpus": str(args.corpus), "clips_in_corpus": len(clips), "sampled": n,
        "seed": args.seed, "vocabulary": len(rec_all.vocabulary),
        "frequent_vocabulary": len(rec_freq.vocabulary),
        "correct_all": sum(c["got"] == c["word"] for c in sample),
        "frequent_sampled": len(freq_sample),
        "correct_frequent": sum(c["got_frequent"] == c["word"] for c in freq_sample),
        "control_moved_cut_correct_all": sum(c["moved_got"] == c["word"] for c in sample),
    }
    if args.reference:
        ref = _reference(args.reference, set(rec_all.vocabulary), args.reference_per_word)
        got = [(w, rec_all.recognise(load_audio(f, sr=16000, length=16000))) for w, f in ref]
        result["reference"] = {"folder": str(args.reference), "clips": len(ref),
                               "words": sorted({w for w, _ in ref}),
                               "correct_all": sum(w == g for w, g in got)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    pct = lambda k, d: f"{result[k]}/{d} ({100 * result[k] / max(d, 1):.1f} %)"  # noqa: E731
    print(f"{n} random cut words of {len(clips)} in {args.corpus}")
    print(f"recognised as their word, vocabulary of all {result['vocabulary']} words: "
          f"{pct('correct_all', n)}")
    print(f"  those of the {result['frequent_vocabulary']} words with >= {args.min_clips} clips, "
          f"vocabulary of those words: {pct('correct_frequent', len(freq_sample))}")
    print(f"control, the same windows moved off the word: "
          f"{pct('control_moved_cut_correct_all', n)}")
    if args.reference:
        r = result["reference"]
        print(f"reference, {r['clips']} hand-cut clips of {', '.join(r['words'])} from "
              f"{r['folder']}: {r['correct_all']}/{r['clips']} "
              f"({100 * r['correct_all'] / max(r['clips'], 1):.1f} %)")
    if args.sheet:
        picked = sample[:20]
        draw_sheet(picked, args.sheet,
                   f"20 random words cut from {summary['corpus'].rstrip('/').split('/')[-1]} "
                   f"(log-mel; 'heard': PocketSphinx over all {result['vocabulary']} words)")
        print(f"sheet: {args.sheet}")
    if args.json:
        args.json.write_text(json.dumps({**result, "answers": sample}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
