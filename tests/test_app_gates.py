"""Issue 19: the cheap-stream gates, streams in noise, the listener's cost summary, the int8 twin."""
import json
import subprocess
import sys

import numpy as np
import pytest

from bnnkws.app.bench import stream as stream_bench
from bnnkws.app.listener.gates import EnergyGate
from bnnkws.frontend.audio import load_audio
from bnnkws.frontend.streaming import StreamingLogMel

NOISE = "speech_commands_background_noise"


@pytest.fixture(scope="module")
def noise_dir(shared_data):
    path = shared_data / NOISE
    if not path.is_dir():
        pytest.skip(f"{path} not found") if not __import__("os").environ.get("CI") == "true" \
            else pytest.fail(f"{path} not found; under CI=true this is a failure")
    return path


def _frames(audio):
    return StreamingLogMel().push(audio)


def test_energy_gate_spares_background_and_wakes_for_a_word(sc_v2, noise_dir):
    """Steady real noise alone goes quiet after a second; a real keyword over it at 10 dB SNR keeps
    every window that holds it awake; digital silence is quiet."""
    noise = load_audio(noise_dir / "pink_noise.wav")[: 6 * 16000]
    word = load_audio(sorted((sc_v2 / "yes").glob("*.wav"))[0], length=16000, crop="start")
    rms = np.sqrt(np.mean(word ** 2))
    audio = noise / np.sqrt(np.mean(noise ** 2)) * rms / 10 ** (10 / 20)
    audio[3 * 16000: 4 * 16000] += word
    frames = _frames(audio.astype(np.float32))
    gate = EnergyGate(["_silence_", "_unknown_", "yes"], window_frames=98)
    quiet = []
    for f in frames:
        gate.push(f)
        quiet.append(gate.quiet)
    quiet = np.array(quiet)
    assert quiet[150:290].mean() > 0.9, quiet[150:290].mean()  # noise only, after 1.5 s
    # frames whose window (last 98 frames) overlaps the loud part of the word are never gated
    active = [i for i, f in enumerate(frames) if EnergyGate.frame_db(f) > np.median(
        [EnergyGate.frame_db(x) for x in frames[100:290]]) + 15]
    assert active and all(300 - 5 <= i <= 400 for i in active)
    assert not quiet[active[0]: active[-1] + 98].any()
    # digital silence: quiet once a window is full, and the gated hop reports p(_silence_) = 1
    g2 = EnergyGate(["_unknown_", "_silence_", "yes"], window_frames=98)
    for f in _frames(np.zeros(16000 * 2, np.float32)):
        g2.push(f)
    assert g2.quiet and g2.silence_probs.tolist() == [0.0, 1.0, 0.0]  # _silence_, wherever it is
    with pytest.raises(ValueError, match="none of the labels"):
        EnergyGate(["yes", "no"], window_frames=98)


def test_keyword_mass_rule_only_adds_early_stops(app_bundle, sc_v2):
    from bnnkws.deploy.runtime import Detector
    from bnnkws.frontend.reference import log_mel
    from bnnkws.kws.policy import KeywordMassRule, keyword_mass

    det = Detector(app_bundle)
    paths = [sorted((sc_v2 / w).glob("*.wav"))[3] for w in ("_silence_", "_unknown_", "yes",
                                                            "stop", "left", "_silence_")]
    feats = [log_mel(load_audio(p, length=16000)) for p in paths]
    never = KeywordMassRule(det.labels, threshold=0.0)
    some = KeywordMassRule(det.labels, threshold=0.5)
    for x in feats:
        base = det.classify(features=x)
        assert det.classify(features=x, stop=never).exit == base.exit
        r = det.classify(features=x, stop=some)
        assert r.exit <= base.exit
        if r.exit < base.exit:  # it stopped where the keyword mass was low
            assert keyword_mass(r.probs, some.ignored) < 0.5


def test_listen_json_summary_shows_cost_and_gated_share(app_bundle, keyword_sequence):
    path, events = keyword_sequence
    out = {}
    for gate in ("none", "energy"):
        proc = subprocess.run(
            [sys.executable, "-m", "bnnkws.app", "listen", str(app_bundle), "--input", str(path),
             "--fast", "--json", "--gate", gate], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert [json.loads(x)["label"] for x in proc.stdout.splitlines()] == \
            [e["label"] for e in events]
        summary = json.loads(proc.stderr.strip().splitlines()[-1])["summary"]
        assert summary["mean_ms_per_hop"] > 0 and summary["hops"] > 0
        assert sum(summary["shares"].values()) == pytest.approx(1.0, abs=1e-3)
        assert "hops gated or leaving at each exit" in proc.stderr
        out[gate] = summary
    assert out["none"]["gated"] == 0 and out["energy"]["gated"] > 0
    assert out["energy"]["hops"] == out["none"]["hops"]


def test_noise_mixing_hits_the_requested_snr(sc_v2, noise_dir):
    from bnnkws.kws.data import load_dataset

    clips = load_dataset(str(sc_v2)).testing
    s = stream_bench.build_stream(clips, minutes=0.5, seed=2)
    assert s.words is not None and s.keyword_rms > 0
    noises = stream_bench.load_noise(noise_dir)
    assert len(noises) == 6
    track = stream_bench.noise_track(noises, s.words.size, seed=2)
    assert np.sqrt(np.mean(track.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=0.05)
    mixed = stream_bench.mix_at_snr(s.words, track, s.keyword_rms, 10.0)
    added = mixed - s.words
    snr = 20 * np.log10(s.keyword_rms / np.sqrt(np.mean(added.astype(np.float64) ** 2)))
    assert snr == pytest.approx(10.0, abs=0.3)
    assert stream_bench.default_noise_dir(sc_v2) == noise_dir


def test_cli_bench_stream_snr_rows_noise_only_and_gates(app_bundle, sc_v2, noise_dir, tmp_path):
    out = tmp_path / "rep"
    proc = subprocess.run(
        [sys.executable, "-m", "bnnkws.app", "bench-stream", str(app_bundle), "--data",
         str(sc_v2), "--split", "validation", "--minutes", "0.5", "--snr", "10",
         "--noise-only-minutes", "0.5", "--gates", "none,energy", "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((out / "bench_stream.json").read_text())
    md = (out / "bench_stream.md").read_text()
    assert "(validation split of speaker-split seed 0, stream seed 0)" in md  # issue 16.7
    assert "test split" not in md
    rows = {(r["stream"], r["gate"]): r for r in rep["rows"]}
    assert set(rows) == {(s, g) for s in ("clean", "10 dB SNR", "noise only (10 dB level)")
                         for g in ("none", "energy")}
    only = rows[("noise only (10 dB level)", "energy")]
    assert only["keywords"] == 0 and only["correct_pct"] is None
    assert only["hops"] == rows[("noise only (10 dB level)", "none")]["hops"] > 250
    assert only["gated"] > 0 and rows[("10 dB SNR", "none")]["gated"] == 0
    for r in rows.values():
        assert r["mean_hop_latency_ms"] > 0
        assert sum(r["shares"].values()) == pytest.approx(1.0, abs=1e-3)
    assert rep["noise"]["folder"] == str(noise_dir) and "caveat" in rep["noise"]["caveat"]
    assert "| noise only (10 dB level) | energy |" in md


def test_bench_on_a_lean_bundle_says_how_to_get_the_twins(app_bundle, tmp_path):
    """Issue 16.6: the shipped (lean) bundle has no float-32 twin; no nan columns."""
    from bnnkws.deploy.bench import LEAN_NOTE, run_bench, to_markdown
    from bnnkws.deploy.bundle import Bundle

    b = Bundle.load(app_bundle)
    if any(s.float32 for s in b.stages):
        pytest.skip(f"{app_bundle} is not lean")
    md = to_markdown(run_bench(b, runs=3, warmup=1, tune_runs=2, progress=False))
    assert LEAN_NOTE in md and "nan" not in md and "without `--lean`" in md


def test_export_int8_twin_and_bench_it(tiny_bundle, tiny_bundle_keras):
    """The int8 twin (the tiny bundle is exported with it): every op integer, close to the
    float twin on real-ish input, timed by `kws bench` beside LCE with its size."""
    from bnnkws.deploy.bench import run_bench, to_markdown
    from bnnkws.deploy.bundle import Bundle
    from bnnkws.deploy.interpreters import open_file

    cfg, _ = tiny_bundle_keras
    out = tiny_bundle
    b = Bundle.load(out)
    assert all(s.int8 for s in b.stages) and b.stages[0].int8_features
    assert set(b.manifest["int8"]["modes"].values()) <= {"int8", "int8+float"}
    assert b.manifest["int8"]["modes"]["int8/stage2.tflite"] == "int8"
    from bnnkws.frontend.keras_layer import tflite_op_names

    ops = set(tflite_op_names((out / "int8/stage2.tflite").read_bytes()))
    assert "QUANTIZE" in ops and "DEQUANTIZE" in ops
    # int8 stage 2 against the float stage 2 on the same input: quantization error, not garbage
    from bnnkws.deploy.bench import speechlike_clip

    x = open_file(b, b.stages[0].float32, "lce").run(speechlike_clip(cfg.frontend)[None])["fmap"]
    f = open_file(b, b.stages[1].float32, "lce").run(x)["embedding"]
    q = open_file(b, b.stages[1].int8, "lce").run(x)["embedding"]
    assert np.corrcoef(f.ravel(), q.ravel())[0, 1] > 0.9
    res = run_bench(b, runs=3, warmup=1, tune_runs=2, progress=False)
    assert all(r["int8_ms"]["median"] > 0 and r["lce_vs_int8"] > 0 for r in res["exits"])
    assert "int8 twin" in to_markdown(res) and res["lce_vs_int8"] > 0
