"""ModelConfig: JSON round trip, validation naming the bad value, exit naming (no TensorFlow)."""
import json

import pytest

from bnnkws.frontend.config import FrontendConfig
from bnnkws.kws.config import ConfigError, ModelConfig


def test_round_trip_through_json_file(tmp_path):
    cfg = ModelConfig(arch="meliusnet", width=0.5, labels=["a", "b", "c"], single_exit=2,
                      binary=False, temperatures=[1, 2, 3, 4, 5], delta=0.2, norm_mean=-3.5,
                      norm_std=2.25, exit_loss_weights=[0.5, 1, 1, 1, 2],
                      frontend=FrontendConfig(n_mels=40))
    path = cfg.save(tmp_path / "sub" / "config.json")
    back = ModelConfig.load(path)
    assert back == cfg
    assert isinstance(back.frontend, FrontendConfig) and back.frontend.n_mels == 40
    assert json.loads(path.read_text())["frontend"]["n_mels"] == 40
    assert not list(tmp_path.glob("sub/*.tmp"))  # atomic write left no temp file


def test_exit_names_full_and_single_exit():
    assert ModelConfig().exit_names == ["exit1", "exit2", "exit3", "exit4", "exit5"]
    es = ModelConfig(single_exit=3)
    assert es.exit_names == ["exit3"] and es.active_exits == [3] and es.num_stages == 3
    assert len(es.temperatures) == 5  # indexed by exit number - 1 in every model


@pytest.mark.parametrize("changes, word", [
    ({"arch": "resnet"}, "resnet"),
    ({"width": 0}, "width"),
    ({"single_exit": 6}, "single_exit"),
    ({"temperatures": [1.0, 1.0]}, "temperatures"),
    ({"labels": ["yes", "yes"]}, "duplicate"),
    ({"norm_std": 0.0}, "norm_std"),
])
def test_invalid_values_are_named(changes, word):
    with pytest.raises(ConfigError, match=word):
        ModelConfig(**changes)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        ModelConfig.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**ModelConfig().to_dict(), "colour": "red"}))
    with pytest.raises(ConfigError, match="bad.json.*colour"):
        ModelConfig.load(bad)
