"""What the page may change in the bundle, through the functions the command line uses.

Enrol (`kws enroll`: :func:`bnnkws.deploy.enroll.enroll`), forget (`kws forget`:
:func:`~bnnkws.deploy.enroll.forget`), set a word's threshold (`kws words --set`:
:func:`~bnnkws.deploy.enroll.set_operating_point`), and the word list (`kws words`:
:func:`~bnnkws.deploy.enroll.words`). Each change builds a new bundle beside the old one and
swaps it in atomically, so a refused or failed change leaves the bundle as it was. The functions
here run on the server's worker thread, one at a time.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence

from bnnkws.app.serve.events import IGNORED
from bnnkws.app.serve.takes import Upload, enrolment_clips

SOURCE = "kws serve"  # the enrolment history's `source` of takes sent from the page


def word_rows(bundle_path, default_threshold: float) -> dict:
    """The bundle's words as the page lists them: per word the detection threshold the
    listener applies (the word's own from the manifest, else ``--threshold``) and where it
    comes from, its minimum exit, and whether (and from how many takes) it was enrolled."""
    from bnnkws.deploy.enroll import words

    info = words(bundle_path)
    rows = []
    for lab in info["labels"]:
        if lab in IGNORED:
            continue
        op = info["operating_points"].get(lab) or {}
        e = info["enrolled"].get(lab)
        own = "threshold" in op
        rows.append({
            "word": lab,
            "threshold": float(op["threshold"]) if own else float(default_threshold),
            "threshold_source": op.get("threshold_source", "?") if own else "--threshold",
            "min_exit": int(op.get("min_exit", 1)),
            "min_exit_source": op.get("min_exit_source", "default"),
            "enrolled": e is not None,
            "examples": (e or {}).get("examples"), "time": (e or {}).get("time"),
            "confusable_with": list(op.get("confusable_with") or []),
        })
    hist = info.get("history") or []
    return {"words": rows, "labels": list(info["labels"]), "memory": bool(info.get("memory")),
            "history": hist[-10:]}


def enrol(bundle_path, word: str, uploads: Sequence[Upload], update: bool = False) -> dict:
    """Enrol ``word`` from the uploaded takes with `kws enroll`'s defaults; returns the lines
    `kws enroll` prints (``report``) and its warnings."""
    from bnnkws.app.commands.enroll import enrol_report
    from bnnkws.deploy.enroll import check_enrolment_support, enroll

    bundle = check_enrolment_support(bundle_path)
    clips, names = enrolment_clips(bundle, uploads)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = enroll(bundle_path, word, clips, update=update, names=names, source=SOURCE)
    lines, warns = enrol_report(res)
    return {"word": res.word, "updated": bool(res.updated), "report": lines,
            "warnings": [str(w.message) for w in caught] + warns}


def forget(bundle_path, word: str) -> dict:
    from bnnkws.deploy.enroll import forget as forget_word

    b = forget_word(bundle_path, word)
    return {"report": [f"forgot {word!r}; words ({len(b.labels)}): {', '.join(b.labels)}"]}


def set_threshold(bundle_path, word: str, threshold: Optional[float],
                  min_exit: Optional[int] = None) -> dict:
    from bnnkws.deploy.enroll import EnrolmentError, set_operating_point

    if threshold is None and min_exit is None:
        raise EnrolmentError("a threshold and/or a minimum exit is needed")
    if word in IGNORED:
        raise EnrolmentError(f"{word!r} never fires; it has no threshold")
    set_operating_point(bundle_path, word, threshold, min_exit)
    parts = ([f"threshold {threshold:g}"] if threshold is not None else []) + \
            ([f"min exit {min_exit}"] if min_exit is not None else [])
    return {"report": [f"{word!r}: {', '.join(parts)}"]}
