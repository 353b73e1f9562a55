"""`kws bench-enroll --user-negatives`: what the benchmark hands `kws enroll --negatives`.

The point of the option is a fair A/B: each word's negatives are spoken by the speaker of its
takes, are neither a word to enrol nor a label the bundle knows, and are never played in the
stream, which must not change with the option.
"""
from __future__ import annotations

import numpy as np

from bnnkws.app.bench import enroll as be

LABELS = ["_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off",
          "stop", "go"]


def _cfg(fsdd, sc_v1, n):
    return be.BenchConfig(bundle="", old_data="", fsdd=str(fsdd), sc_v1=str(sc_v1), noise="",
                          digits=["zero", "one"], wake_words=["alexa"], v1_words=["marvin"],
                          user_negatives=n, seed=0)


def _words(cfg):
    from bnnkws.kws.data.synth import plan

    rng = np.random.default_rng(cfg.seed)
    words = be.fsdd_words(be.Path(cfg.fsdd), cfg.digits, 5, 10, rng)
    words += be.speaker_split_words(be.Path(cfg.sc_v1), cfg.v1_words, "speech_commands_v1", 5,
                                    5, rng, be._sc_speaker)
    # the wake word's takes come from one voice of the benchmark's espeak-ng pool
    speaker = plan(cfg.wake_words, be.WAKE_TAKES, cfg.seed, be.WAKE_VOICES)[0].speaker
    words.append(be.NewWord("alexa", "espeak-ng", [], [], [speaker], []))
    return words


def test_user_negatives_come_from_the_takes_speaker_and_stay_out_of_the_stream(fsdd, sc_v1_sample):
    cfg = _cfg(fsdd, sc_v1_sample, 6)
    words = _words(cfg)
    zero = words[0]
    # the stream's FSDD pool: here every clip of the enrolling speaker but two of each digit,
    # so a negative drawn from the stream would be likely if the exclusion were missing
    files = sorted(fsdd.glob("*.wav"))
    mine = [f for f in files if f.stem.split("_")[1] in zero.train_speakers]
    stream = {f for f in mine if int(f.stem.split("_")[2]) >= 2}
    negs = be.user_negatives(cfg, words, stream, LABELS)

    for w in words:
        got = negs[w.name]
        assert got["audio"].shape == (6, 16000), w.name
        assert len(got["what"]) == 6
        peak = np.abs(got["audio"]).max(axis=1)
        assert np.all(peak > 1e-2), f"{w.name}: a silent negative"
        assert not {x.lower() for x in got["what"]} & ({"zero", "one", "alexa", "marvin"}
                                                        | set(LABELS)), got["what"]
    # FSDD: the enrolling speaker's other digits, none of the stream's clips
    assert set(negs["zero"]["what"]) <= set(be.FSDD_DIGITS[2:])
    _each_one_of(negs["zero"]["audio"],
                 [f for f in mine if f not in stream and int(f.stem.split("_")[0]) >= 2])
    # v0.01: clips of the speakers who gave the takes, of words other than the enrolled ones
    marvin = words[2]
    _each_one_of(negs["marvin"]["audio"],
                 [f for f in sorted(sc_v1_sample.glob("*/*.wav"))
                  if be._sc_speaker(f) in marvin.train_speakers and f.parent.name != "marvin"])
    # espeak-ng: the wake word's near-misses
    assert set(negs["alexa"]["what"]) <= set(be.NEAR_MISSES["alexa"])
    # the same draw again
    again = be.user_negatives(cfg, words, stream, LABELS)
    assert all(np.array_equal(again[k]["audio"], negs[k]["audio"]) for k in negs)


def _each_one_of(audio, files):
    """Every row of ``audio`` is the loudest second of one of ``files``."""
    pool = np.stack([be.read_clip_file(f) for f in files])
    for a in audio:
        assert np.min(np.abs(pool - a).max(axis=1)) < 1e-6


def test_no_user_negatives_by_default(fsdd, sc_v1_sample):
    cfg = _cfg(fsdd, sc_v1_sample, 0)
    negs = be.user_negatives(cfg, _words(cfg), set(), LABELS)
    assert all(len(v["audio"]) == 0 and v["what"] == [] for v in negs.values())


def test_cli_refuses_a_negative_count(capsys):
    from bnnkws.app import cli

    assert cli.main(["bench-enroll", "--out", "x", "--user-negatives", "-1"]) == 2
    assert "--user-negatives must be 0 or more, got -1" in capsys.readouterr().err
