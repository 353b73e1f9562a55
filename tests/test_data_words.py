"""`kws data words`: words cut from transcribed speech by forced alignment (issue 37).

Six real utterances of speechocean762 (../shared/data, Kaldi layout; four speakers, all three
splits, one sentence with a word CMUdict lacks) are aligned with PocketSphinx and cut into
MSWC's layout; the tiny LibriSpeech and Common Voice layouts below are made from the same
recordings. Alignment is deterministic, so every count here is exact run to run.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from bnnkws.kws.data.transcripts import (CorpusError, cmu_phones, detect_corpus, load_corpus,
                                         normalise_words, read_lexicon)
from conftest import _need

# 000010011 "we call it bear" (train, speaker 0001), 000010106 (train, 0001), 000050038
# (carved into validation, 0005), 000030012, 000030067 (test, 0003), 001490093 "henny ..."
# (test, 0149: HENNY is not in CMUdict, the corpus lexicon has it)
PICKS = ("000010011", "000010106", "000050038", "000030012", "000030067", "001490093")
HENNY = "001490093"


def _need_pocketsphinx():
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        msg = "pocketsphinx is not installed (pip install '.[words]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; under CI=true this is a failure")
        pytest.skip(msg)


@pytest.fixture(scope="module")
def so762() -> Path:
    return _need("speechocean762")


@pytest.fixture(scope="module")
def corpus(so762):
    _need_pocketsphinx()
    c = load_corpus(so762)
    c.utterances = [u for u in c.utterances if u.id in PICKS]
    assert len(c.utterances) == len(PICKS)
    return c


def _build(corpus, out, **kw):
    from bnnkws.kws.data.words import CutConfig, build_words

    cfg = kw.pop("cfg", CutConfig(format="wav"))
    return build_words(corpus, out, cfg=cfg, workers=kw.pop("workers", 1), progress=False,
                       **kw)


def _rows(out: Path, lang: str = "en") -> list[dict]:
    with open(out / lang / f"{lang}_splits.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("words")
    return out, _build(corpus, out)


def test_reader_kaldi_layout_split_and_lexicon(so762):
    c = load_corpus(so762)
    assert detect_corpus(so762) == "kaldi" and c.kind == "kaldi"
    assert len(c.utterances) == 5000 and sum(len(u.words) for u in c.utterances) == 31816
    assert len(c.word_counts()) == 2604
    assert sum(1 for n in c.word_counts().values() if n >= 20) == 230  # the README's figure
    # the published test speakers stay the test side; validation is carved out of train
    test_spk = {line.split()[1] for line in (so762 / "test" / "utt2spk").read_text().split("\n")
                if line.strip()}
    assert c.speakers("testing") == test_spk and len(test_spk) == 125
    assert c.speakers("validation") and not c.speakers("validation") & c.speakers("train")
    assert any("no validation side" in n for n in c.notes), c.notes
    u = next(u for u in c.utterances if u.id == "000010011")
    assert u.words == ("we", "call", "it", "bear") and u.gender == "m"
    assert Path(u.path).is_file()
    # the lexicon's phones become CMUdict's (stress removed)
    assert c.lexicon["henny"] == ["HH EH N IH", "HH EH N IY"]
    assert cmu_phones("EY1 B_B L_E") == "EY B L" and cmu_phones("XX1 B") is None


def test_cut_words_count_and_match_the_energy_envelope(corpus, built):
    from bnnkws.frontend.audio import load_audio
    from bnnkws.kws.data.align import Aligner
    from bnnkws.kws.data.words import frame_db, noise_floor

    out, s = built
    spoken = sum(len(u.words) for u in corpus.utterances)
    # every word of the transcripts is a clip or a counted rejection
    assert s["words_spoken"] == spoken == 28
    assert s["clips"] + sum(s["rejected"].values()) == spoken
    assert s["clips"] >= 24 and s["rejected"]["not_in_dictionary"] == 0
    rows = _rows(out)
    files = sorted(p.relative_to(out / "en" / "clips").as_posix()
                   for p in (out / "en" / "clips").rglob("*.wav"))
    assert len(rows) == s["clips"] and sorted(r["LINK"] for r in rows) == files
    assert not list(out.rglob("*.tmp*")), "temporary files left behind"
    # the cut boundaries against the recording's own energy envelope: the loud frames lie
    # inside aligned words, the words are not in silence, and they start and end with speech
    aligner = Aligner(corpus.lexicon)
    for u in corpus.utterances:
        y = load_audio(u.path)
        env, segs = frame_db(y), aligner.align(y, u.words)
        floor = noise_floor(env)
        t = np.arange(len(env)) * 0.010 + 0.0125  # frame centres
        inside = np.zeros(len(env), bool)
        for g in segs:
            inside |= (t >= g.start) & (t < g.end)
        loud = env > floor + 20
        assert loud[inside].sum() >= 0.85 * loud.sum(), u.id
        assert np.mean(env[inside] < floor + 6) <= 0.10, u.id
        assert segs[0].start >= t[loud][0] - 0.2 and segs[-1].end <= t[loud][-1] + 0.25, u.id
        assert all(a.end <= b.start + 1e-9 for a, b in zip(segs, segs[1:])), u.id
    # each clip is 1 s at 16 kHz, the word (plus context) centred between zeros, and it is the
    # same audio as the recording at the aligned place
    import soundfile as sf

    by_id = {u.id: u for u in corpus.utterances}
    for r in rows:
        clip, sr = sf.read(out / "en" / "clips" / r["LINK"], dtype="float32")
        assert sr == 16000 and len(clip) == 16000
        nz = np.flatnonzero(np.abs(clip) > 1e-4)
        centre = (nz[0] + nz[-1]) / 2
        assert abs(centre - 8000) < 400, r["LINK"]
        utt = by_id[Path(r["LINK"]).stem.rsplit("_", 1)[0]]
        assert r["WORD"] in utt.words and r["SPEAKER"] == utt.speaker


def test_a_word_outside_the_dictionary(corpus, tmp_path):
    from bnnkws.kws.data.align import Aligner

    assert not Aligner().knows("henny") and Aligner(corpus.lexicon).knows("henny")
    henny = next(u for u in corpus.utterances if u.id == HENNY)
    assert henny.words == ("henny", "can", "see", "the", "classroom")
    one = type(corpus)([henny], corpus.lexicon, corpus.name, corpus.kind, corpus.root)
    # with the corpus lexicon the word is aligned and cut like any other
    s = _build(one, tmp_path / "lexicon")
    assert "henny" in {r["WORD"] for r in _rows(tmp_path / "lexicon")}
    assert s["rejected"]["not_in_dictionary"] == 0
    # without it the utterance cannot be aligned: skipped, every word counted, nothing cut
    one.lexicon = {}
    s = _build(one, tmp_path / "none")
    assert s["clips"] == 0 and s["rejected"]["not_in_dictionary"] == 1
    assert s["rejected"]["utterance_has_unknown_word"] == 4
    assert s["unknown_words"] == [["henny", 1]]
    assert not (tmp_path / "none" / "en" / "clips").exists()


def test_unalignable_and_implausible_words_are_rejected_and_counted(corpus, tmp_path):
    from dataclasses import replace

    from bnnkws.kws.data.words import CutConfig, cut_clip, judge

    # a transcript far longer than its recording: no alignment, every word counted
    u = next(u for u in corpus.utterances if u.id == "000010011")
    long = replace(u, words=u.words * 30)
    one = type(corpus)([long], corpus.lexicon, corpus.name, corpus.kind, corpus.root)
    s = _build(one, tmp_path / "w")
    assert s["clips"] == 0 and s["rejected"]["alignment_failed"] == 120
    # the plausibility rules
    cfg = CutConfig()
    assert judge(0.05, 1, -20, -60, cfg) == "too_short"
    assert judge(0.15, 5, -20, -60, cfg) == "too_short"  # 30 ms a phone: squeezed in
    assert judge(1.2, 5, -20, -60, cfg) == "too_long"
    assert judge(0.4, 3, -55, -60, cfg) == "silent"
    assert judge(0.4, 3, -20, -60, cfg) is None
    # a cut: the word and its context centred in 1 s, faded edges, zeros around
    y = np.ones(48000, np.float32)
    clip = cut_clip(y, 1.0, 1.4, cfg)
    nz = np.flatnonzero(clip)
    assert len(clip) == 16000 and len(nz) == round((0.4 + 2 * 0.075) * 16000)
    assert abs((nz[0] + nz[-1]) / 2 - 7999.5) <= 1 and clip[nz[0]] < 0.05
    assert clip[8000] == 1.0
    # a word near 1 s keeps less context, never more than the clip
    clip = cut_clip(y, 1.0, 1.95, cfg)
    assert len(np.flatnonzero(clip)) <= 16000 and clip[8000] == 1.0


def test_an_interrupted_run_resumes_without_redoing_work(corpus, built, tmp_path):
    from bnnkws.kws.data.words import CutConfig, WordsError

    out = tmp_path / "words"
    seen = []

    def stop_after_two(rec):
        seen.append(rec["id"])
        if len(seen) == 2:
            raise KeyboardInterrupt  # as Ctrl-C would, between two utterances

    with pytest.raises(KeyboardInterrupt):
        _build(corpus, out, on_result=stop_after_two)
    assert not (out / "en" / "en_splits.csv").exists()
    first = {p: p.stat().st_mtime_ns for p in (out / "en" / "clips").rglob("*.wav")}
    assert first
    again = []
    s = _build(corpus, out, on_result=lambda rec: again.append(rec["id"]))
    assert s["resumed_utterances"] == 2 and s["aligned_utterances"] == 4
    assert sorted(again) == sorted(set(PICKS) - set(seen))  # nothing done twice
    assert all(p.stat().st_mtime_ns == m for p, m in first.items())  # clips not rewritten
    # the same corpus as an uninterrupted run, byte for byte
    ref, ref_summary = built
    assert (out / "en" / "en_splits.csv").read_bytes() == \
        (ref / "en" / "en_splits.csv").read_bytes()
    for r in _rows(ref):
        assert (out / "en" / "clips" / r["LINK"]).read_bytes() == \
            (ref / "en" / "clips" / r["LINK"]).read_bytes()
    for key in ("clips", "rejected", "words_spoken", "speakers_per_split"):
        assert s[key] == ref_summary[key]
    # a finished folder reruns as a no-op; other settings are refused, naming the file
    assert _build(corpus, out)["aligned_utterances"] == 0
    with pytest.raises(WordsError, match=r"settings\.json: .*other settings \(cut"):
        _build(corpus, out, cfg=CutConfig(format="wav", context=0.2))


def test_the_corpus_reads_back_as_mswc_with_speakers_on_one_side(corpus, built, capsys):
    from bnnkws.kws.data import detect_kind, load_dataset

    out, s = built
    assert detect_kind(out) == "mswc"
    ds = load_dataset(f"mswc:{out}", task="all")
    assert ds.kind == "mswc" and len(ds.clips) == s["clips"]
    assert any("published MSWC split" in n for n in ds.notes), ds.notes
    assert not ds.speaker_overlap()
    split_of = {u.speaker: u.split for u in corpus.utterances}
    assert {(c.speaker, c.split) for c in ds.clips} == set(split_of.items())
    assert {c.split for c in ds.clips} == {"train", "validation", "testing"}
    rows = _rows(out)
    assert {r["GENDER"] for r in rows} <= {"MALE", "FEMALE"} and {r["VALID"] for r in rows} \
        == {"True"}
    assert s["speakers_per_split"] == {"TRAIN": 1, "DEV": 1, "TEST": 2}
    # as `kws train --aux-only mswc:OUT`: every word trains an auxiliary head, the task's
    # held-out speakers stay out
    from bnnkws.kws.data import LABELS12, vocab

    test_spk = {u.speaker for u in corpus.utterances if u.split == "testing"}
    extra, _ = vocab.extra_clips(None, LABELS12, exclude_speakers=test_spk, holdout=[],
                                 aux_only=[f"mswc:{out}"])
    assert extra and not {c.speaker for c in extra} & test_spk
    assert {c.label for c in extra} <= set(LABELS12) | {vocab.AUX_ONLY}
    assert {c.source for c in extra} == {r["WORD"] for r in rows if r["SET"] != "TEST"}
    from bnnkws.app.cli import main

    assert main(["data", "summary", f"mswc:{out}", "--task", "all"]) == 0
    text = capsys.readouterr().out
    assert "speakers in two splits: none" in text and "every file decodes" in text


def _copy_audio(src: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(Path(src).read_bytes())


def test_librispeech_and_common_voice_layouts(corpus, tmp_path):
    utts = corpus.utterances
    # LibriSpeech: <subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt, audio beside it
    libri = tmp_path / "LibriSpeech"
    train = [u for u in utts if u.speaker == "0001"]
    test = [u for u in utts if u.speaker == "0003"]
    for subset, picked in (("train-clean-100", train), ("test-clean", test)):
        for u in picked:
            chapter = libri / subset / u.speaker / "7"
            name = f"{u.speaker}-7-{u.id}"
            _copy_audio(u.path, chapter / f"{name}.opus")
            with open(chapter / f"{u.speaker}-7.trans.txt", "a") as f:
                f.write(f"{name} {' '.join(u.words).upper()}\n")
    (libri / "SPEAKERS.TXT").write_text("; ID | SEX | SUBSET\n0001 | M | train-clean-100\n")
    assert detect_corpus(libri) == "librispeech"
    lc = load_corpus(f"librispeech:{libri}")
    assert lc.kind == "librispeech" and len(lc.utterances) == 4
    # the subsets are the split (one training speaker: none is left to carve a validation)
    assert {(u.speaker, u.split) for u in lc.utterances} == {("0001", "train"),
                                                             ("0003", "testing")}
    assert next(u for u in lc.utterances if u.speaker == "0001").gender == "m"
    s = _build(lc, tmp_path / "libri_words")
    assert s["clips"] + sum(s["rejected"].values()) == s["words_spoken"] > 0
    # Common Voice: validated.tsv, clips/, and train/dev/test.tsv (speaker-disjoint)
    cv = tmp_path / "cv-corpus" / "en"
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\tlocale\n"
    lines = {}
    for i, u in enumerate(utts):
        name = f"common_voice_en_{100 + i}.opus"
        _copy_audio(u.path, cv / "clips" / name)
        sentence = " ".join(u.words).capitalize() + "."
        gender = "male" if u.gender == "m" else "female"
        line = f"spk{u.speaker}\t{name}\t{sentence}\t2\t0\t\t{gender}\ten\n"
        lines.setdefault("validated.tsv", []).append(line)
        lines.setdefault({"train": "train.tsv", "validation": "dev.tsv",
                          "testing": "test.tsv"}[u.split], []).append(line)
    for name, ls in lines.items():
        (cv / name).write_text(header + "".join(ls))
    assert detect_corpus(cv) == "commonvoice"
    cc = load_corpus(cv)
    assert cc.kind == "commonvoice" and cc.language == "en" and len(cc.utterances) == 6
    by_id = {f"common_voice_en_{100 + i}": u for i, u in enumerate(utts)}
    assert {u.id: (u.words, u.split, u.gender) for u in cc.utterances} == {
        k: (u.words, u.split, u.gender) for k, u in by_id.items()}


def test_text_lexicon_and_errors_name_the_file(tmp_path):
    assert normalise_words("“Don't stop,” she said—well-known!") == (
        "don't", "stop", "she", "said", "well", "known")
    assert normalise_words("UH [laughter] <UNK> yes") == ("uh", "[laughter]", "<unk>", "yes")
    lex = tmp_path / "lexicon.txt"
    lex.write_text("ABLE\tEY1 B L\nABLE(2)\tEY1 B AH0 L\nODD\t1.0 AA1 D\nBAD\tQQ1\n")
    got, refused = read_lexicon(lex)
    assert got == {"able": ["EY B L", "EY B AH L"], "odd": ["AA D"]} and refused == 1
    # a piped wav.scp is refused, naming the file
    d = tmp_path / "kaldi" / "train"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text("u1 sox a.wav -t wav - |\n")
    (d / "text").write_text("u1 HELLO\n")
    (d / "utt2spk").write_text("u1 s1\n")
    with pytest.raises(CorpusError, match=r"wav\.scp: .* is a command"):
        load_corpus(f"kaldi:{tmp_path / 'kaldi'}")
    with pytest.raises(CorpusError, match="not a transcribed corpus"):
        load_corpus(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "nothing")


def _kaldi_subset(corpus, root: Path) -> None:
    """The picked utterances as a Kaldi corpus of their own (train/ and test/, the lexicon)."""
    for split, folder in (("train", "train"), ("validation", "train"), ("testing", "test")):
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        for u in corpus.utterances:
            if u.split != split:
                continue
            for name, line in (("wav.scp", f"{u.id} {Path(u.path).resolve()}"),
                               ("text", f"{u.id} {' '.join(u.words).upper()}"),
                               ("utt2spk", f"{u.id} {u.speaker}")):
                with open(d / name, "a") as f:
                    f.write(line + "\n")
            genders = d / "spk2gender"
            known = genders.read_text() if genders.is_file() else ""
            if f"{u.speaker} " not in known:
                genders.write_text(known + f"{u.speaker} {u.gender}\n")
    (root / "resource").mkdir()
    (root / "resource" / "lexicon.txt").write_text("HENNY\tHH EH1 N IY0\n")


def test_cli_words_with_worker_processes_then_summary(corpus, built, tmp_path, capsys,
                                                      monkeypatch):
    from bnnkws.app.cli import main
    from bnnkws.kws.data import DatasetError, load_dataset

    src = tmp_path / "so762-part"
    _kaldi_subset(corpus, src)
    # a transcribed corpus is not a clip dataset: the reader says how to make one
    with pytest.raises(DatasetError, match=r"transcribed corpus \(kaldi\).*kws data words"):
        load_dataset(src)
    out = tmp_path / "words"
    assert main(["data", "words", f"kaldi:{src}", "--out", str(out), "--format", "wav",
                 "--workers", "2", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "lexicon: " in text and "workers" in text and "rejected" in text
    import json

    s = json.loads((out / "words_summary.json").read_text())
    ref = built[1]
    # two processes cut the same words as one (alignment does not depend on the order)
    assert s["workers"] == 2 and s["clips"] == ref["clips"]
    assert s["rejected"] == ref["rejected"]
    assert sorted(r["LINK"] for r in _rows(out)) == sorted(r["LINK"] for r in _rows(built[0]))
    assert main(["data", "summary", f"mswc:{out}", "--task", "all", "--no-check"]) == 0
    assert "speakers in two splits: none" in capsys.readouterr().out
    # without pocketsphinx the command names the package to install
    import sys

    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    assert main(["data", "words", str(src), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "pip install 'bnn-kws[words]'" in capsys.readouterr().err
