"""Export a trained run into a bundle (see :mod:`bnnkws.deploy.bundle` for the layout).

Each stage is converted on its own with ``larq_compute_engine.convert_keras_model``, so running
stages 1..k costs exits 1..k and nothing more. Stage 1 exists twice: with raw audio in (the
LogMel layer inside, as in the paper's latency figures) and with log-mel in (the streaming app
computes features incrementally). Every stage also gets a portable twin (stock converter, no LCE
ops) and a float-32 twin (same graph with ``binary=False``, the latent weights unbinarised).

Converted models get fixed batch-1 shapes and named outputs: each output passes through a
``linear`` Activation named ``fmap`` / ``embedding`` / ``logits`` (or ``exit{k}``), so the
signature names are ours; the manifest records, per file, which output *position* and TFLite
tensor carries each name (the converter reorders outputs).

After writing, the bundle is loaded back and checked on a synthetic clip: LCE vs portable
stages, numpy heads vs the TFLite logits, Keras vs bundle logits. The figures go into the
manifest's ``checks``; a gross mismatch aborts the export.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

import bnnkws.frontend  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from bnnkws.kws.fileio import DIR_MODE
from bnnkws.kws.policy import delta_value

from .bundle import (FORMAT_VERSION, HEADS, Bundle, atomic_write_bytes, heads_to_bytes, now_iso,
                     sha256_file, write_manifest)


class ExportError(RuntimeError):
    pass


TOOLS = ("tensorflow", "tf-keras", "larq", "larq-compute-engine", "bnn-kws", "numpy")


def tool_versions() -> dict:
    out = {}
    for name in TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# ------------------------------------------------------------------------------------------------
# flatbuffer inspection
# ------------------------------------------------------------------------------------------------
def tflite_io(flat: bytes) -> tuple[list, list]:
    """``(inputs, outputs)`` of a flatbuffer's serving signature: dicts with our ``name``, the
    TFLite ``tensor`` name, its ``index`` (position among the subgraph's inputs/outputs),
    ``shape`` and ``dtype``."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flat), 0)
    sg = model.subgraphs[0]
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    if not model.signatureDefs:
        raise ExportError("converted model has no signature; cannot map outputs by name")
    sig = model.signatureDefs[0]

    def spec(entries, order):
        out = []
        for e in entries:
            t = sg.tensors[e.tensorIndex]
            name = e.name.decode() if isinstance(e.name, bytes) else e.name
            tname = t.name.decode() if isinstance(t.name, bytes) else t.name
            out.append({"name": name, "tensor": tname, "index": list(order).index(e.tensorIndex),
                        "shape": [int(s) for s in t.shape], "dtype": types.get(t.type, str(t.type))})
        return sorted(out, key=lambda d: d["index"])

    return spec(sig.inputs, sg.inputs), spec(sig.outputs, sg.outputs)


# ------------------------------------------------------------------------------------------------
# Keras graphs to convert
# ------------------------------------------------------------------------------------------------
def named_io_model(inner, input_shape, input_name, frontend=None, rename=None):
    """Batch-1 model around ``inner`` with each output renamed through a linear Activation.

    ``frontend``: a FrontendConfig to put the LogMel layer in front (raw audio in).
    ``rename``: output key -> name (default: the key itself).
    """
    import tensorflow as tf

    inp = tf.keras.Input(tuple(input_shape), batch_size=1, name=input_name, dtype="float32")
    x = inp
    if frontend is not None:
        from bnnkws.frontend.keras_layer import LogMel

        x = LogMel(frontend, name="log_mel_frontend")(x)
    out = inner(x)
    if not isinstance(out, dict):
        raise ExportError(f"{inner.name}: expected dict outputs, got {type(out)}")
    rename = rename or {}
    outs = {}
    for key in sorted(out):
        name = rename.get(key, key)
        outs[name] = tf.keras.layers.Activation("linear", name=name)(out[key])
    return tf.keras.Model(inp, outs, name=f"{inner.name}_{input_name}")


def stage_models(model, cfg) -> list:
    """The stage sub-models of a chained model (``build_model`` keeps them as layers)."""
    try:
        return [model.get_layer(f"stage{k}") for k in range(1, cfg.num_stages + 1)]
    except ValueError as e:
        raise ExportError(f"model {model.name} has no stage{{k}} layers; it was not built by "
                          f"bnnkws.kws.models.build_model ({e})") from e


def float_twin_stages(cfg, stages) -> list:
    """Real-valued stages (``binary=False``) carrying the binary stages' latent weights."""
    from bnnkws.kws.models import build_stages
    from bnnkws.kws.models.pa import twin_weights

    fstages = build_stages(cfg.replace(binary=False))
    for s, f in zip(stages, fstages):
        # a PA model's staircase parameters have no counterpart in the twin
        ws, wf = twin_weights(s), f.get_weights()
        if [w.shape for w in ws] != [w.shape for w in wf]:
            raise ExportError(f"{s.name}: the real-valued twin's weights do not line up with the "
                              f"binary model's")
        f.set_weights(ws)
    return fstages


def chain(stages, cfg, name):
    """Chained model over stage models: log-mel in, ``{"exit{k}": logits}`` out."""
    import tensorflow as tf

    inp = tf.keras.Input((cfg.frontend.num_frames, cfg.frontend.n_mels), name="logmel")
    x, outs = inp, {}
    for k, st in enumerate(stages, start=1):
        o = st(x)
        if "logits" in o:
            outs[f"exit{k}"] = o["logits"]
        if "fmap" in o:
            x = o["fmap"]
    return tf.keras.Model(inp, outs, name=name)


def head_params_of(stage) -> dict:
    from bnnkws.kws.models.exits import head_params

    p = head_params(stage)
    return {"kernel": p["kernel"], "bias": p["bias"], "scale": p["scale"],
            "sign_input": bool(p["binary"]), "sign_kernel": bool(p["binary"])}


def _synthetic_clip(fcfg, seed=0) -> np.ndarray:
    from .bench import speechlike_clip

    return speechlike_clip(fcfg, seed)


def training_split(run_dir) -> dict | None:
    """The data spec, task and split seed the run trained with (None without a run).

    `kws eval` and `kws bench` on the bundle split the data the same way, so a model trained
    with another seed is never scored on clips it trained on.
    """
    from bnnkws.kws.training.run import read_train_config, split_seed

    tc = read_train_config(run_dir) if run_dir is not None else {}
    if not tc:
        return None
    return {"data": tc.get("data"), "task": tc.get("task"), "seed": split_seed(tc)}


# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------
def export_bundle(out, run_dir=None, which: str = "best", delta=None,
                  cfg=None, model=None, overwrite: bool = False, progress: bool = True,
                  check: bool = True, include_full: bool = True, twins: bool = True,
                  int8: bool | None = None, int8_clips: int | None = None) -> Path:
    """Convert a run (or ``cfg`` + chained ``model``) into a bundle directory ``out``.

    Written into a temporary sibling directory and renamed at the end, so an interrupted export
    never leaves a half bundle behind. ``include_full=False`` skips full.tflite and
    float32.tflite (the two slowest conversions; the staged files carry the same models).
    ``twins=False`` (``kws export --lean``) also skips the portable/ and float32/ stages: the
    binary LCE stages alone are a few hundred KiB, while the +-1-float twins of a width-1 model
    are tens of MiB, too much to ship inside a package (the shipped default bundle is lean).
    ``int8`` (default: with ``include_full`` and ``twins``, i.e. a full ``kws export``) adds the
    int8 twin ``int8/stage*.tflite``: the float twin after full-integer post-training
    quantization, calibrated on ``int8_clips`` training clips (see :mod:`bnnkws.deploy.int8`).
    ``delta``: the bundle's exit threshold, a number or one per exit (default: the run's).
    """
    import larq_compute_engine as lce
    from tqdm import tqdm

    from .portable import convert_portable

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another --out or pass overwrite")
    if model is None:
        if run_dir is None:
            raise ValueError("give run_dir or cfg+model")
        from bnnkws.kws.training.train import load_run

        # Keras names unnamed layers from process-wide counters, and the names land in the
        # flatbuffer: without a reset the same run converted twice in one process gives
        # different bytes, and `kws deploy` could not recognise a lean bundle's own run.
        import tf_keras

        tf_keras.backend.clear_session()
        cfg, model = load_run(run_dir, which)
    if delta is not None:
        cfg = cfg.replace(delta=delta_value(delta))  # checked there: >= 0, one per exit
    fcfg = cfg.frontend
    from bnnkws.kws.models.dead_channels import fold_dead_channels

    # Dead BN channels after binary convs lose precision in LCE's fused output transform.
    folded = fold_dead_channels(model)
    if progress and folded:
        print(f"folded {folded} dead batch-norm channel(s) into constants before conversion")
    stages = stage_models(model, cfg)
    fstages = float_twin_stages(cfg, stages)
    n = len(stages)
    active = set(cfg.active_exits)
    shape1 = (fcfg.num_frames, fcfg.n_mels)

    # (file name, Keras model, converter) in conversion order
    jobs = []
    for k, (s, f) in enumerate(zip(stages, fstages), start=1):
        if k == 1:
            audio = named_io_model(s, (fcfg.clip_samples,), "audio", frontend=fcfg)
            feats = named_io_model(s, shape1, "log_mel")
            faudio = named_io_model(f, (fcfg.clip_samples,), "audio", frontend=fcfg)
            ffeats = named_io_model(f, shape1, "log_mel")
            jobs += [("stage1.tflite", audio, "lce"), ("stage1_features.tflite", feats, "lce")]
            if twins:
                jobs += [("portable/stage1.tflite", audio, "portable"),
                         ("portable/stage1_features.tflite", feats, "portable"),
                         ("float32/stage1.tflite", faudio, "float"),
                         ("float32/stage1_features.tflite", ffeats, "float")]
        else:
            in_shape = s.input_shape[1:]
            m = named_io_model(s, in_shape, "fmap_in")
            fm = named_io_model(f, in_shape, "fmap_in")
            jobs += [(f"stage{k}.tflite", m, "lce")]
            if twins:
                jobs += [(f"portable/stage{k}.tflite", m, "portable"),
                         (f"float32/stage{k}.tflite", fm, "float")]
    do_int8 = bool(twins and (include_full if int8 is None else int8))
    calib, int8_info = {}, None
    if do_int8:
        from .int8 import DEFAULT_CALIBRATION_CLIPS, calibration_audio, stage_inputs
        from bnnkws.frontend.reference import log_mel_batch

        audio, desc = calibration_audio(run_dir, fcfg, int8_clips or DEFAULT_CALIBRATION_CLIPS)
        xs = stage_inputs(fstages, log_mel_batch(audio, fcfg))
        calib = {"int8/stage1.tflite": audio, "int8/stage1_features.tflite": xs[0]}
        calib.update({f"int8/stage{k}.tflite": xs[k - 1] for k in range(2, n + 1)})
        # the int8 twin quantizes the float twin's own models (``twins`` made them above)
        float_models = {name: m for name, m, how in jobs if how == "float"}
        jobs += [(name, float_models["float32/" + name[len("int8/"):]], "int8") for name in calib]
        int8_info = {"calibration": desc, "modes": {}}
    if include_full and twins:
        full = named_io_model(chain(stages, cfg, "full"), (fcfg.clip_samples,), "audio",
                              frontend=fcfg)
        ffull = named_io_model(chain(fstages, cfg, "full_float"), (fcfg.clip_samples,), "audio",
                               frontend=fcfg)
        jobs += [("full.tflite", full, "lce"), ("float32.tflite", ffull, "float")]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.part-"))
    try:
        files = {}
        bar = tqdm(jobs, desc="convert", unit="file", disable=not progress)
        for name, m, how in bar:
            bar.set_postfix_str(name)
            if how == "int8":
                from .int8 import convert_int8

                flat, mode = convert_int8(m, calib[name])
                int8_info["modes"][name] = mode
            else:
                flat = lce.convert_keras_model(m) if how == "lce" else convert_portable(m)
            atomic_write_bytes(tmp / name, flat)
            ins, outs = tflite_io(flat)
            files[name] = {"sha256": hashlib.sha256(flat).hexdigest(), "bytes": len(flat),
                           "kind": how, "inputs": ins, "outputs": outs}
        heads = {k: head_params_of(stages[k - 1]) for k in sorted(active)}
        hbytes = heads_to_bytes(heads)
        atomic_write_bytes(tmp / HEADS, hbytes)
        files[HEADS] = {"sha256": hashlib.sha256(hbytes).hexdigest(), "bytes": len(hbytes),
                        "kind": "heads"}

        stage_entries = []
        for k in range(1, n + 1):
            e = {"index": k, "exit": k if k in active else None, "file": f"stage{k}.tflite",
                 "portable": f"portable/stage{k}.tflite" if twins else None,
                 "float32": f"float32/stage{k}.tflite" if twins else None,
                 "int8": f"int8/stage{k}.tflite" if do_int8 else None}
            if k == 1:
                e.update(features_file="stage1_features.tflite",
                         features_portable="portable/stage1_features.tflite" if twins else None,
                         float32_features="float32/stage1_features.tflite" if twins else None,
                         int8_features="int8/stage1_features.tflite" if do_int8 else None)
            stage_entries.append(e)
        manifest = {
            "format_version": FORMAT_VERSION,
            "created": now_iso(),
            "labels": list(cfg.labels),
            "frontend": fcfg.to_dict(),
            "model_config": cfg.to_dict(),
            "exits": sorted(active),
            "temperatures": list(cfg.temperatures),
            "delta": delta_value(cfg.delta),
            "policy": {"criterion": "entropy", "normalized": bool(cfg.entropy_normalized),
                       "min_exit": int(cfg.min_exit)},
            "heads": "numpy",
            "heads_file": HEADS,
            "stages": stage_entries,
            "full": "full.tflite" if include_full and twins else None,
            "float32": "float32.tflite" if include_full and twins else None,
            "int8": int8_info,
            "files": files,
            "tools": tool_versions(),
            "source": {"run": str(run_dir) if run_dir else None, "which": which,
                       "split": training_split(run_dir)},
            "enrolment": [],
        }
        write_manifest(tmp, manifest)
        if check:
            manifest["checks"] = check_bundle(tmp, stages, cfg)
            write_manifest(tmp, manifest)
        os.chmod(tmp, DIR_MODE)  # a bundle is shared like any other folder, not mkdtemp-private
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_bundle(path, stages, cfg, clip=None, tol: float = 0.05) -> dict:
    """Compare the bundle with the Keras stages on one clip (synthetic unless given).

    Returns max abs differences; raises ExportError when the numpy heads do not reproduce the
    TFLite logits or when LCE and portable stages disagree on the prediction.
    """
    from .runtime import Detector

    clip = _synthetic_clip(cfg.frontend) if clip is None else clip
    b = Bundle.load(path)
    lce_run = Detector(b, backend="lce").run_all(audio=clip)
    # the portable files through the same interpreter: differences are the model's, not the runtime's
    from .interpreters import open_file

    x = clip[None, :]
    port_logits = []
    lean = any(spec.portable is None for spec in b.stages)
    for spec in ([] if lean else b.stages):
        r = open_file(b, spec.portable, "lce")
        o = r.run(x)
        if "logits" in o:
            port_logits.append(o["logits"].reshape(-1))
        x = o.get("fmap")
    # Keras on the same clip
    from bnnkws.frontend.keras_layer import LogMel

    feats = LogMel(cfg.frontend)(clip[None, :]).numpy()
    x, keras_logits = feats, []
    for s in stages:
        o = s(x, training=False)
        if "logits" in o:
            keras_logits.append(o["logits"].numpy().reshape(-1))
        x = o.get("fmap")
    heads = np.stack(lce_run["logits"])
    tfl = np.stack(lce_run["tflite_logits"])
    if lean:  # no portable twins to compare: compare LCE with itself so the keys stay present
        port_logits = list(tfl)
    res = {
        "clip": "synthetic",
        "heads_vs_tflite_logits_max_abs": float(np.abs(heads - tfl).max()),
        "lce_vs_portable_logits_max_abs": float(np.abs(tfl - np.stack(port_logits)).max()),
        "lce_vs_keras_logits_max_abs": float(np.abs(tfl - np.stack(keras_logits)).max()),
        "top1_lce_eq_portable": bool(np.all(tfl.argmax(1) == np.stack(port_logits).argmax(1))),
        "top1_lce_eq_keras": bool(np.all(tfl.argmax(1) == np.stack(keras_logits).argmax(1))),
    }
    scale = max(1.0, float(np.abs(tfl).max()))
    if res["heads_vs_tflite_logits_max_abs"] > tol * scale:
        raise ExportError(f"{path}: numpy heads do not reproduce the TFLite logits "
                          f"(max abs diff {res['heads_vs_tflite_logits_max_abs']:.4g})")
    return res


def load_manifest(path) -> dict:
    return json.loads((Path(path) / "manifest.json").read_text())


__all__ = ["export_bundle", "tflite_io", "check_bundle", "ExportError", "sha256_file"]
