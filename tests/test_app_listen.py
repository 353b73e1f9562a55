"""The streaming detection path: ring buffer, hop placement, file/fast equivalence, CLI errors."""
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from bnnkws.app.listener.listen import FrameRing, StreamingDetector, run_stream
from bnnkws.app.listener.smoothing import RecognizeCommands
from bnnkws.app.listener.sources import ArraySource, FileSource
from bnnkws.frontend.audio import load_audio
from bnnkws.frontend.config import DEFAULT_FRONTEND
from bnnkws.frontend.reference import log_mel

REPO = Path(__file__).resolve().parents[1]
LABELS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
          "_silence_", "_unknown_"]


class SpyDetector:
    """Records the features the streaming path hands to the runtime (classify(features=...))."""

    labels = LABELS

    def __init__(self):
        self.seen = []

    def classify(self, audio=None, features=None):
        assert audio is None
        self.seen.append(np.array(features, copy=True))
        p = np.full(len(LABELS), 1.0 / len(LABELS))
        return SimpleNamespace(label=LABELS[0], label_index=0, probs=p, exit=1, entropy=1.0,
                               stage_ms=[0.1])


def test_frame_ring_keeps_the_last_frames_in_order():
    ring = FrameRing(5, 2)
    for i in range(13):
        ring.push(np.array([i, -i], np.float32))
        if i >= 4:
            np.testing.assert_array_equal(ring.window()[:, 0], np.arange(i - 4, i + 1))
    assert ring.full and ring.total == 13
    with pytest.raises(ValueError):
        ring.window()[0, 0] = 1.0  # read-only: the runtime must not scribble on the history


def _speech(sc_v2, n=3):
    words = ["yes", "no", "stop", "go", "left"]
    clips = [sorted((sc_v2 / w).glob("*.wav"))[0] for w in words[:n]]
    return np.concatenate([load_audio(c) for c in clips]).astype(np.float32)


@pytest.mark.parametrize("block", [160, 777, 1600, 16000])
def test_every_hop_sees_the_reference_features_of_the_last_second(sc_v2, block):
    y = _speech(sc_v2)  # 3 s of real speech
    spy = SpyDetector()
    sd = StreamingDetector(spy, hop_ms=100)
    hops = []
    for i in range(0, y.size, block):
        hops += sd.push(y[i : i + block])
    cfg = DEFAULT_FRONTEND
    # First hop once a full second exists, then every 100 ms (10 frames) of audio.
    n_frames = 1 + (y.size - cfg.win_length) // cfg.hop_length
    expected_hops = 1 + (n_frames - cfg.num_frames) // 10
    assert len(hops) == len(spy.seen) == expected_hops
    for k, (hop, feats) in enumerate(zip(hops, spy.seen)):
        first = k * 10  # first frame of the classified second
        start = first * cfg.hop_length
        ref = log_mel(y[start : start + cfg.clip_samples])
        assert feats.shape == (98, 64)
        np.testing.assert_allclose(feats, ref, atol=1e-4)
        # Stream time of a hop = end of the last frame of the classified second.
        assert hop.time_s == pytest.approx((start + 97 * cfg.hop_length + cfg.win_length)
                                           / cfg.sample_rate)


def test_hop_must_be_a_whole_number_of_frames():
    with pytest.raises(ValueError, match="multiple of the 10 ms"):
        StreamingDetector(SpyDetector(), hop_ms=25)


def test_duration_limit_and_summary(sc_v2):
    y = _speech(sc_v2)
    sd = StreamingDetector(SpyDetector(), hop_ms=200)
    summary = run_stream(iter(ArraySource(y, block_ms=30)), sd, duration_s=2.0)
    assert summary.stream_s == pytest.approx(2.0)
    assert summary.hops == 1 + (1 + (32000 - 400) // 160 - 98) // 20
    assert "2.0 s of audio" in summary.text()


def _detections(streamer, source, **kw):
    streamer.reset()
    return run_stream(iter(source), streamer, **kw).detections


def test_file_in_real_time_equals_fast(app_bundle, keyword_sequence, tmp_path):
    from bnnkws.deploy.runtime import Detector

    det = Detector(app_bundle)
    streamer = StreamingDetector(det, RecognizeCommands(det.labels), hop_ms=100)
    path, events = keyword_sequence
    fast = _detections(streamer, FileSource(path, block_ms=100, realtime=False))
    real = _detections(streamer, FileSource(path, block_ms=50, realtime=True))
    assert [(round(d.time_s, 3), d.label) for d in fast] == \
        [(round(d.time_s, 3), d.label) for d in real]
    # ... and the stream really contains detections of the words played, in order.
    assert [d.label for d in fast] == [e["label"] for e in events]


def test_cli_listen_json_on_a_file(app_bundle, keyword_sequence):
    path, events = keyword_sequence
    proc = subprocess.run(
        [sys.executable, "-m", "bnnkws.app", "listen", str(app_bundle), "--input", str(path),
         "--fast", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["label"] for x in lines] == [e["label"] for e in events]
    for x, e in zip(lines, events):
        assert set(x) == {"time_s", "label", "probability", "exit", "latency_ms", "delay_ms"}
        assert x["delay_ms"] >= 0
        assert abs(x["time_s"] - e["end_s"]) <= 0.75  # bench-stream's (and TF's) tolerance
        # exit 0: the hop skipper interpolated the hop that fired (no stage ran)
        assert 0.0 < x["probability"] <= 1.0 and x["exit"] >= 0 and x["latency_ms"] > 0
    assert "stopped after" in proc.stderr  # the summary goes to stderr, not stdout


def test_cli_listen_without_any_input_device_says_what_to_do(app_bundle, no_sound_card_env):
    """No sound card: the error names what is missing and how to stream a file instead."""
    proc = subprocess.run([sys.executable, "-m", "bnnkws.app", "listen", str(app_bundle)],
                          capture_output=True, text=True, timeout=60, env=no_sound_card_env)
    assert proc.returncode == 2
    assert "no audio capture device found" in proc.stderr
    assert "kws listen --input clip.wav" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_listen_missing_default_bundle_is_clear(monkeypatch, tmp_path, capsys):
    from bnnkws.app import cli
    from bnnkws.app.commands import listen as cmd_listen

    monkeypatch.setattr(cmd_listen, "default_bundle_path", lambda: tmp_path / "nope")
    rc = cli.main(["listen"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "default bundle is not installed" in err and str(tmp_path / "nope") in err


def test_views_plain_when_piped_and_panel_fits_the_terminal(monkeypatch):
    import io

    from bnnkws.app.listener.listen import Detection, HopResult
    from bnnkws.app.listener.view import JsonView, PlainView, TerminalView, make_view

    assert isinstance(make_view(False, out=io.StringIO()), PlainView)
    assert isinstance(make_view(True, out=io.StringIO()), JsonView)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setenv("LINES", "30")
    out = Tty()
    view = make_view(False, out=out, num_exits=5, threshold=0.6)
    assert isinstance(view, TerminalView)
    view.start("kws listen - test", ["bundle x"])
    det = Detection(2.5, "stop", 0.93, 2, 4.0)
    for i, d in enumerate([None, det, None]):
        view.hop(HopResult(1.0 + i / 10, "stop", 8, 0.9, 2, 0.1, 4.0, 3.0, -20.0, "stop", 0.8, d))
    view.hop(HopResult(1.3, "_silence_", 10, 0.9, 0, 0.0, 0.1, 0.0, -40.0, "stop", 0.5,
                       skipped=True))
    screen = out.getvalue()
    assert "\x1b[" in screen and "stop" in screen and "exit 2/5" in screen
    # the cost line counts the interpolated hop as skipped, not as an exit
    assert view.cost_text().split("  ")[1:] == ["skipped 25%", "e2 75%"]
    # every drawn line fits in 60 columns, so redrawing in place never wraps
    for chunk in screen.split("\x1b[2K")[1:]:
        assert len(chunk.split("\n")[0]) < 60


def test_frame_ring_reads_earlier_windows_within_its_capacity():
    ring = FrameRing(5, 1, capacity=8)
    for i in range(20):
        ring.push(np.array([i], np.float32))
        for lag in range(0, 4):
            if i - lag >= 4:
                np.testing.assert_array_equal(ring.window(lag)[:, 0],
                                              np.arange(i - lag - 4, i - lag + 1))
    with pytest.raises(ValueError, match="lag 4"):
        ring.window(4)


def _hops(det, audio, **kw):
    sd = StreamingDetector(det, RecognizeCommands(det.labels), **kw)
    hops = []
    summary = run_stream(iter(ArraySource(audio, 16000, block_ms=100, realtime=False)), sd,
                         on_hop=hops.append)
    return hops, summary


@pytest.mark.parametrize("max_skip", [1, 3])
def test_hop_skip_interpolates_only_between_idle_hops_and_classifies_the_rest_exactly(
        app_bundle, keyword_sequence, max_skip):
    """Against the same real stream without skipping: the same hops in time order, every hop
    the skipper classified (on time or late from the ring) has exactly the probabilities the
    plain listener computed for that window, an interpolated hop sits in a run of at most
    max_skip between two idle classified hops and carries their linear interpolation, and the
    words are detected as before."""
    from bnnkws.app.listener.gates import HopSkip
    from bnnkws.deploy.runtime import Detector

    path, events = keyword_sequence
    audio = load_audio(path)
    det = Detector(app_bundle)
    skip = HopSkip(det.labels, threshold=0.5, max_skip=max_skip)
    plain, s0 = _hops(det, audio)
    skipped, s1 = _hops(det, audio, skip=skip)
    assert [h.time_s for h in skipped] == [h.time_s for h in plain]
    assert s1.hops == s0.hops and 0 < s1.skipped < s1.hops
    idle = [skip.idle(h.probs) for h in plain]
    run = 0
    for i, h in enumerate(skipped):
        if not h.skipped:
            assert h.exit == plain[i].exit
            np.testing.assert_array_equal(h.probs, plain[i].probs)
            run = 0
            continue
        run += 1
        assert run <= max_skip and h.exit == 0
        j = i - run  # the classified hop before the run, and the one after it
        k = next(n for n in range(i + 1, len(skipped)) if not skipped[n].skipped)
        assert idle[j] and idle[k]
        w = (i - j) / (k - j)
        np.testing.assert_allclose(h.probs, (1 - w) * plain[j].probs + w * plain[k].probs,
                                   atol=1e-12)
    assert [d.label for d in s1.detections] == [e["label"] for e in events]
    assert all(0 <= d.delay_ms <= 100 * max_skip for d in s1.detections)



def test_enrolment_threshold_sweep_replays_the_listeners_own_detections(app_bundle,
                                                                        keyword_sequence):
    """bench-enroll's threshold sweep re-runs the smoother on the hops the listener recorded:
    at the listener's own thresholds it must give exactly the live detections, and a higher
    threshold for the words can only remove detections of them."""
    from bnnkws.app.bench.enroll import _stream, replay_detections

    path, events = keyword_sequence
    live, summary, hops, args, labels = _stream(app_bundle, load_audio(path))
    assert len(hops) == summary.hops and live
    assert replay_detections(hops, labels, args, {}) == live
    words = sorted({lab for _, lab in live})
    strict = replay_detections(hops, labels, args, {w: 0.999 for w in words})
    assert len(strict) < len(live)


def test_enrolment_diagnosis_says_what_misses_were_heard_as_and_where_false_accepts_fell(
        app_bundle, keyword_sequence):
    """bench-enroll's diagnosis on real hops: with no detections every utterance is a miss and
    the listener heard each as its own word (the fixture's clips are all recognised); with the
    live detections nothing is missed; a detection inside another utterance is a false accept
    on that utterance's source, one far from speech on background."""
    from bnnkws.app.bench.enroll import Event, _stream, diagnose

    path, evs = keyword_sequence
    live, _, hops, _, labels = _stream(app_bundle, load_audio(path))
    events = [Event(e["label"], "speech_commands", e["start_s"], e["end_s"]) for e in evs]
    words = sorted({e.label for e in events})
    none = diagnose([], hops, labels, events, words)
    for w in words:
        assert none[w]["missed_as"] == {w: sum(e.label == w for e in events)}
        assert none[w]["false_accepts_on"] == {}
    found = diagnose(live, hops, labels, events, words)
    assert all(found[w]["missed_as"] == {} for w in words)

    w0, other = events[0].label, events[1]
    inside = other.end_s - 0.2  # past the window in which a detection counts for events[0]
    assert other.label != w0 and inside - events[0].start_s > 2.5
    as_negative = [Event("", "fsdd:three", other.start_s, other.end_s) if e is other else e
                   for e in events]
    wrong = live + [(inside, w0), (events[-1].end_s + 30.0, w0)]
    d = diagnose(sorted(wrong), hops, labels, as_negative, [w0])
    assert d[w0]["false_accepts_on"] == {"fsdd:three": 1, "background": 1}
    d = diagnose(sorted(wrong), hops, labels, events, [w0])  # on another word's utterance
    assert d[w0]["false_accepts_on"] == {f"{other.label} (enrolled)": 1, "background": 1}


def test_enrolment_snr_by_source_is_the_nominal_snr_moved_by_each_corpus_level():
    from bnnkws.app.bench.enroll import Event, snr_by_source

    events = [Event("zero", "fsdd", 0, 1, 0.25), Event("", "speech_commands:yes", 2, 3, 1.0),
              Event("", "speech_commands:no", 4, 5, 1.0), Event("zero", "fsdd", 6, 7, 0.25)]
    got = snr_by_source(events, 10.0)
    assert got == pytest.approx({"new:fsdd": 10 + 10 * np.log10(0.25 / 0.625),
                                 "other:speech_commands": 10 + 10 * np.log10(1 / 0.625)})


# ---- adopting a changed bundle while listening (issue 40: `kws serve` enrols without a restart) ----
def _default_streamer(bundle):
    from bnnkws.app.cli import build_parser
    from bnnkws.app.commands.listen import build_streamer

    args = build_parser().parse_args(["listen", str(bundle), "--fast"])
    return build_streamer(bundle, args)[1]


@pytest.mark.parametrize("cut_s", [0.5, 2.35, 3.9, 5.0])
def test_adopting_a_detector_of_the_same_bundle_mid_stream_changes_no_detection(
        app_bundle, keyword_sequence, cut_s):
    """The frontend, ring, smoother window and gate state carry over: a listener that adopts
    a new streamer at any block (inside a word too) detects exactly what it did without."""
    path, events = keyword_sequence
    y = load_audio(path)
    ref = run_stream(iter(ArraySource(y, block_ms=50)), _default_streamer(app_bundle))
    assert [d.label for d in ref.detections] == [e["label"] for e in events]
    live = _default_streamer(app_bundle)
    late = []

    def blocks():
        for i, block in enumerate(ArraySource(y, block_ms=50)):
            if i == int(cut_s * 20):
                late.extend(h.detection for h in live.adopt(_default_streamer(app_bundle))
                            if h.detection is not None)
            yield block

    got = late + run_stream(blocks(), live).detections
    assert sorted((round(d.time_s, 3), d.label) for d in got) == \
        [(round(d.time_s, 3), d.label) for d in ref.detections]


def test_the_smoother_carries_its_window_over_to_new_labels():
    """A word enrolled while listening: results are mapped by label name (the new word scores
    0 in them), the last detection and the word waiting to be re-armed carry over."""
    old = RecognizeCommands(LABELS, minimum_count=1, suppression_ms=0)
    p = np.zeros(len(LABELS))
    p[LABELS.index("go")] = 0.9
    p[LABELS.index("_unknown_")] = 0.1
    for t in (0, 100, 200):
        r = old.process(p, t)
    assert r.label == "go"
    labels = [lab for lab in LABELS if lab != "yes"] + ["marvin"]  # one forgotten, one enrolled
    new = RecognizeCommands(labels, minimum_count=1, suppression_ms=0)
    new.continue_from(old)
    q = np.zeros(len(labels))
    q[labels.index("go")] = 0.9
    q[labels.index("_unknown_")] = 0.1
    r = new.process(q, 300)
    # "go" fired before the change and is still waiting to be re-armed: it does not fire again
    assert r.label == "go" and r.score == pytest.approx(0.9) and not r.is_new
    q = np.zeros(len(labels))
    q[labels.index("marvin")] = 1.0
    fired = [new.process(q, t) for t in (400, 500, 600, 700, 800)]
    assert [r.label for r in fired if r.is_new] == ["marvin"]  # its own unit, its own detection
    assert fired[-1].score == pytest.approx(1.0)  # the results from before it aged out
    with pytest.raises(ValueError, match="frontend or hop"):
        sd = StreamingDetector(SpyDetector(), hop_ms=100)
        sd.adopt(StreamingDetector(SpyDetector(), hop_ms=200))
