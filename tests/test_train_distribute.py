"""``kws train --distribute``: one device, MirroredStrategy over 2 logical CPU devices and
2 localhost MultiWorkerMirroredStrategy workers reach the same weights; a killed worker
resumes from the last checkpoint.

Every run is ``tests/distributed_run.py`` in its own process (logical devices can only be set
up before TensorFlow initialises, and workers are processes by definition) on real clips of
``../shared/data``: 128 training clips streamed from TFRecord shards with the TensorFlow
augmentation on (every draw keyed by seed, epoch and clip, so each replica and worker sees its
part of the very batches one device sees), global batch 32, Bop on a binary-kernel layer plus
Adam on the rest, 4 epochs. Tolerance: weights within 1e-4 of their scale (measured: 5e-7 to
5e-6; the only difference is the order of the gradient sums), and Bop's flip count identical
in every epoch (a replica that flipped on its own half-batch gradient would differ at once).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "distributed_run.py"
EPOCHS = 4
TOL = 1e-4


def _env(**extra) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _args(data, out, cache, *more) -> list:
    return [sys.executable, str(SCRIPT), "--data", str(data), "--out", str(out),
            "--cache-dir", str(cache), "--epochs", str(EPOCHS), "--binary",
            "--pipeline", "shards", *more]


def _run(args, timeout=300, **env):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=_env(**env))
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _tf_config(ports, index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _start_workers(data, out, cache, *more, logs: Path) -> list:
    ports = _free_ports(2)
    procs = []
    for i in range(2):
        log = open(logs / f"worker{i}-{time.monotonic_ns()}.log", "w")
        procs.append((subprocess.Popen(
            _args(data, out, cache, "--distribute", "multiworker", *more), stdout=log,
            stderr=subprocess.STDOUT, text=True, env=_env(TF_CONFIG=_tf_config(ports, i))),
            log))
    return procs


def _wait(procs, timeout=300) -> list[str]:
    texts = []
    for p, log in procs:
        try:
            p.wait(timeout=timeout)
        finally:
            if p.poll() is None:
                p.kill()
            log.close()
        texts.append(Path(log.name).read_text())
    return texts


def _weights(run: Path) -> dict:
    import h5py

    out = {}
    with h5py.File(run / "weights.h5", "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset)
                     else None)
    return out


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def _assert_same_training(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        scale = float(np.max(np.abs(wa[k]))) + 1e-12
        assert float(np.max(np.abs(wa[k] - wb[k]))) <= TOL * scale, k
    ha, hb = _history(a), _history(b)
    assert [r["epoch"] for r in ha] == [r["epoch"] for r in hb] == [str(e) for e in
                                                                    range(EPOCHS)]
    assert [r["flips"] for r in ha] == [r["flips"] for r in hb]
    assert float(ha[0]["flips"]) > 0  # Bop did flip: the comparison is not of idle weights


@pytest.fixture(scope="module")
def one_device(sc_v2, tmp_path_factory):
    base = tmp_path_factory.mktemp("distribute")
    cache = base / "cache"
    _run(_args(sc_v2, base / "none", cache, "--distribute", "none"))
    return base, cache


def test_mirrored_over_two_logical_cpus_matches_one_device(one_device, sc_v2):
    base, cache = one_device
    r = _run(_args(sc_v2, base / "mirrored", cache, "--distribute", "mirrored", "--devices",
                   "2"))
    assert "2 replicas" in r.stderr and "global batch 32 = 2 x 16 per replica" in r.stderr
    _assert_same_training(base / "none", base / "mirrored")


@pytest.fixture(scope="module")
def killed_and_resumed(one_device, sc_v2):
    """Two workers; worker 1 is killed after the chief's epoch-2 checkpoint, then both are
    restarted with --resume (MultiWorkerMirroredStrategy stops every worker when one dies)."""
    base, cache = one_device
    out, logs = base / "multiworker", base / "logs"
    logs.mkdir()
    procs = _start_workers(sc_v2, out, cache, "--epoch-sleep", "3", logs=logs)
    marker = out / "checkpoints" / "ckpt-2.index"
    deadline = time.monotonic() + 300
    while not marker.is_file() and time.monotonic() < deadline:
        assert all(p.poll() is None for p, _ in procs), "a worker ended before the kill"
        time.sleep(0.2)
    assert marker.is_file(), "no epoch-2 checkpoint within 300 s"
    procs[1][0].send_signal(signal.SIGKILL)
    time.sleep(3)
    procs[0][0].kill()  # the chief waits on the dead peer's collectives
    _wait(procs, timeout=30)
    assert not (out / "test_metrics.json").exists()  # the first attempt did not finish
    texts = _wait(_start_workers(sc_v2, out, cache, "--resume", logs=logs))
    return out, texts


def test_killed_worker_resumes_from_last_checkpoint(killed_and_resumed):
    out, (chief, worker) = killed_and_resumed
    assert "worker 0 of 2 (chief)" in chief and "worker 1 of 2" in worker
    # each worker read and augmented only its half of every global batch
    assert "input: worker 0 streams its share" in chief
    assert "input: worker 1 streams its share" in worker
    for text in (chief, worker):
        resumed = [int(line.split("after epoch ")[1].split()[0])
                   for line in text.splitlines() if "resuming" in line and "after epoch" in line]
        assert resumed and 2 <= resumed[0] < EPOCHS, text[-2000:]
    assert (out / "test_metrics.json").is_file()
    assert not list(out.glob(".worker*-scratch"))  # non-chief scratch folders are removed


def test_two_workers_killed_and_resumed_match_one_device(killed_and_resumed, one_device):
    out, _ = killed_and_resumed
    _assert_same_training(one_device[0] / "none", out)


def test_distribute_errors_name_the_problem(monkeypatch):
    from bnnkws.kws.training import distribute as dist

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(dist.DistributeError, match="TF_CONFIG"):
        dist.setup("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(dist.DistributeError, match="not valid JSON"):
        dist.tf_config()
    with pytest.raises(dist.DistributeError, match="choose one of"):
        dist.setup("horovod")
    with pytest.raises(dist.DistributeError, match="needs GPUs"):  # no GPU on the test machine
        dist.setup("multiworker", 2)
    p = dist.Placement("mirrored", None, replicas=3)
    with pytest.raises(dist.DistributeError, match="multiple of 3"):
        p.per_replica_batch(64)
    assert p.per_replica_batch(96) == 32
