"""RecognizeCommands on synthetic per-hop score sequences (100 ms hop)."""
import numpy as np
import pytest

from bnnkws.app.listener.smoothing import RecognizeCommands

LABELS = ["yes", "no", "_silence_", "_unknown_"]
HOP = 100.0


def onehot(label, p=0.9):
    v = np.full(len(LABELS), (1.0 - p) / (len(LABELS) - 1))
    v[LABELS.index(label)] = p
    return v


def feed(rc, seq, t0=0.0):
    """Feed (label, p) pairs one hop apart; return [(time_ms, label)] of detections."""
    out = []
    for i, (label, p) in enumerate(seq):
        t = t0 + i * HOP
        r = rc.process(onehot(label, p), t)
        if r.is_new:
            out.append((t, r.label))
    return out


def make(**kw):
    kw = {"average_window_ms": 500, "detection_threshold": 0.6, "minimum_count": 3,
          "suppression_ms": 1000, **kw}
    return RecognizeCommands(LABELS, **kw)


def test_fires_once_per_utterance_after_enough_results():
    rc = make()
    seq = [("_silence_", 0.9)] * 10 + [("yes", 0.95)] * 8 + [("_silence_", 0.9)] * 10
    dets = feed(rc, seq)
    assert [lab for _, lab in dets] == ["yes"]
    # The average over the 5-result window crosses 0.6 only once 3+ "yes" results are in it.
    t, _ = dets[0]
    assert 1000 + 2 * HOP <= t <= 1000 + 4 * HOP


def test_threshold_blocks_weak_scores():
    seq = [("_silence_", 0.9)] * 5 + [("yes", 0.55)] * 10 + [("_silence_", 0.9)] * 5
    assert feed(make(detection_threshold=0.6), seq) == []
    assert [lab for _, lab in feed(make(detection_threshold=0.5), seq)] == ["yes"]


def test_minimum_count_waits_for_enough_results():
    # A word right at the start of the stream: nothing can fire before min_count results exist.
    seq = [("yes", 0.99)] * 6
    dets = feed(make(minimum_count=4, suppression_ms=0), seq)
    assert dets and dets[0][0] == 3 * HOP
    dets = feed(make(minimum_count=2, suppression_ms=0), seq)
    # Two results exist at 100 ms, but they span 100 ms < a quarter of the 500 ms window.
    assert dets[0][0] == 2 * HOP


def test_window_after_a_stall_needs_min_count_again():
    rc = make(minimum_count=3)
    assert feed(rc, [("yes", 0.99)] * 4)  # fires
    rc2 = make(minimum_count=3)
    # Two results, then a gap longer than the window: the old ones fall out, so no decision.
    rc2.process(onehot("no", 0.99), 0)
    rc2.process(onehot("no", 0.99), 100)
    r = rc2.process(onehot("no", 0.99), 2000)
    assert not r.is_new and r.score == 0.0


def test_suppression_blocks_a_different_word_too_soon():
    seq = [("yes", 0.95)] * 5 + [("no", 0.95)] * 8 + [("_silence_", 0.9)] * 15 + [("no", 0.95)] * 6
    long = feed(make(suppression_ms=3000), seq)
    short = feed(make(suppression_ms=500), seq)
    assert [lab for _, lab in long] == ["yes", "no"]  # the first "no" is inside 3 s
    assert long[1][0] >= long[0][0] + 3000
    assert [lab for _, lab in short] == ["yes", "no", "no"]


def test_same_word_repeated_fires_again_only_after_rearming():
    # A long "yeees" (20 hops) fires once even though suppression (1 s) expires during it...
    long_word = [("_silence_", 0.9)] * 5 + [("yes", 0.95)] * 20 + [("_silence_", 0.9)] * 5
    assert [lab for _, lab in feed(make(), long_word)] == ["yes"]
    # ...but "yes" - pause - "yes" fires twice (TF's Python class would give one).
    twice = ([("_silence_", 0.9)] * 5 + [("yes", 0.95)] * 6 + [("_silence_", 0.9)] * 10
             + [("yes", 0.95)] * 6)
    assert [lab for _, lab in feed(make(), twice)] == ["yes", "yes"]


@pytest.mark.parametrize("ignored", ["_silence_", "_unknown_"])
def test_silence_and_unknown_never_fire(ignored):
    rc = make(minimum_count=1, detection_threshold=0.0, suppression_ms=0)
    seq = [(ignored, 0.99)] * 30
    assert feed(rc, seq) == []
    # They still win the average (so the view can show them) ...
    r = rc.process(onehot(ignored, 0.99), 30 * HOP)
    assert r.label == ignored and r.score > 0.9
    # ... and a keyword right after still fires.
    assert [lab for _, lab in feed(rc, [("no", 0.99)] * 8, t0=31 * HOP)] == ["no"]


def test_averaging_rejects_a_single_spike():
    seq = [("_silence_", 0.9)] * 5 + [("yes", 1.0)] + [("_silence_", 0.9)] * 5
    assert feed(make(minimum_count=1), seq) == []


def test_rejects_out_of_order_and_wrong_width():
    rc = make()
    rc.process(onehot("yes"), 500)
    with pytest.raises(ValueError, match="time order"):
        rc.process(onehot("yes"), 400)
    with pytest.raises(ValueError, match="3 scores"):
        rc.process(np.ones(3) / 3, 600)
    with pytest.raises(ValueError, match="every label is ignored"):
        RecognizeCommands(["_silence_", "_unknown_"])


def test_score_wobbling_around_the_threshold_fires_once():
    seq = [("_silence_", 0.9)] * 5 + [("yes", 0.65), ("yes", 0.55)] * 15 + [("_silence_", 0.9)] * 5
    assert [lab for _, lab in feed(make(suppression_ms=500), seq)] == ["yes"]
