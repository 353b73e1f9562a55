"""The bundle's replay memory, mixed-batch CWR*, per-word operating points (issue 17).

Real clips go through the shipped bundle's stages (``app_bundle``); the algorithmic checks
(reservoir balance, the hand-computed mixed batch) use small arrays whose answer is known.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from bnnkws.deploy import enroll as E
from bnnkws.deploy.bundle import Bundle, head_logits
from bnnkws.deploy.heads import Embedder
from bnnkws.kws.continual.cwr import CWRStar
from bnnkws.kws.continual.memory import LatentMemory, balanced_draw


@pytest.fixture(scope="module")
def real_clips(sc_v2):
    """Two test-split clips of each of five words and two `_silence_` clips (1 s, 16 kHz)."""
    from bnnkws.frontend.audio import load_audio

    out, labels = [], []
    for lab in ("yes", "no", "stop", "left", "go", "_silence_"):
        for f in sorted((sc_v2 / lab).glob("*.wav"))[:2]:
            out.append(load_audio(f, length=16000))
            labels.append(lab)
    return np.stack(out), labels


def test_shipped_bundle_carries_a_listed_hashed_memory(app_bundle):
    from bnnkws.deploy.memory import MAX_BYTES_SHIPPED, read_memory

    b = Bundle.load(app_bundle)  # verifies every hash, memory.npz included
    info = b.manifest.get("memory")
    if info is None:
        pytest.fail(f"{app_bundle} has no replay memory; add one with `kws memory build`")
    assert info["file"] in b.manifest["files"]
    assert (app_bundle / info["file"]).stat().st_size == b.manifest["files"][info["file"]]["bytes"]
    if app_bundle.name == "default_bundle":
        assert b.manifest["files"][info["file"]]["bytes"] <= MAX_BYTES_SHIPPED
    mem = read_memory(b)
    counts = mem.counts()
    assert set(counts) == set(b.labels)  # every class, _silence_ and _unknown_ included
    assert max(counts.values()) - min(counts.values()) <= 1
    unk = mem.labels == "_unknown_"
    assert len(set(mem.source_words[unk])) > 5  # source words kept (not all "_unknown_")
    assert len(mem.noise) > 0 and np.abs(mem.noise).max() > 0


def test_packed_latents_reproduce_the_head_logits_exactly(app_bundle, real_clips):
    b = Bundle.load(app_bundle)
    audio, labels = real_clips
    feats = Embedder(b)(audio)
    dims = [f.shape[1] for f in feats]
    mem = LatentMemory(b.exits, dims, capacity=64)
    mem.add(feats, labels)
    back = LatentMemory.from_bytes(mem.to_bytes())
    assert list(back.labels) == labels
    x = back.head_inputs()
    for k, f, xk in zip(b.exits, feats, x):
        np.testing.assert_array_equal(head_logits(b.heads[k], xk), head_logits(b.heads[k], f))
    assert mem.store.bytes_per_row == math.ceil(sum(dims) / 8)  # one bit per value


def test_reservoir_is_class_balanced_and_keeps_sources():
    rng = np.random.default_rng(0)
    mem = LatentMemory([1, 2], [5, 11], capacity=90, seed=0)
    sizes = {"a": 600, "b": 120, "c": 20}
    stream = [lab for lab, n in sizes.items() for _ in range(n)]
    for i in rng.permutation(len(stream)):
        lab = stream[i]
        mem.add([rng.standard_normal((1, 5)), rng.standard_normal((1, 11))], [lab],
                [f"src-{lab}"])
    counts = mem.counts()
    assert counts["c"] == 20  # the small class keeps everything
    assert abs(counts["a"] - counts["b"]) <= 1 and counts["a"] + counts["b"] == 70
    assert all(s == f"src-{lab}" for s, lab in zip(mem.source_words, mem.labels))
    # relabel / remove keep the rest intact
    n = mem.relabel(mem.labels == "c", "new")
    assert n == 20 and mem.counts()["new"] == 20
    mem.remove(mem.labels == "new")
    assert "new" not in mem.counts() and len(mem) == 70


def test_balanced_draw_takes_turns():
    y = np.array([0] * 50 + [1] * 3 + [2] * 7)
    idx = balanced_draw(y, 9, np.random.default_rng(0))
    assert sorted(np.bincount(y[idx]).tolist()) == [3, 3, 3]


def test_mixed_batch_cwr_matches_hand_computation():
    # 2 old classes, 1 new; inputs of dimension 2; one epoch of one minibatch: 1 new sample and
    # ratio 2 -> 2 replayed samples, one per old class (balanced turns), lr 0.5.
    cw = np.array([[1.0, -1.0], [0.5, 0.5]])
    cb = np.array([0.1, -0.1])
    h = CWRStar(cw, cb, past=[4, 9], lr=0.5, epochs=1, seed=0)
    h.add_class()
    x_new, y_new = np.array([[1.0, 1.0]]), np.array([2])
    x_rep, y_rep = np.array([[1.0, -1.0], [-1.0, 1.0]]), np.array([0, 1])
    h.fit_mixed(x_new, y_new, x_rep, y_rep, ratio=2.0, batch_new=1, evidence={2: 1})

    # by hand: tw = [cw | 0], one SGD step on the 3 samples, mean gradient
    tw = np.array([[1.0, -1.0, 0.0], [0.5, 0.5, 0.0]])
    tb = np.array([0.1, -0.1, 0.0])
    X = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])
    Y = np.array([2, 0, 1])
    z = X @ tw + tb
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = p.copy()
    d[np.arange(3), Y] -= 1
    tw = tw - 0.5 * X.T @ d / 3
    tb = tb - 0.5 * d.sum(0) / 3
    mean = np.mean(np.concatenate([tw.ravel(), tb]))
    exp_w, exp_b = np.zeros((2, 3)), np.zeros(3)
    for i, (past, cur) in enumerate([(4, 1), (9, 1), (0, 1)]):
        wp = math.sqrt(past / cur)
        old_w = cw[:, i] if i < 2 else np.zeros(2)
        old_b = cb[i] if i < 2 else 0.0
        exp_w[:, i] = (old_w * wp + tw[:, i] - mean) / (wp + 1)
        exp_b[i] = (old_b * wp + tb[i] - mean) / (wp + 1)
    np.testing.assert_allclose(h.cw, exp_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h.cb, exp_b, rtol=1e-5, atol=1e-6)
    assert h.past.tolist() == [4, 9, 1]  # replayed classes are rehearsed, not counted again


def test_runtime_min_exit_matches_the_calibration_rule(app_bundle, real_clips, tmp_path):
    """A label's minimum exit keeps early exits from deciding for it, in the runtime exactly as
    in :func:`bnnkws.kws.continual.operating_point.decide` (which calibration uses)."""
    from bnnkws.deploy.runtime import Detector
    from bnnkws.kws.continual.operating_point import decide

    dst = tmp_path / "b"
    shutil.copytree(app_bundle, dst)
    audio, _ = real_clips
    before = [Detector(dst).classify(audio=a) for a in audio]
    early = [r.label for r in before if r.exit < max(Bundle.load(dst).exits)]
    assert early, "no clip left early; pick clips the bundle is sure of"
    word = max(set(early), key=early.count)
    m = json.loads((dst / "manifest.json").read_text())
    m["words"] = {word: {"threshold": 0.9, "min_exit": max(m["exits"])}}
    (dst / "manifest.json").write_text(json.dumps(m))
    det = Detector(dst)
    after = [det.classify(audio=a) for a in audio]
    assert not [r for r in after if r.label == word and r.exit < max(m["exits"])]
    assert [r.exit for r in after] != [r.exit for r in before]
    b = Bundle.load(dst)
    z = np.stack([det.exit_logits(audio=a) for a in audio])
    exits, probs = decide(z, E._policy(b), E.label_min_exits(b))
    assert exits.tolist() == [r.exit for r in after]
    assert probs.argmax(1).tolist() == [r.label_index for r in after]


def test_listener_uses_per_word_thresholds(app_bundle, tmp_path):
    from types import SimpleNamespace

    from bnnkws.app.commands.listen import build_streamer
    from bnnkws.app.listener.smoothing import RecognizeCommands

    labels = ["_silence_", "_unknown_", "yes", "marvin"]
    probs = np.array([0.05, 0.05, 0.1, 0.8])
    fired = {}
    for thr in (None, 0.85):
        rc = RecognizeCommands(labels, detection_threshold=0.6, minimum_count=3,
                               label_thresholds=None if thr is None else {"marvin": thr})
        fired[thr] = any(rc.process(probs, t * 100.0).is_new for t in range(10))
    assert fired == {None: True, 0.85: False}

    dst = tmp_path / "b"
    shutil.copytree(app_bundle, dst)
    word = Bundle.load(dst).labels[2]
    E.set_operating_point(dst, word, threshold=0.83, min_exit=2)
    info = E.words(dst)
    assert info["operating_points"][word]["threshold"] == 0.83
    args = SimpleNamespace(delta=None, threads=1, backend="auto", hop_ms=100.0,
                           average_window_ms=500.0, threshold=0.6, min_count=3,
                           suppression_ms=1500.0, gate="none", gate_margin_db=0.0,
                           mass_threshold=0.0)
    det, streamer = build_streamer(dst, args)
    t = dict(zip(streamer.smoother.labels, streamer.smoother._thresholds))
    assert t[word] == 0.83 and t[det.labels[3]] == 0.6
    assert det.min_exits[2] == 2


def test_memory_build_cli_adds_a_memory_and_keeps_every_other_file(app_bundle, sc_v2,
                                                                    tmp_path, capsys):
    from bnnkws.app.cli import main
    from bnnkws.deploy.memory import read_memory

    dst = tmp_path / "b"
    shutil.copytree(app_bundle, dst)
    m = json.loads((dst / "manifest.json").read_text())
    if "memory" in m:  # start from a bundle without one, as an older export is
        (dst / m["memory"]["file"]).unlink()
        del m["files"][m["memory"]["file"]], m["memory"]
        (dst / "manifest.json").write_text(json.dumps(m))
    before = {p.name: p.read_bytes() for p in dst.iterdir() if p.name != "manifest.json"}
    assert main(["memory", "build", str(dst), "--data", str(sc_v2), "--capacity", "48",
                 "--max-clips", "120", "--noise-windows", "2"]) == 0
    assert "memory: 48 samples" in capsys.readouterr().out
    b = Bundle.load(dst)
    assert {n: (dst / n).read_bytes() for n in before} == before
    mem = read_memory(b)
    assert len(mem) == 48 and len(mem.noise) == 2 and b.manifest["memory"]["samples"] == 48
    assert main(["memory", "build", str(dst), "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_enrolment_with_replay_imports_no_tensorflow(app_bundle, sc_v1_sample, tmp_path):
    """Mixed-batch enrolment, calibration and the memory run where only numpy and the
    interpreter exist (the Pi package)."""
    import subprocess
    import sys

    dst = tmp_path / "b"
    shutil.copytree(app_bundle, dst)
    takes = sorted((sc_v1_sample / "marvin").glob("*.wav"))[:4]
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "from bnnkws.deploy import enroll as E\n"
        f"r = E.enroll({str(dst)!r}, 'marvin', E.load_clips({[str(t) for t in takes]!r}))\n"
        "E.forget(%r, 'marvin')\n"
        "bad = sorted(m for m in ('tensorflow', 'tf_keras', 'larq', 'keras') if m in sys.modules)\n"
        "print('REPLAYED', r.replayed, 'BAD', bad)\n" % str(dst))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("REPLAYED")][0]
    assert line.endswith("BAD []"), line
    if Bundle.load(app_bundle).manifest.get("memory"):
        assert int(line.split()[1]) > 0


def test_forget_restores_the_training_samples_the_word_displaced(sc_v1_sample, tmp_path):
    """Enrolling into a full memory pushes training samples out; forgetting the word must
    give back the memory the bundle had, sample for sample (the shipped bundle: its memory
    is full)."""
    from bnnkws.deploy.memory import read_memory

    dst = tmp_path / "b"
    shutil.copytree(Path(__file__).resolve().parents[1] / "app" / "default_bundle", dst)
    before = read_memory(Bundle.load(dst))
    assert len(before) == before.capacity  # full: every new sample displaces one

    def rows(mem):
        n = len(mem)
        return sorted(zip(map(bytes, mem.store.bits[:n]), mem.labels.tolist(),
                          mem.kinds.tolist(), mem.source_words.tolist()))

    takes = sorted((sc_v1_sample / "marvin").glob("*.wav"))[:5]
    E.enroll(dst, "marvin", E.load_clips([str(t) for t in takes]))
    during = read_memory(Bundle.load(dst))
    assert (during.kinds != "train").sum() > 0 and len(during.parked["by"]) > 0
    assert (during.kinds == "train").sum() < (before.kinds == "train").sum()
    E.forget(dst, "marvin")
    after = read_memory(Bundle.load(dst))
    assert len(after) == len(before) and len(after.parked["by"]) == 0
    assert rows(after) == rows(before)
