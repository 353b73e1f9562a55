"""Temperature scaling and ECE on synthetic logits with a known temperature."""
from __future__ import annotations

import numpy as np
import pytest

from bnnkws.kws.evaluation.calibration import (calibrate_exits, expected_calibration_error,
                                               fit_temperature, fit_temperatures, nll,
                                               store_temperatures)
from bnnkws.kws.policy import softmax


def sample_calibrated(rng, n, c, scale=3.0):
    """Logits g and labels drawn from softmax(g): the model is perfectly calibrated at T=1."""
    g = rng.normal(0, scale, size=(n, c))
    p = softmax(g)
    y = np.array([rng.choice(c, p=row) for row in p])
    return g, y


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_recovers_known_temperature_within_5_percent(t_true):
    rng = np.random.default_rng(int(t_true * 10))
    g, y = sample_calibrated(rng, 6000, 12)
    z = g * t_true  # the network's logits are g*T: dividing by T restores calibration
    t = fit_temperature(z, y)
    assert t == pytest.approx(t_true, rel=0.05)
    assert nll(z, y, t) < nll(z, y, 1.0)


def test_ece_drops_after_fitting_miscalibrated_logits():
    rng = np.random.default_rng(3)
    g, y = sample_calibrated(rng, 4000, 10)
    over = g * 3.0  # over-confident
    under = g / 2.0  # under-confident
    z = np.stack([over, under, g], axis=1)  # three exits
    fit_g, fit_y = sample_calibrated(np.random.default_rng(4), 4000, 10)
    fit_z = np.stack([fit_g * 3.0, fit_g / 2.0, fit_g], axis=1)
    cal = calibrate_exits(z, y, ["exit1", "exit2", "exit3"], fit_on=(fit_z, fit_y))
    assert [c.exit for c in cal] == ["exit1", "exit2", "exit3"]
    for c in cal[:2]:
        assert c.ece_after < c.ece_before / 2
        assert c.nll_after < c.nll_before
    assert cal[0].temperature == pytest.approx(3.0, rel=0.08)
    assert cal[1].temperature == pytest.approx(0.5, rel=0.08)
    assert cal[2].temperature == pytest.approx(1.0, rel=0.08)
    assert cal[2].ece_before < 0.03  # calibrated already
    assert fit_temperatures(fit_z, fit_y) == pytest.approx([c.temperature for c in cal])


def test_ece_hand_computed():
    # two bins used: conf 0.95 (both right) and conf 0.55 (one right of two)
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.45, 0.55]])
    y = np.array([0, 0, 0, 0])
    # bin of 0.95: acc 1, conf .95 -> .05 * 0.5 ; bin of 0.55: acc .5, conf .55 -> .05 * 0.5
    assert expected_calibration_error(probs, y) == pytest.approx(0.05)


def test_bad_labels_are_rejected():
    with pytest.raises(ValueError, match="class indices"):
        fit_temperature(np.zeros((3, 4)), np.array([0, 1, 4]))
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(np.array([[0.0, np.nan]]), np.array([0]))


def test_store_temperatures_in_run_config(tmp_path):
    from bnnkws.kws.config import ModelConfig

    path = ModelConfig(num_exits=3).save(tmp_path / "config.json")
    cfg = store_temperatures(path, [1.7, 0.9, 1.2])
    assert ModelConfig.load(path).temperatures == [1.7, 0.9, 1.2] == cfg.temperatures
    store_temperatures(path, [2.0], exit_numbers=[2])  # a single-exit (E_s) model's exit
    assert ModelConfig.load(path).temperatures == [1.7, 2.0, 1.2]
