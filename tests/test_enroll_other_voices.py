"""An enrolled word heard in other voices (issue 39): the few-shot column rules, the
vocal-tract warp of the takes, the enrolment settings a bundle carries, the pull measured by
`kws bench-enroll`, and weight decay against the previous rule on real FSDD speakers.

Everything is seeded: the same draws every run, and the verdict on real clips is a sum over
three digits, each enrolled from one speaker and tested on the three others.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bnnkws.deploy import enroll as E
from bnnkws.deploy.bundle import Bundle, head_logits
from bnnkws.kws.continual import fewshot as FS


# ---------------------------------------------------------------------------------------------
# the column rules on arrays whose answer is known
# ---------------------------------------------------------------------------------------------
def test_fit_affine_recovers_the_scale_and_bias_that_made_the_labels():
    rng = np.random.default_rng(0)
    n, c = 4000, 4
    z = rng.normal(0, 1.5, (n, c))
    a_true, c_true = 1.8, -0.7
    zt = z.copy()
    zt[:, 3] = a_true * z[:, 3] + c_true
    p = np.exp(zt - zt.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(c, p=q) for q in p])
    # class-balanced weighting changes the optimum's bias by log(prior ratio); undo it by
    # keeping each class's share equal in the draw
    counts = np.bincount(y, minlength=c)
    keep = np.concatenate([np.flatnonzero(y == k)[:counts.min()] for k in range(c)])
    a, b = FS.fit_affine(z[keep], y[keep], 3, ridge=0.0)
    assert abs(a - a_true) < 0.25 and abs(b - c_true) < 0.35, (a, b)
    # folded into a head, it gives the corrected logits
    w = rng.normal(size=(6, c)).astype(np.float32)
    bias = rng.normal(size=c).astype(np.float32)
    x = np.sign(rng.normal(size=(5, 6))).astype(np.float32)
    w2, b2 = FS.apply_affine(w, bias, 3, a, b)
    np.testing.assert_allclose((x @ w2 + b2)[:, 3], a * (x @ w + bias)[:, 3] + b, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_array_equal((x @ w2 + b2)[:, :3], (x @ w + bias)[:, :3])


def test_fit_affine_leaves_a_class_alone_without_both_kinds_of_sample():
    z = np.zeros((5, 3))
    assert FS.fit_affine(z, np.zeros(5, int), 2) == (1.0, 0.0)
    assert FS.fit_affine(z, np.full(5, 2), 2) == (1.0, 0.0)


def test_imprinted_column_is_popcount_matching_against_the_takes():
    """On +-1 codes the prototype column ranks clips exactly by their mean Hamming distance
    to the takes' codes: (D - x . mean(t)) / 2."""
    rng = np.random.default_rng(1)
    d = 64
    takes = np.sign(rng.normal(size=(5, d))).astype(np.float32)
    clips = np.sign(rng.normal(size=(40, d))).astype(np.float32)
    col = FS.imprint(takes, norm=3.0)
    assert np.linalg.norm(col) == pytest.approx(3.0, rel=1e-5)
    hamming = np.array([[np.count_nonzero(c != t) for t in takes] for c in clips]).mean(1)
    score = clips @ col
    np.testing.assert_allclose(hamming, (d - clips @ takes.mean(0)) / 2, atol=1e-4)
    g = 3.0 / np.linalg.norm(takes.mean(0))  # the score falls as the mean distance grows
    np.testing.assert_allclose(score, g * (d - 2 * hamming), rtol=1e-4, atol=1e-4)
    # weight aligning: a column and its bias rescaled to the old columns' norm
    w = np.ones((d, 3), np.float32)
    w[:, 2] *= 5
    b = np.array([0.0, 0.0, 2.0], np.float32)
    ref = FS.old_norm(w, [0, 1])
    w2, b2 = FS.align_norm(w, b, 2, ref)
    assert np.linalg.norm(w2[:, 2]) == pytest.approx(ref) and b2[2] == pytest.approx(0.4)


# ---------------------------------------------------------------------------------------------
# vocal-tract warp
# ---------------------------------------------------------------------------------------------
def _centroid(y, sr=16000):
    s = np.abs(np.fft.rfft(y))
    f = np.linspace(0, sr / 2, len(s))
    return float((s * f).sum() / s.sum())


def test_vtlp_moves_formants_and_keeps_duration(fsdd):
    from bnnkws.frontend.audio import load_audio

    y = load_audio(fsdd / "4_theo_0.wav", sr=16000, length=16000)
    np.testing.assert_allclose(E.vtlp(y, 1.0), y, atol=1e-5)
    up, down = E.vtlp(y, 1.15), E.vtlp(y, 0.87)
    assert up.shape == down.shape == y.shape and up.dtype == np.float32
    assert _centroid(down) < _centroid(y) < _centroid(up)
    # the loud part stays where it was (duration unchanged, unlike speed/pitch resampling)
    env = lambda v: np.convolve(v ** 2, np.ones(800), "same")  # noqa: E731
    assert abs(int(np.argmax(env(up))) - int(np.argmax(env(y)))) < 800
    rng = np.random.default_rng(0)
    a = E.augment_takes(y[None], 3, np.zeros((0, 16000)), rng, warp=(0.87, 1.15))
    b = E.augment_takes(y[None], 3, np.zeros((0, 16000)), np.random.default_rng(0),
                        warp=(0.87, 1.15))
    assert a.shape == (3, 16000) and np.array_equal(a, b)  # seeded: the same copies


# ---------------------------------------------------------------------------------------------
# settings: code defaults, the bundle's manifest, the caller
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def bundle_copy(app_bundle, tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(app_bundle, dst)
    return dst


def _set_manifest(path: Path, **entries):
    m = json.loads((path / "manifest.json").read_text())
    m.update(entries)
    (path / "manifest.json").write_text(json.dumps(m))


def test_enrolment_settings_come_from_the_caller_the_manifest_then_the_code(bundle_copy):
    b = Bundle.load(bundle_copy)
    d = E.DEFAULT_SETTINGS
    assert E.settings(b) == {"rule": d["rule"], "warp": tuple(d["warp"]) if d["warp"] else None,
                             "weight_decay": float(d["weight_decay"]),
                             "margin": float(d["margin"]), "margin_against": "all"}
    _set_manifest(bundle_copy, enrolment_settings={"rule": "cwr+bic", "warp": [0.9, 1.1],
                                                   "weight_decay": 0.03, "margin": 2,
                                                   "margin_against": "unknown"})
    b = Bundle.load(bundle_copy)
    assert E.settings(b) == {"rule": "cwr+bic", "warp": (0.9, 1.1), "weight_decay": 0.03,
                             "margin": 2.0, "margin_against": "unknown"}
    assert E.settings(b, rule="imprint", warp=(1.0, 1.0))["rule"] == "imprint"
    assert E.settings(b, warp=(1.0, 1.0))["warp"] is None  # "none" overrides the manifest
    _set_manifest(bundle_copy, enrolment_settings={"rule": "magic"})
    with pytest.raises(E.EnrolmentError, match="'magic' is not one of"):
        E.settings(Bundle.load(bundle_copy))
    _set_manifest(bundle_copy, enrolment_settings={"lr": 1})
    with pytest.raises(E.EnrolmentError, match=r"enrolment_settings has unknown keys \['lr'\]"):
        E.settings(Bundle.load(bundle_copy))
    with pytest.raises(E.EnrolmentError, match="warp must be"):
        E.settings(b, warp=(1.2, 0.8))
    with pytest.raises(E.EnrolmentError, match="margin against must be one of all, unknown"):
        E.settings(b, margin_against="old")


# ---------------------------------------------------------------------------------------------
# the pull, as `kws bench-enroll` reports it
# ---------------------------------------------------------------------------------------------
def test_pull_reports_margins_and_top_shares_per_exit(app_bundle):
    from bnnkws.app.bench.enroll import pull

    b = Bundle.load(app_bundle)
    rng = np.random.default_rng(2)
    feats = [np.sign(rng.normal(size=(12, np.asarray(b.heads[k]["kernel"]).shape[0])))
             .astype(np.float32) for k in b.exits]
    word = "yes"  # any label: the arithmetic is the same for an enrolled one
    p = pull(b, feats, word, enrolled=[word])
    k, u, s = (b.labels.index(x) for x in (word, "_unknown_", "_silence_"))
    old = [j for j in range(len(b.labels)) if j not in (k, u, s)]
    for e, ex in enumerate(b.exits):
        z = head_logits(b.heads[ex], feats[e])
        assert p["word_minus_unknown"][e] == pytest.approx(np.median(z[:, k] - z[:, u]), abs=1e-3)
        assert p["word_minus_old"][e] == pytest.approx(np.median(z[:, k] - z[:, old].max(1)),
                                                       abs=1e-3)
        top = z.argmax(1)
        shares = [p[key][e] for key in ("top_word", "top_unknown", "top_silence", "top_old",
                                        "top_other_new")]
        assert sum(shares) == pytest.approx(1.0, abs=1e-3)
        assert p["top_unknown"][e] == pytest.approx(np.mean(top == u), abs=1e-4)


# ---------------------------------------------------------------------------------------------
# weight decay against the previous rule, on real speakers
# ---------------------------------------------------------------------------------------------
SPEAKERS = ("jackson", "nicolas", "theo", "yweweler")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# each digit enrolled from 5 takes of one speaker, the speakers taking turns
PAIRS = [(d, SPEAKERS[(d + 1) % 4]) for d in range(10)]
OLD_RULE = {"rule": "cwr", "weight_decay": 0.0, "warp": (1.0, 1.0), "margin": 0.0}


def _clip(path):
    from bnnkws.frontend.audio import load_audio, loudest_window

    return loudest_window(load_audio(path, sr=16000), 16000)


def _heard(bundle, feats, word):
    """What the runtime's rule makes of clips: the word, above its threshold (bool per clip)."""
    from bnnkws.kws.continual.operating_point import decide

    z = np.stack([head_logits(bundle.heads[k], f) for k, f in zip(bundle.exits, feats)], 1)
    _, p = decide(z, E._policy(bundle), E.label_min_exits(bundle))
    k = bundle.labels.index(word)
    return (p.argmax(1) == k) & (p[:, k] > E.word_settings(bundle)[word]["threshold"])


def test_weight_decay_hears_other_speakers_as_often_and_negatives_stay_out(app_bundle, fsdd, sc_v2,
                                                                   tmp_path):
    """Ten FSDD digits, each enrolled (under its own name) from 5 takes of one speaker, with
    weight decay 0.01 and with the previous rule (CWR* without weight decay); heard = the
    early-exit rule's label is the digit above its calibrated threshold. On 4 takes by each of
    the 3 other speakers (120 in all) weight decay hears at least as many, and of the other
    speakers' other digits plus 60 Speech Commands words (78 per digit, 780) both rules accept
    under 2 %. Measured: on the model shipped until 2026-12-07, 72 heard against 71 and 6
    negatives against 10; on the multi-corpus model shipped since, 63 against 61 and 7 against
    6 (docs/results.md section 5: weight decay's lower false accepts do not carry over to this
    backbone). The runtime (:class:`Detector`) decides as the heads do. Seeds fixed: the same
    enrolments every run."""
    from bnnkws.deploy.heads import Embedder
    from bnnkws.deploy.runtime import Detector

    if app_bundle.name != "default_bundle":
        pytest.skip("measured on the shipped bundle; a stand-in bundle hears too little")
    embed = Embedder(Bundle.load(app_bundle))
    words = sorted(p for p in sc_v2.glob("*/*.wav") if p.parent.name != "_silence_")[::25][:60]
    sc_feats = embed(np.stack([_clip(p) for p in words]))
    total = {"old": [0, 0], "new": [0, 0]}
    n_pos = n_neg = 0
    for d, spk in PAIRS:
        takes = np.stack([_clip(fsdd / f"{d}_{spk}_{i}.wav") for i in range(5)])
        others = [s for s in SPEAKERS if s != spk]
        pos = embed(np.stack([_clip(fsdd / f"{d}_{o}_{i}.wav") for o in others
                              for i in range(5, 9)]))
        neg = embed(np.stack([_clip(fsdd / f"{(d + j) % 10}_{o}_{i}.wav") for o in others
                              for j in (1, 3, 6) for i in range(5, 7)]))
        neg = [np.concatenate([a, b]) for a, b in zip(neg, sc_feats)]
        n_pos, n_neg = n_pos + len(pos[0]), n_neg + len(neg[0])
        for tag, kw in (("old", OLD_RULE), ("new", {"weight_decay": 0.01})):
            work = tmp_path / f"{tag}{d}"
            shutil.copytree(app_bundle, work)
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                E.enroll(work, DIGITS[d], takes, seed=0, **kw)
            b = Bundle.load(work)
            total[tag][0] += int(_heard(b, pos, DIGITS[d]).sum())
            total[tag][1] += int(_heard(b, neg, DIGITS[d]).sum())
            if tag == "new" and d == 0:  # the deployed runtime decides as the heads do
                det = Detector(work)
                for i in range(3):
                    clip = _clip(fsdd / f"0_{others[i]}_5.wav")
                    f = embed(clip[None])
                    z = np.stack([head_logits(b.heads[k], x) for k, x in zip(b.exits, f)], 1)
                    from bnnkws.kws.continual.operating_point import decide

                    ex, p = decide(z, E._policy(b), E.label_min_exits(b))
                    r = det.classify(audio=clip)
                    assert (r.label, r.exit) == (b.labels[int(p[0].argmax())], int(ex[0]))
            shutil.rmtree(work)
    (old_pos, old_neg), (new_pos, new_neg) = total["old"], total["new"]
    assert new_pos >= old_pos, total
    assert max(new_neg, old_neg) <= 0.02 * n_neg, (total, n_neg)
    assert n_pos == 120 and n_neg == 780, (n_pos, n_neg)


def test_a_margin_against_unknown_moves_the_word_away_from_unknown_only():
    """``fit_mixed(margin=..., margin_against=[u])``: the word learns to beat class ``u`` by
    more than without a margin, and its lead over the other classes grows less than with a
    margin against all of them."""
    from bnnkws.kws.continual.cwr import CWRStar

    rng = np.random.default_rng(3)
    d = 32
    centres = np.sign(rng.normal(size=(3, d)))
    def draw(c, n):  # noqa: E306
        x = np.repeat(centres[c][None], n, 0)
        return np.where(rng.random(x.shape) < 0.3, -x, x).astype(np.float32)
    x_rep = np.concatenate([draw(1, 40), draw(2, 40)])
    y_rep = np.repeat([1, 2], 40)
    w0 = np.zeros((d, 3), np.float32)
    w0[:, 1:] = 0.05 * centres[1:].T
    x_new = draw(0, 16)
    y_new = np.zeros(16, int)
    gaps = {}
    for name, kw in (("none", {}), ("all", {"margin": {0: 3.0}}),
                     ("unknown", {"margin": {0: 3.0}, "margin_against": [1]})):
        h = CWRStar(w0, np.zeros(3), past=np.array([0, 50, 50]), lr=0.05, epochs=10, seed=0)
        h.fit_mixed(x_new, y_new, x_rep, y_rep, ratio=2, batch_new=8, **kw)
        z = h.logits(x_new)
        gaps[name] = (float(np.mean(z[:, 0] - z[:, 1])), float(np.mean(z[:, 0] - z[:, 2])))
    assert gaps["unknown"][0] > gaps["none"][0]
    assert gaps["unknown"][1] - gaps["none"][1] < gaps["all"][1] - gaps["none"][1]


def test_cli_enroll_synth_adds_the_typed_word_in_other_voices(bundle_copy, sc_v1_sample,
                                                                tmp_path, capsys):
    """`kws enroll --synth N`: N espeak-ng/flite takes of the typed word join the user's 5,
    each in its own voice, and the word is enrolled from all of them."""
    from bnnkws.app.cli import main
    from bnnkws.kws.data import synth

    word = "marvin"
    d = tmp_path / "takes"
    d.mkdir()
    for f in sorted((sc_v1_sample / word).glob("*.wav"))[:5]:
        shutil.copy(f, d / f.name)
    n_own = 5
    extra, voices = synth.takes(word, 6, seed=0)
    assert extra.shape == (6, 16000) and len(set(voices)) == 6
    E.check_audio(extra, voices)  # none too quiet or clipped to enrol
    assert main(["enroll", str(bundle_copy), "--word", word, "--from", str(d),
                 "--synth", "6"]) == 0
    out = capsys.readouterr().out
    assert f"from {n_own + 6} examples" in out
    m = Bundle.load(bundle_copy).manifest
    assert m["cwr_past"][word] == n_own + 6
    assert m["enrolment"][-1]["source"].endswith("+synth")
    # the same draw every time (seeded), so re-enrolling is reproducible
    again, voices2 = synth.takes(word, 6, seed=0)
    np.testing.assert_array_equal(extra, again)
    assert voices2 == voices
    assert main(["enroll", str(bundle_copy), "--word", "x", "--from", str(d),
                 "--synth", "-1"]) == 2
    assert "--synth" in capsys.readouterr().err
