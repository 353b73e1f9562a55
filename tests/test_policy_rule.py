"""The exit rule on hand-made logits/probabilities: ties, delta 0 and huge, NaN, min_exit,
per-exit delta, score criterion, and decide == decide_batch."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bnnkws.kws.policy import (EXIT_DELTA_GRID, ExitPolicy, PolicyError, decide_batch,
                               delta_for_budget, entropy, exit_deltas_for_budget, format_delta,
                               parse_delta, same_delta, softmax)

LOG = np.log


def logits_of(p):
    """Logits whose softmax is exactly-ish p (p > 0)."""
    return LOG(np.asarray(p, dtype=np.float64))


def test_entropy_values_nats_and_normalised():
    assert entropy([0.5, 0.5], normalized=False) == pytest.approx(np.log(2))
    assert entropy([0.5, 0.5]) == pytest.approx(1.0)
    assert entropy(np.full(35, 1 / 35)) == pytest.approx(1.0)
    assert entropy(np.full(12, 1 / 12), normalized=False) == pytest.approx(np.log(12))
    assert entropy([1.0, 0.0, 0.0]) == 0.0  # 0 log 0 = 0, no NaN
    p = np.array([0.7, 0.2, 0.1])
    expected = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))
    assert entropy(p, normalized=False) == pytest.approx(expected)
    assert entropy(p) == pytest.approx(expected / np.log(3))
    batch = entropy(np.stack([p, [1 / 3] * 3]))
    assert batch.shape == (2,) and batch[1] == pytest.approx(1.0)


def test_first_confident_exit_wins():
    # exit 1 uncertain, exit 2 confident, exit 3 even more confident: leave at 2
    ex = [logits_of([0.4, 0.3, 0.3]), logits_of([0.9, 0.05, 0.05]), logits_of([0.98, 0.01, 0.01])]
    h2 = entropy([0.9, 0.05, 0.05])
    d = ExitPolicy(h2 + 1e-6).decide(ex)
    assert d.exit == 2 and d.label_index == 0
    assert d.entropy == pytest.approx(h2)
    np.testing.assert_allclose(d.probs, [0.9, 0.05, 0.05])
    # strict <: delta exactly equal to exit 2's entropy does not accept it
    assert ExitPolicy(entropy(softmax(ex[1]))).decide(ex).exit == 3


def test_delta_zero_runs_to_last_exit_even_when_one_hot():
    # a one-hot softmax has entropy exactly 0, and 0 < 0 is False
    ex = [np.array([1000.0, 0.0, 0.0]), np.array([0.0, 1000.0, 0.0]), np.array([0.0, 0.0, 5.0])]
    assert entropy(softmax(ex[0])) == 0.0
    d = ExitPolicy(0.0).decide(ex)
    assert d.exit == 3 and d.label_index == 2


def test_huge_delta_stops_at_min_exit():
    ex = [np.zeros(4), np.zeros(4), np.array([9.0, 0, 0, 0])]  # uniform exits: entropy 1
    assert ExitPolicy(1.0).decide(ex).exit == 3  # 1 < 1 is False
    assert ExitPolicy(1.0 + 1e-9).decide(ex).exit == 1
    assert ExitPolicy(1e9).decide(ex).exit == 1
    assert ExitPolicy(1e9, min_exit=2).decide(ex).exit == 2
    # in nats the maximum is log C
    assert ExitPolicy(np.log(4) - 1e-9, normalized=False).decide(ex).exit == 3
    assert ExitPolicy(np.log(4) + 1e-9, normalized=False).decide(ex).exit == 1


def test_min_exit_skips_confident_early_exits():
    ex = [np.array([20.0, 0.0]), np.array([0.0, 20.0]), np.array([0.0, 1.0])]
    assert ExitPolicy(0.5).decide(ex).exit == 1
    d = ExitPolicy(0.5, min_exit=2).decide(ex)
    assert d.exit == 2 and d.label_index == 1
    assert ExitPolicy(0.5, min_exit=3).decide(ex).exit == 3
    ok, _, _ = ExitPolicy(0.5, min_exit=2).accept(1, ex[0])
    assert not ok


def test_per_exit_delta():
    ex = [logits_of([0.8, 0.2]), logits_of([0.8, 0.2]), logits_of([0.6, 0.4])]
    h = entropy([0.8, 0.2])  # ~0.72
    assert ExitPolicy([0.1, h + 0.01, 0.0]).decide(ex).exit == 2
    assert ExitPolicy([h + 0.01, 0.0, 0.0]).decide(ex).exit == 1
    assert ExitPolicy([0.1, 0.1, 0.1]).decide(ex).exit == 3
    with pytest.raises(PolicyError, match="2 entries but the model has 3 exits"):
        ExitPolicy([0.5, 0.5]).decide(ex)


def test_ties_take_the_first_index():
    d = ExitPolicy(0.0).decide([np.array([1.0, 3.0, 3.0, 0.0])])
    assert d.label_index == 1
    d = ExitPolicy(0.0).decide([np.zeros(5)])  # uniform: first class
    assert d.label_index == 0 and d.entropy == pytest.approx(1.0)
    ex, lab, _ = decide_batch(np.array([[[2.0, 2.0, 1.0]], [[0.0, 5.0, 5.0]]]), ExitPolicy(0.0))
    assert lab.tolist() == [0, 1]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_are_rejected_naming_the_exit(bad):
    ex = [np.array([1.0, 2.0]), np.array([0.5, bad])]
    with pytest.raises(ValueError, match="exit 2.*non-finite"):
        ExitPolicy(0.5).decide(ex)
    with pytest.raises(ValueError, match="exit 2"):
        ExitPolicy(0.5).accept(2, ex[1])
    with pytest.raises(ValueError, match="non-finite"):
        decide_batch(np.array(ex)[None], ExitPolicy(0.5))


def test_bad_parameters_are_rejected():
    for kw in (dict(delta=-0.1), dict(delta=np.nan), dict(delta=0.5, criterion="margin"),
               dict(delta=0.5, min_exit=0), dict(delta=0.5, temperatures=[1.0, 0.0])):
        with pytest.raises(ValueError):
            ExitPolicy(**kw)


def test_temperatures_change_the_decision():
    ex = [np.array([2.0, 0.0]), np.array([0.0, 4.0])]
    # T=1 at exit 1: p=(0.88, 0.12), normalised entropy ~0.53
    assert ExitPolicy(0.6).decide(ex).exit == 1
    # a hot temperature flattens exit 1 so it no longer passes
    d = ExitPolicy(0.6, temperatures=[4.0, 1.0]).decide(ex)
    assert d.exit == 2
    np.testing.assert_allclose(d.probs, softmax(ex[1]))
    d1 = ExitPolicy(0.99, temperatures=[4.0, 1.0]).decide(ex)
    np.testing.assert_allclose(d1.probs, softmax(ex[0] / 4.0))


def test_score_criterion():
    ex = [logits_of([0.6, 0.4]), logits_of([0.85, 0.15]), logits_of([0.5, 0.5])]
    assert ExitPolicy(0.8, criterion="score").decide(ex).exit == 2
    assert ExitPolicy(0.6, criterion="score").decide(ex).exit == 1  # >= is inclusive
    assert ExitPolicy(0.9, criterion="score").decide(ex).exit == 3
    assert ExitPolicy(0.0, criterion="score").decide(ex).exit == 1
    assert ExitPolicy(1.01, criterion="score", min_exit=2).decide(ex).exit == 3


def test_accept_last_exit_always():
    pol = ExitPolicy(0.0)
    ok, probs, h = pol.accept(3, np.zeros(3), is_last=True)
    assert ok and h == pytest.approx(1.0) and probs.shape == (3,)
    assert not pol.accept(3, np.zeros(3))[0]


def test_decide_equals_decide_batch_on_random_and_tied_logits():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(400, 5, 12)).astype(np.float32)
    z[:50, :, :2] = 4.0  # exact ties between classes 0 and 1
    z[50:60] = 0.0  # uniform everywhere
    for pol in (ExitPolicy(0.3), ExitPolicy(0.0), ExitPolicy(1e3), ExitPolicy(0.5, min_exit=3),
                ExitPolicy([0.2, 0.3, 0.4, 0.5, 0.6]),
                ExitPolicy(0.7, criterion="score", temperatures=[2, 1.5, 1, 0.8, 0.5]),
                ExitPolicy(1.2, normalized=False)):
        exits, labels, ents = decide_batch(z, pol)
        for i in range(len(z)):
            d = pol.decide(list(z[i]))
            assert (d.exit, d.label_index, d.entropy) == (exits[i], labels[i], ents[i]), (pol, i)
        assert exits.min() >= pol.min_exit


def test_delta_for_budget_meets_target_average_exit():
    rng = np.random.default_rng(1)
    n, e, c = 600, 5, 12
    # later exits more confident, like a trained early-exit model
    z = rng.normal(0, 1, size=(n, e, c)) * (0.5 + np.arange(e))[None, :, None]
    for target in (1.5, 2.0, 3.3, 4.5):
        d = delta_for_budget(z, target)
        avg = decide_batch(z, ExitPolicy(d))[0].mean()
        assert avg <= target + 1e-9
        # the most accurate such delta: a tiny bit smaller delta overshoots the budget
        avg_below = decide_batch(z, ExitPolicy(np.nextafter(d, -1)))[0].mean()
        assert avg_below > target
    assert delta_for_budget(z, 5.0) == 0.0  # everything at the last exit fits
    with pytest.raises(ValueError, match="below the cheapest"):
        delta_for_budget(z, 1.5, min_exit=2)


def test_delta_for_budget_with_latency_and_score():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, size=(300, 4, 10)) * np.array([0.5, 1, 2, 3])[None, :, None]
    lat = [1.0, 2.5, 4.0, 6.0]  # cumulative ms to leave at exit k
    d = delta_for_budget(z, target_latency=3.0, latencies=lat)
    exits = decide_batch(z, ExitPolicy(d))[0]
    assert np.mean(np.take(lat, exits - 1)) <= 3.0
    s = delta_for_budget(z, 2.0, criterion="score")
    assert decide_batch(z, ExitPolicy(s, criterion="score"))[0].mean() <= 2.0
    with pytest.raises(ValueError, match="cumulative"):
        delta_for_budget(z, target_latency=3.0, latencies=[1, 3, 2, 4])


def _early_exit_logits(seed, n=500, e=4, c=6):
    """Clips whose exits grow surer with depth, each exit right on its own random share of the
    clips (as trained early exits are), labels drawn at random."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    z = rng.normal(0, 1, size=(n, e, c))
    for k in range(e):
        right = rng.random(n) < 0.45 + 0.12 * k
        z[right, k, y[right]] += rng.gamma(2.0, 1.0 + k, size=right.sum())
    return z, y


def test_exit_deltas_for_budget_is_the_most_accurate_setting_within_the_budget():
    from itertools import product

    z, y = _early_exit_logits(3, e=3)
    lat = [1.0, 2.0, 4.0]
    grid = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    for target in (1.6, 2.2, 3.0):
        d = exit_deltas_for_budget(z, y, target_latency=target, latencies=lat, grid=grid)
        assert len(d) == 3 and d[-1] == 0.0
        exits, pred, _ = decide_batch(z, ExitPolicy(d))
        assert np.mean(np.take(lat, exits - 1)) <= target + 1e-9
        acc = np.mean(pred == y)
        best = 0.0  # brute force over the same grid
        for combo in product(grid, repeat=2):
            ex, pr, _ = decide_batch(z, ExitPolicy(list(combo) + [0.0]))
            if np.mean(np.take(lat, ex - 1)) <= target + 1e-9:
                best = max(best, np.mean(pr == y))
        assert acc == pytest.approx(best)


def test_exit_deltas_beat_or_equal_every_global_delta_of_the_grid_under_the_same_budget():
    z, y = _early_exit_logits(4)
    for target in (1.8, 2.5, 3.2):  # average exit
        d = exit_deltas_for_budget(z, y, target)
        exits, pred, _ = decide_batch(z, ExitPolicy(d))
        assert exits.mean() <= target + 1e-9
        fits = [np.mean(decide_batch(z, ExitPolicy(g))[1] == y) for g in EXIT_DELTA_GRID
                if decide_batch(z, ExitPolicy(g))[0].mean() <= target + 1e-9]
        assert np.mean(pred == y) >= max(fits) - 1e-12


def test_exit_deltas_for_budget_respects_min_exit_and_refuses_the_unreachable():
    z, y = _early_exit_logits(5)
    d = exit_deltas_for_budget(z, y, 3.0, min_exit=2)
    assert d[0] == 0.0 and decide_batch(z, ExitPolicy(d, min_exit=2))[0].min() >= 2
    with pytest.raises(PolicyError, match="below the cheapest"):
        exit_deltas_for_budget(z, y, 1.5, min_exit=2)
    with pytest.raises(PolicyError, match="labels shape"):
        exit_deltas_for_budget(z, y[:-1], 3.0)
    # nats: the grid is scaled to [0, log C], so the same setting is found as normalised
    dn = exit_deltas_for_budget(z, y, 2.5, normalized=False)
    assert np.allclose(np.array(dn) / np.log(z.shape[-1]), exit_deltas_for_budget(z, y, 2.5))


def test_delta_text_round_trips():
    assert parse_delta("0.25") == 0.25
    assert parse_delta("0.05,0.2,0.6,0.65,0") == [0.05, 0.2, 0.6, 0.65, 0.0]
    assert parse_delta("0.05/0.2/0.6") == [0.05, 0.2, 0.6]
    assert format_delta(0.25) == "0.25" and format_delta([0.05, 0.2, 0.0]) == "0.05/0.2/0"
    assert parse_delta(format_delta([0.05, 0.2, 0.0])) == [0.05, 0.2, 0.0]
    for bad in ("", "a", "0.1,-0.2", "nan"):
        with pytest.raises(PolicyError):
            parse_delta(bad)
    assert same_delta(0.25, 0.25) and not same_delta(0.25, [0.25, 0.25])
    assert same_delta([0.1, 0.0], [0.1, 0.0]) and not same_delta([0.1, 0.0], [0.1, 0.05])


def test_policy_imports_without_tensorflow_or_scipy():
    code = ("import sys, bnnkws.kws.policy as p; import numpy as np; "
            "p.ExitPolicy(0.5).decide([np.zeros(3), np.ones(3)]); "
            "bad = [m for m in ('tensorflow', 'scipy', 'larq') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
