"""The real QuickNet trained through `run_training` (the `tiny_run` fixture) and `kws train`'s CLI."""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil

import numpy as np
import pytest

from bnnkws.app import cli


def _rows(run):
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_run_directory_is_complete(tiny_run):
    from bnnkws.kws.config import ModelConfig

    for name in ("config.json", "train_config.json", "split.json", "weights.h5", "best.h5",
                 "history.csv", "test_metrics.json"):
        assert (tiny_run / name).is_file(), name
    assert (tiny_run / "checkpoints" / "checkpoint").is_file()
    cfg = ModelConfig.load(tiny_run / "config.json")
    assert cfg.arch == "quicknet" and cfg.binary and len(cfg.labels) == 12
    # normalisation statistics of real log-mel (not the 0/1 defaults)
    assert cfg.norm_mean != 0.0 and cfg.norm_std != 1.0 and cfg.norm_std > 0.5
    rows = _rows(tiny_run)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    for k in range(1, 6):
        for col in (f"exit{k}_loss", f"exit{k}_accuracy", f"val_exit{k}_loss",
                    f"val_exit{k}_accuracy"):
            assert col in rows[0]
    for r in rows:
        assert math.log(1e-9) <= float(r["flip_ratio"]) < math.log(5)
        assert math.isfinite(float(r["loss"]))
    assert float(rows[0]["flips"]) > 0  # Bop moved binary weights of the real model
    tm = json.loads((tiny_run / "test_metrics.json").read_text())
    assert set(tm["best"]) == set(cfg.exit_names) and tm["num_clips"] > 100
    split = json.loads((tiny_run / "split.json").read_text())
    assert len(split["train"]) == 1600 and split["validation"] and split["testing"]
    assert not set(split["train"]) & set(split["testing"])


def test_load_run_rebuilds_the_trained_model(tiny_run):
    import h5py

    from bnnkws.kws.training.optim import binary_variables
    from bnnkws.kws.training.train import load_run

    cfg, model = load_run(tiny_run, which="best")
    assert sorted(model.output_names) == sorted(cfg.exit_names)
    # the loaded weights are the file's, not a fresh initialisation
    with h5py.File(tiny_run / "best.h5", "r") as f:
        stored = []
        f.visititems(lambda n, o: stored.append(np.asarray(o)) if isinstance(o, h5py.Dataset)
                     else None)
    total = sum(float(np.abs(w).sum()) for w in model.get_weights())
    assert total == pytest.approx(sum(float(np.abs(a).sum()) for a in stored), rel=1e-5)
    # Bop leaves every binary kernel of the trained QuickNet at exactly +-1
    for v in binary_variables(model):
        assert set(np.unique(v.numpy())) <= {-1.0, 1.0}, v.name
    x = np.zeros((2, 98, 64), np.float32) + cfg.norm_mean
    out = model.predict(x, verbose=0)
    assert out["exit5"].shape == (2, 12)
    _, last = load_run(tiny_run, which="last")
    assert len(last.get_weights()) == len(model.get_weights())


def test_cli_help_lists_every_option_and_mirrors_defaults(capsys):
    from bnnkws.app.commands import train as cmd_train
    from bnnkws.kws.training.train import TrainConfig

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    for opt in ("--data", "--arch", "--task", "--width", "--epochs", "--batch-size",
                "--optimizer", "--bop-threshold", "--bop-gamma", "--bop-gamma-decay", "--lr",
                "--exit-weights", "--head-channels", "--stage-filters", "--binary-bn-epsilon", "--single-exit", "--real-valued", "--seed", "--out",
                "--resume", "--max-train-clips", "--no-augment", "--label-smoothing"):
        assert opt in text, opt
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["train"]
    for action in sub._actions:
        if action.dest != "help":
            assert action.help, action.dest
    defaults = TrainConfig()  # the CLI reads its defaults from TrainConfig itself
    for k, v in vars(cmd_train._defaults()).items():
        assert getattr(defaults, k) == v, k


def test_cli_user_errors(tmp_path, tiny_run, capsys):
    assert cli.main(["train", "--arch", "quicknet"]) == 2
    assert "--data is required" in capsys.readouterr().err
    assert cli.main(["train", "--data", str(tmp_path), "--real-valued", "--optimizer",
                     "bop"]) == 2
    assert "real-valued" in capsys.readouterr().err
    assert cli.main(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 2
    assert "train_config.json" in capsys.readouterr().err
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    assert cli.main(["train", "--resume", "--out", str(run), "--arch", "birealnet"]) == 2
    err = capsys.readouterr().err
    assert "arch" in err and "quicknet" in err and "birealnet" in err
    # without --resume an existing run is never overwritten
    assert cli.main(["train", "--data", str(tmp_path), "--out", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_cli_resume_keeps_the_runs_options(tiny_run, tmp_path):
    """`kws train --resume --out R --epochs N` rebuilds the saved config with only N changed."""
    import argparse

    from bnnkws.app.commands import train as cmd_train
    from bnnkws.kws.training.train import TrainConfig

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    args = cli.build_parser().parse_args(["train", "--resume", "--out", str(run),
                                          "--epochs", "4"])
    tc = cmd_train.config_from_args(args)
    saved = TrainConfig(**json.loads((run / "train_config.json").read_text()))
    assert tc.epochs == 4 and tc.resume
    for f in dataclasses.fields(TrainConfig):
        if f.name not in ("epochs", "resume", "out", "verbose"):
            assert getattr(tc, f.name) == getattr(saved, f.name), f.name
    assert isinstance(args, argparse.Namespace)


def test_split_seed_keeps_the_speakers_while_the_seed_changes(sc_v2, tmp_path):
    """--split-seed: a run with --seed 1 --split-seed 0 trains and is held out on seed 0's
    speakers (the shared subset has no split lists), and what scores it later (kws eval, the
    bundle's source) reads the split seed, not the init seed."""
    import os

    from bnnkws.deploy.export import training_split
    from bnnkws.kws.data import load_dataset
    from bnnkws.kws.training.run import split_seed
    from bnnkws.kws.training.train import TrainConfig, run_training

    base = dict(data=str(sc_v2), arch="quicknet", width=0.25, single_exit=1, epochs=1,
                batch_size=32, max_train_clips=32, verbose=0,
                cache_dir=os.environ.get("KWS_CACHE_DIR") or str(tmp_path / "cache"))
    run = run_training(TrainConfig(**base, seed=1, split_seed=0, out=str(tmp_path / "r")))
    split = json.loads((run / "split.json").read_text())
    want = {s: sorted(str(c.path) for c in getattr(load_dataset(sc_v2, seed=s), "testing"))
            for s in (0, 1)}
    assert want[0] != want[1]  # the two seeds do split the speakers differently
    assert sorted(split["testing"]) == want[0]
    assert training_split(run)["seed"] == 0
    tc = json.loads((run / "train_config.json").read_text())
    assert tc["seed"] == 1 and split_seed(tc) == 0
    assert split_seed({"seed": 3}) == 3 and split_seed({}) == 0  # runs from before the option


def test_jit_compile_reaches_keras_and_may_change_on_resume(tiny_run, tmp_path):
    """--jit-compile compiles the training step with XLA (Keras' jit_compile); it changes no
    trajectory option, so a run trained without it may resume with it."""
    import tensorflow as tf

    from bnnkws.app.commands import train as cmd_train
    from bnnkws.kws.config import ModelConfig
    from bnnkws.kws.models import build_model
    from bnnkws.kws.training.train import compile_model

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    args = cli.build_parser().parse_args(["train", "--resume", "--out", str(run),
                                          "--jit-compile"])
    tc = cmd_train.config_from_args(args)
    assert tc.jit_compile and tc.resume
    cfg = ModelConfig(arch="quicknet", width=0.25)
    for jit in (False, True):
        model = build_model(cfg)
        compile_model(model, cfg, tf.keras.optimizers.Adam(), jit_compile=jit)
        assert bool(model._jit_compile) is jit


def test_pa_bases_option_reaches_the_model_config():
    """--pa-bases M,N (issue 41) is saved with the run and builds ModelConfig.pa_bases; a run
    without it stays the 1-bit network (no pa_bases)."""
    from bnnkws.app.commands import train as cmd_train
    from bnnkws.kws.data import LABELS12
    from bnnkws.kws.training.train import make_model_config

    for argv, want in ((["--pa-bases", "2,2"], [2, 2]), ([], None)):
        args = cli.build_parser().parse_args(["train", "--data", "x", *argv])
        tc = cmd_train.config_from_args(args)
        assert tc.pa_bases == want
        assert make_model_config(tc, LABELS12, 0.0, 1.0).pa_bases == want
