"""Transcribed speech corpora: utterances with their text, speaker and split, and a lexicon.

These are the inputs of ``kws data words`` (:mod:`bnnkws.kws.data.words`), which cuts every
word into its own clip; they are not clip datasets themselves. Three layouts are read:

``kaldi:PATH``
    A Kaldi data folder (``wav.scp``, ``text``, ``utt2spk``; optional ``spk2gender``,
    ``segments``), or a corpus folder holding several (``train/``, ``dev/``, ``test/``), as
    speechocean762 publishes itself. ``wav.scp`` paths are relative to the corpus folder (or
    the data folder); piped commands are refused. A ``lexicon.txt`` in the corpus
    (``resource/``, ``local/dict/``, ``dict/`` or the folder itself) is read.
``librispeech:PATH``
    LibriSpeech: ``<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` beside the FLAC files,
    one subset (``train-clean-100``) or the folder holding several; ``SPEAKERS.TXT`` gives
    genders. Subsets named ``train-*``, ``dev-*``, ``test-*`` are the splits.
``commonvoice:PATH``
    One Common Voice language: ``validated.tsv`` and ``clips/``; ``train.tsv``, ``dev.tsv``
    and ``test.tsv`` (speaker-disjoint) are the split where present.

Words are normalised to lower case without surrounding punctuation (inner apostrophes kept,
hyphens split). Splits keep each speaker on one side: a corpus' own split is used when it
does; a corpus without one is split by speaker (:func:`bnnkws.kws.data.splits.split_groups`),
and a missing validation (or test) side is carved out of the training speakers. Nothing here
imports numpy-heavy or audio code.
"""
from __future__ import annotations

import collections
import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .splits import split_groups

KINDS = ("kaldi", "librispeech", "commonvoice")
SPLIT_NAMES = {"train": "train", "training": "train", "dev": "validation",
               "devel": "validation", "valid": "validation", "validation": "validation",
               "test": "testing", "testing": "testing", "eval": "testing"}
# ARPAbet as CMUdict (and pocketsphinx's en-us model) writes it, without stress marks
CMU_PHONES = frozenset(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
    "UH UW V W Y Z ZH".split())
LEXICON_PLACES = ("lexicon.txt", "resource/lexicon.txt", "local/dict/lexicon.txt",
                  "dict/lexicon.txt", "../resource/lexicon.txt")


class CorpusError(ValueError):
    """A transcribed corpus that cannot be read; the message names the file or value."""


class CorpusNotFoundError(CorpusError, FileNotFoundError):
    """A corpus folder or one of its required files is missing."""


@dataclass(frozen=True)
class Utterance:
    """One transcribed recording (or a ``start``-``end`` segment of one, in seconds)."""

    id: str
    path: str
    words: tuple[str, ...]
    speaker: str
    split: str  # train | validation | testing
    gender: str = ""  # "m" | "f" | "" (unknown)
    start: float | None = None
    end: float | None = None


@dataclass
class Corpus:
    """Utterances of a transcribed corpus, its pronunciation lexicon and what was noticed."""

    utterances: list[Utterance]
    lexicon: dict[str, list[str]] = field(default_factory=dict)  # word -> CMU phone strings
    name: str = ""
    kind: str = ""
    root: str = ""
    language: str = "en"
    notes: list[str] = field(default_factory=list)

    def speakers(self, split: str | None = None) -> set[str]:
        return {u.speaker for u in self.utterances if split is None or u.split == split}

    def word_counts(self) -> collections.Counter:
        return collections.Counter(w for u in self.utterances for w in u.words)


# ----------------------------------------------------------------------------- text


_EDGE = "\"'`.,;:!?()[]{}«»“”‘’-–—…/\\*_~"


def normalise_words(text: str) -> tuple[str, ...]:
    """Lower-case words of a transcript: punctuation around words removed, inner apostrophes
    kept (``don't``), hyphenated words split (``well-known`` -> ``well``, ``known``). Noise
    marks such as ``[laughter]`` or ``<unk>`` stay as they are (no dictionary has them, so
    their utterance is counted as unalignable rather than cut wrongly)."""
    text = text.replace("’", "'").replace("‘", "'").lower()
    out = []
    for token in re.split(r"[\s\-–—/]+", text):
        if re.fullmatch(r"[\[<{(].*[\]>})]", token):
            out.append(token)
            continue
        token = token.strip(_EDGE)
        if token:
            out.append(token)
    return tuple(out)


def safe_name(text: str) -> str:
    """``text`` made usable as a file name (letters, digits, ``.``, ``-``, ``_``, ``'``)."""
    return re.sub(r"[^\w.'-]", "_", text).strip(".") or "_"


# ----------------------------------------------------------------------------- lexicon


def cmu_phones(pron: str) -> str | None:
    """A pronunciation in CMUdict's phones without stress (``EY1 B L`` -> ``EY B L``; Kaldi's
    position marks ``_B``/``_I``/``_E``/``_S`` dropped), or None when a phone is not ARPAbet."""
    phones = [re.sub(r"(_[BIES])?$", "", p.upper()) for p in pron.split()]
    phones = [re.sub(r"[0-2]$", "", p) for p in phones]
    if not phones or any(p not in CMU_PHONES for p in phones):
        return None
    return " ".join(phones)


def read_lexicon(path) -> tuple[dict[str, list[str]], int]:
    """``({word: [CMU pronunciation, ...]}, pronunciations refused)`` from a Kaldi/CMU
    lexicon (``WORD PH PH ...``; ``lexiconp.txt``'s probability column is skipped; CMUdict's
    ``WORD(2)`` variants are joined to ``WORD``; ``;;;`` comment lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusNotFoundError(f"lexicon {path} does not exist")
    out: dict[str, list[str]] = {}
    refused = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if not parts or parts[0].startswith(";;;"):
                continue
            word, phones = re.sub(r"\(\d+\)$", "", parts[0]).lower(), parts[1:]
            if phones and re.fullmatch(r"[0-9.]+", phones[0]):
                phones = phones[1:]
            pron = cmu_phones(" ".join(phones))
            if pron is None:
                refused += 1
                continue
            if pron not in out.setdefault(word, []):
                out[word].append(pron)
    return out, refused


def find_lexicon(*folders: Path) -> Path | None:
    """The first ``lexicon.txt`` in the usual places of a Kaldi corpus under ``folders``."""
    for folder in folders:
        for rel in LEXICON_PLACES:
            p = folder / rel
            if p.is_file():
                return p.resolve()
    return None


# ----------------------------------------------------------------------------- splits


def assign_splits(utts: list[Utterance], seed: int = 0, val_frac: float = 0.1,
                  test_frac: float = 0.1) -> tuple[list[Utterance], list[str]]:
    """Utterances with every speaker on one side, and notes on how the split was made.

    ``split == ""`` means the corpus has none. The corpus' split is kept when it is
    speaker-disjoint, else all is re-split by speaker; a side the corpus lacks (no ``dev``) is
    carved out of its training speakers by clip share (``val_frac``/``test_frac``)."""
    from dataclasses import replace

    where = collections.defaultdict(set)
    for u in utts:
        where[u.speaker].add(u.split)
    given = {u.split for u in utts}
    shared = sum(1 for s in where.values() if len(s) > 1)
    if given == {""} or shared:
        by = split_groups([u.speaker for u in utts], seed, val_frac, test_frac)
        note = (f"split: the corpus' split puts {shared} speakers on two sides; "
                if shared else "split: the corpus has none; ")
        return ([replace(u, split=by[u.speaker]) for u in utts],
                [note + f"made by speaker (seed {seed}, val {val_frac}, test {test_frac})"])
    notes = ["split: the corpus' own (speaker-disjoint)"]
    missing = {"validation": val_frac, "testing": test_frac}
    fracs = {s: f for s, f in missing.items() if s not in given and f > 0}
    if fracs and "train" in given:
        train = [u for u in utts if u.split == "train"]
        by = split_groups([u.speaker for u in train], seed, fracs.get("validation", 0.0),
                          fracs.get("testing", 0.0))
        utts = [replace(u, split=by[u.speaker]) if u.split == "train" else u for u in utts]
        notes.append(f"split: the corpus has no {' or '.join(sorted(fracs))} side; "
                     f"{', '.join(f'{s} {f}' for s, f in sorted(fracs.items()))} of the "
                     f"training clips' speakers moved there (seed {seed})")
    return utts, notes


# ----------------------------------------------------------------------------- Kaldi


def _kaldi_dirs(root: Path) -> list[Path]:
    def is_data(p: Path) -> bool:
        return (p / "wav.scp").is_file() and (p / "text").is_file()

    if is_data(root):
        return [root]
    return [p for p in sorted(root.iterdir()) if p.is_dir() and is_data(p)] \
        if root.is_dir() else []


def is_kaldi(root: Path) -> bool:
    return bool(_kaldi_dirs(Path(root)))


def _table(path: Path, required: bool = True) -> dict[str, str]:
    """A Kaldi table: ``key value...`` per line -> ``{key: value}``."""
    if not path.is_file():
        if required:
            raise CorpusNotFoundError(f"{path}: missing (a Kaldi data folder needs wav.scp, "
                                      f"text and utt2spk)")
        return {}
    out = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            parts = line.strip().split(None, 1)
            if not parts:
                continue
            key, value = parts[0], parts[1] if len(parts) > 1 else ""
            if key in out:
                raise CorpusError(f"{path}, line {i}: {key!r} listed twice")
            out[key] = value.strip()
    return out


def _resolve_audio(ref: str, bases: list[Path], scp: Path) -> Path:
    if ref.endswith("|") or " " in ref.strip():
        raise CorpusError(f"{scp}: {ref!r} is a command, not a file; write the audio to files "
                          f"and list their paths in wav.scp")
    p = Path(ref)
    if p.is_absolute():
        return p
    for b in bases:
        if (b / p).is_file():
            return (b / p)
    return bases[0] / p


def load_kaldi(root, seed: int = 0, val_frac: float = 0.1, test_frac: float = 0.1,
               lexicon=None, language: str = "en") -> Corpus:
    """Read a Kaldi data folder or a folder of them (see the module docstring)."""
    root = Path(root)
    dirs = _kaldi_dirs(root)
    if not dirs:
        raise CorpusNotFoundError(f"{root}: no Kaldi data folder (wav.scp and text, in the "
                                  f"folder or in train/, dev/, test/)")
    corpus_root = root if dirs != [root] else root.parent
    utts: list[Utterance] = []
    notes = []
    for d in dirs:
        split = "" if d == root else SPLIT_NAMES.get(d.name.lower().split("_")[0], None)
        if split is None:
            notes.append(f"{d.name}/: not a split name (train, dev, test); its speakers are "
                         f"split with the rest")
            split = ""
        scp, text = _table(d / "wav.scp"), _table(d / "text")
        spk = _table(d / "utt2spk")
        gender = {k: v.lower()[:1] for k, v in _table(d / "spk2gender", False).items()}
        segments = _table(d / "segments", False)
        bases = [corpus_root, d, Path.cwd()]
        resolved: dict[str, Path] = {}
        no_text = 0
        for utt in sorted(segments or scp):
            if utt not in text:
                no_text += 1
                continue
            start = end = None
            rec = utt
            if segments:
                rec, s, e = (segments[utt].split() + ["", ""])[:3]
                try:
                    start, end = float(s), float(e)
                except ValueError:
                    raise CorpusError(f"{d / 'segments'}: {utt} {segments[utt]!r} is not "
                                      f"'<recording> <start> <end>'") from None
                if end <= 0:  # Kaldi's -1: to the end of the recording
                    end = None
                if rec not in scp:
                    raise CorpusError(f"{d / 'segments'}: recording {rec!r} of {utt} is not "
                                      f"in {d / 'wav.scp'}")
            if rec not in resolved:
                resolved[rec] = _resolve_audio(scp[rec], bases, d / "wav.scp")
            if utt not in spk:
                raise CorpusError(f"{d / 'utt2spk'}: no speaker for {utt}")
            s_id = spk[utt]
            utts.append(Utterance(utt, str(resolved[rec]), normalise_words(text[utt]), s_id,
                                  split, gender.get(s_id, ""), start, end))
        if no_text:
            notes.append(f"{d.name}/: {no_text} recordings without a transcript skipped")
    _check_present(utts, root)
    utts, more = assign_splits(utts, seed, val_frac, test_frac)
    lex, lex_notes = _lexicon(lexicon, corpus_root, root)
    return Corpus(utts, lex, root.name, "kaldi", str(root), language, notes + more + lex_notes)


def _lexicon(lexicon, *folders: Path) -> tuple[dict, list[str]]:
    path = Path(lexicon) if lexicon else find_lexicon(*folders)
    if path is None:
        return {}, []
    lex, refused = read_lexicon(path)
    note = f"lexicon: {path} ({len(lex)} words)"
    if refused:
        note += f"; {refused} pronunciations with phones outside ARPAbet ignored"
    return lex, [note]


def _check_present(utts: list[Utterance], root: Path, sample: int = 20) -> None:
    if not utts:
        raise CorpusNotFoundError(f"{root}: the corpus lists no transcribed utterance")
    picked = utts[::max(1, len(utts) // sample)]
    missing = [u.path for u in picked if not os.path.isfile(u.path)]
    if missing:
        raise CorpusNotFoundError(f"{root}: {len(missing)} of {len(picked)} sampled audio "
                                  f"files are missing, e.g. {missing[0]}")


# ----------------------------------------------------------------------------- LibriSpeech


def _trans_files(root: Path, limit: int | None = None) -> list[Path]:
    out = []
    for pattern in ("*/*/*.trans.txt", "*/*/*/*.trans.txt"):
        for p in root.glob(pattern):
            out.append(p)
            if limit and len(out) >= limit:
                return out
        if out:
            break
    return sorted(out)


def is_librispeech(root: Path) -> bool:
    return Path(root).is_dir() and bool(_trans_files(Path(root), limit=1))


def _librispeech_genders(root: Path) -> dict[str, str]:
    for p in (root / "SPEAKERS.TXT", root.parent / "SPEAKERS.TXT"):
        if p.is_file():
            out = {}
            for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith(";") or "|" not in line:
                    continue
                parts = [x.strip() for x in line.split("|")]
                out[parts[0]] = parts[1].lower()[:1]
            return out
    return {}


def load_librispeech(root, seed: int = 0, val_frac: float = 0.1, test_frac: float = 0.1,
                     lexicon=None, language: str = "en") -> Corpus:
    """Read LibriSpeech (one subset, or the folder of several; see the module docstring)."""
    root = Path(root)
    files = _trans_files(root)
    if not files:
        raise CorpusNotFoundError(f"{root}: no LibriSpeech transcripts "
                                  f"(<speaker>/<chapter>/<speaker>-<chapter>.trans.txt)")
    genders = _librispeech_genders(root)
    utts = []
    for t in files:
        chapter = t.parent
        speaker = chapter.parent.name
        subset = chapter.parent.parent
        split = ""
        if subset != root:
            split = SPLIT_NAMES.get(subset.name.lower().split("-")[0], "")
        for i, line in enumerate(t.read_text(encoding="utf-8").splitlines(), 1):
            utt, _, text = line.strip().partition(" ")
            if not utt:
                continue
            audio = next((chapter / f"{utt}{ext}" for ext in (".flac", ".wav", ".opus")
                          if (chapter / f"{utt}{ext}").is_file()), chapter / f"{utt}.flac")
            utts.append(Utterance(utt, str(audio), normalise_words(text), speaker, split,
                                  genders.get(speaker, "")))
    _check_present(utts, root)
    utts, notes = assign_splits(utts, seed, val_frac, test_frac)
    lex, lex_notes = _lexicon(lexicon, root)
    return Corpus(utts, lex, root.name, "librispeech", str(root), language,
                  [f"LibriSpeech: {len(files)} chapters"] + notes + lex_notes)


# ----------------------------------------------------------------------------- Common Voice


CV_SPLITS = (("train.tsv", "train"), ("dev.tsv", "validation"), ("test.tsv", "testing"))


def is_commonvoice(root: Path) -> bool:
    root = Path(root)
    return (root / "validated.tsv").is_file() and (root / "clips").is_dir()


def _cv_rows(path: Path) -> list[dict]:
    csv.field_size_limit(1 << 24)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if rows and not {"client_id", "path", "sentence"} <= set(rows[0]):
        raise CorpusError(f"{path}: no column client_id, path or sentence (columns: "
                          f"{', '.join(rows[0])}); expected Common Voice's")
    return rows


def load_commonvoice(root, seed: int = 0, val_frac: float = 0.1, test_frac: float = 0.1,
                     lexicon=None, language: str | None = None) -> Corpus:
    """Read one Common Voice language (see the module docstring)."""
    root = Path(root)
    if not is_commonvoice(root):
        raise CorpusNotFoundError(f"{root}: no Common Voice language (validated.tsv and "
                                  f"clips/)")
    parts = [(root / name, split) for name, split in CV_SPLITS if (root / name).is_file()]
    if parts:
        notes = [f"Common Voice: {', '.join(p.name for p, _ in parts)} (validated clips "
                 f"outside them left out)"]
    else:
        parts = [(root / "validated.tsv", "")]
        notes = ["Common Voice: validated.tsv"]
    utts = []
    for path, split in parts:
        for r in _cv_rows(path):
            g = (r.get("gender") or "").lower()
            gender = "m" if g.startswith("male") else "f" if g.startswith("female") else ""
            utts.append(Utterance(Path(r["path"]).stem, str(root / "clips" / r["path"]),
                                  normalise_words(r["sentence"] or ""), r["client_id"], split,
                                  gender))
            if language is None and r.get("locale"):
                language = r["locale"]
    _check_present(utts, root)
    utts, more = assign_splits(utts, seed, val_frac, test_frac)
    lex, lex_notes = _lexicon(lexicon, root)
    lang = language or (root.name if re.fullmatch(r"[a-z]{2,3}(-[A-Za-z]+)?", root.name)
                        else "en")
    return Corpus(utts, lex, root.name, "commonvoice", str(root), lang,
                  notes + more + lex_notes)


# ----------------------------------------------------------------------------- specs


LOADERS = {"kaldi": load_kaldi, "librispeech": load_librispeech,
           "commonvoice": load_commonvoice}


def detect_corpus(path: Path) -> str | None:
    """``kaldi`` | ``librispeech`` | ``commonvoice`` for a transcribed corpus folder, else
    None."""
    path = Path(path)
    if not path.is_dir():
        return None
    if is_commonvoice(path):
        return "commonvoice"
    if is_kaldi(path):
        return "kaldi"
    if is_librispeech(path):
        return "librispeech"
    return None


def parse_corpus_spec(spec) -> tuple[str | None, Path]:
    """``(kind or None, path)`` of ``kaldi:PATH``, ``librispeech:PATH``, ``commonvoice:PATH``
    or a bare path (``~`` and environment variables expanded)."""
    s = str(spec)
    head, sep, rest = s.partition(":")
    kind = None
    if sep and head.lower() in KINDS:
        kind, s = head.lower(), rest
    return kind, Path(os.path.expandvars(os.path.expanduser(s)))


def load_corpus(spec, seed: int = 0, val_frac: float = 0.1, test_frac: float = 0.1,
                lexicon=None, language: str | None = None) -> Corpus:
    """Read the transcribed corpus SPEC names (detected, or forced by its prefix)."""
    kind, path = parse_corpus_spec(spec)
    if not path.exists():
        raise CorpusNotFoundError(f"corpus {path} does not exist")
    if not path.is_dir():
        raise CorpusError(f"corpus {path} is a file; give the corpus' folder")
    kind = kind or detect_corpus(path)
    if kind is None:
        raise CorpusError(
            f"{path}: not a transcribed corpus I can read. Expected a Kaldi data folder "
            f"(wav.scp, text, utt2spk; or train/ and test/ holding them), LibriSpeech "
            f"(<speaker>/<chapter>/*.trans.txt) or Common Voice (validated.tsv, clips/)")
    kw = {"language": language} if language else {}
    return LOADERS[kind](path, seed, val_frac, test_frac, lexicon, **kw)
