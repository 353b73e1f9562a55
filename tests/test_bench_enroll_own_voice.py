"""`kws bench-enroll --own-voice`: the enrolling speaker's other takes, streamed and scored apart.

A user who enrols a word then says it; the other-speaker figures the issue asks for stay what
they were, and the own-voice takes are counted on their own.
"""
from __future__ import annotations

import numpy as np

from bnnkws.app.bench import enroll as be
from test_bench_enroll_negatives import _each_one_of, _words


def _cfg(fsdd, sc_v1, n):
    return be.BenchConfig(bundle="", old_data="", fsdd=str(fsdd), sc_v1=str(sc_v1), noise="",
                          digits=["zero", "one"], wake_words=["alexa"], v1_words=["marvin"],
                          own_voice=n, seed=0)


def test_own_voice_takes_are_the_enrolling_speakers_and_never_the_enrolled_ones(fsdd,
                                                                               sc_v1_sample):
    cfg = _cfg(fsdd, sc_v1_sample, 45)  # all that is left of 50 after the 5 takes
    words = _words(cfg)
    own = be.own_voice(cfg, words)
    files = sorted(fsdd.glob("*.wav"))
    for w in words[:2]:  # FSDD: the speaker's other clips of the same digit
        assert own[w.name].shape == (45, 16000)
        taken = set(w.train)
        pool = [f for f in files if be._fsdd_digit(f) == w.name
                and be._fsdd_speaker(f) in w.train_speakers and f not in taken]
        _each_one_of(own[w.name], pool)
        takes = np.stack([be.read_clip_file(f) for f in w.train])
        for a in own[w.name]:
            assert np.min(np.abs(takes - a).max(axis=1)) > 1e-3  # not an enrolment take
    assert own["marvin"].shape == (0, 16000)  # v0.01: one clip per speaker and word
    # espeak-ng: fresh takes of the word in the voice of the enrolment takes
    alexa = words[-1]
    voice = be.wake_voices(cfg)[alexa.train_speakers[0]]
    utts = be.in_voice(["alexa"], 45, voice, cfg.seed + 3)
    assert {(u.voice, u.variant, u.word) for u in utts} == {voice + ("alexa",)}
    assert len({(u.rate, u.pitch) for u in utts}) >= 40
    from bnnkws.kws.data.synth import render

    assert np.array_equal(own["alexa"], np.stack([render(u) for u in utts]))
    # off by default
    assert all(len(a) == 0 for a in be.own_voice(_cfg(fsdd, sc_v1_sample, 0), words).values())


def test_match_counts_own_voice_apart_and_keeps_false_accepts():
    E = be.Event
    events = [E("zero", "fsdd", 10.0, 10.6), E("zero", "fsdd", 20.0, 20.6),
              E("zero", be.OWN + "fsdd", 30.0, 30.6), E("zero", be.OWN + "fsdd", 40.0, 40.6),
              E("", "fsdd:three", 50.0, 50.6)]
    dets = [(11.0, "zero"), (31.0, "zero"), (41.2, "zero"), (51.0, "zero")]
    m = be.match(dets, events, ["zero"], 3600.0)["zero"]
    assert (m["occurrences"], m["hits"], m["recall"]) == (2, 1, 0.5)
    assert (m["own_occurrences"], m["own_hits"], m["own_recall"]) == (2, 2, 1.0)
    assert m["false_accepts"] == 1 and m["fa_per_hour"] == 1.0
    plain = be.match(dets, [e for e in events if not e.source.startswith(be.OWN)], ["zero"],
                     3600.0)["zero"]
    assert "own_recall" not in plain and plain["false_accepts"] == 3  # the own hits are FAs
    snr = be.snr_by_source([E("zero", "fsdd", 0, 1, 1.0), E("zero", be.OWN + "fsdd", 1, 2, 4.0)],
                           10.0)
    assert set(snr) == {"new:fsdd", "new:own fsdd"}
    assert abs(snr["new:own fsdd"] - snr["new:fsdd"] - 10 * np.log10(4.0)) < 1e-9


def test_cli_refuses_a_negative_own_voice_count(capsys):
    from bnnkws.app import cli

    assert cli.main(["bench-enroll", "--out", "x", "--own-voice", "-2"]) == 2
    assert "--own-voice must be 0 or more, got -2" in capsys.readouterr().err
