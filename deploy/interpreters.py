"""TFLite interpreters for bundle files: LCE's interpreter, or ai-edge-litert on portable files.

Both are wrapped as a :class:`StageRunner` whose ``run(inputs)`` returns a dict keyed by our
tensor names (``fmap``, ``embedding``, ``logits``), using the positions and TFLite tensor names
the manifest recorded at export: never the output order.

LCE's Python package imports TensorFlow in its ``__init__`` (for the converter). The runtime
loads only the interpreter's extension module, which links against libc/libstdc++ alone, so a
detector starts in milliseconds and needs no TensorFlow.

Kernel options (``use_indirect_bgemm`` etc.) are chosen per CPU architecture from
:data:`KERNEL_OPTIONS`; ``kws bench`` measures all of them on a bundle (see :func:`tune`).
"""
from __future__ import annotations

import importlib.util
import os
import platform
import sys
import time

import numpy as np

from .bundle import Bundle, BundleError

# Per platform.machine(): the LCE interpreter options measured fastest (and correct) there.
# x86-64: LCE's default binary kernels are the reference ones off ARM; the indirect BGEMM kernel
# is optimised C++. Measured here (`kws bench` option table, 1 thread, binary QuickNet w0.5,
# log-mel-in stages summed): default 2.38 ms, XNNPACK 2.00, indirect BGEMM 0.53, indirect BGEMM
# + XNNPACK 0.43 (XNNPACK speeds up the real-valued stem, 1x1 convs and pooling), all equal to
# the reference kernels. ARM: LCE's default kernels are its optimised NEON ones (not measured
# here: no ARM machine); XNNPACK stays off there until measured on the device.
KERNEL_OPTIONS = {
    "x86_64": {"use_indirect_bgemm": True, "use_xnnpack": True},
    "amd64": {"use_indirect_bgemm": True, "use_xnnpack": True},
    "aarch64": {"use_indirect_bgemm": False, "use_xnnpack": False},
    "arm64": {"use_indirect_bgemm": False, "use_xnnpack": False},
}
DEFAULT_OPTIONS = {"use_indirect_bgemm": False, "use_xnnpack": False}

# The option sets `tune` tries (use_reference_bconv is the slow test oracle: measured, never picked).
CANDIDATE_OPTIONS = [
    {"use_indirect_bgemm": False, "use_xnnpack": False},
    {"use_indirect_bgemm": True, "use_xnnpack": False},
    {"use_indirect_bgemm": False, "use_xnnpack": True},
    {"use_indirect_bgemm": True, "use_xnnpack": True},
]

BACKENDS = ("auto", "lce", "litert")


class BackendError(RuntimeError):
    """The requested interpreter is not installed."""


def kernel_options(machine: str | None = None) -> dict:
    """LCE interpreter options for this CPU (``platform.machine()`` unless given)."""
    machine = (machine or platform.machine()).lower()
    return dict(KERNEL_OPTIONS.get(machine, DEFAULT_OPTIONS))


_LCE_MODULE = None
_LCE_PACKAGE_NAME = "larq_compute_engine.tflite.python.interpreter_wrapper_lite"


def lce_module():
    """LCE's ``interpreter_wrapper_lite`` extension, loaded without importing TensorFlow."""
    global _LCE_MODULE
    # pybind11 refuses to load the same extension twice in one process ("LiteInterpreter is
    # already registered"), so the module is shared with LCE's own package name: whichever of
    # this loader and `larq_compute_engine...interpreter.Interpreter` comes first, both work.
    if _LCE_MODULE is None and _LCE_PACKAGE_NAME in sys.modules:
        _LCE_MODULE = sys.modules[_LCE_PACKAGE_NAME]
    if _LCE_MODULE is None:
        spec = importlib.util.find_spec("larq_compute_engine")
        if spec is None or spec.origin is None:
            raise BackendError("larq-compute-engine is not installed (no LCE interpreter)")
        d = os.path.join(os.path.dirname(spec.origin), "tflite", "python")
        names = [f for f in os.listdir(d) if f.startswith("interpreter_wrapper_lite")
                 and f.endswith((".so", ".pyd"))] if os.path.isdir(d) else []
        if not names:
            raise BackendError(f"no LCE interpreter extension in {d}")
        so_spec = importlib.util.spec_from_file_location("interpreter_wrapper_lite",
                                                         os.path.join(d, names[0]))
        mod = importlib.util.module_from_spec(so_spec)
        so_spec.loader.exec_module(mod)
        _LCE_MODULE = mod
        sys.modules.setdefault(_LCE_PACKAGE_NAME, mod)
    return _LCE_MODULE


def lce_available() -> bool:
    try:
        lce_module()
        return True
    except (BackendError, ImportError, OSError):
        return False


def litert_available() -> bool:
    return importlib.util.find_spec("ai_edge_litert") is not None


def resolve_backend(backend: str = "auto") -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if lce_available():
            return "lce"
        if litert_available():
            return "litert"
        raise BackendError("no TFLite interpreter found: install larq-compute-engine (x86-64, "
                           "macOS) or `pip install ai-edge-litert` (portable stages)")
    if backend == "lce" and not lce_available():
        raise BackendError("backend 'lce' requested but larq-compute-engine's interpreter is "
                           "not importable here; use backend='litert' (portable stages)")
    if backend == "litert" and not litert_available():
        raise BackendError("backend 'litert' requested but ai-edge-litert is not installed "
                           "(`pip install ai-edge-litert`)")
    return backend


class StageRunner:
    """One TFLite file of a bundle: ``run(x)`` -> ``{name: array}`` for its outputs."""

    backend = "?"

    def __init__(self, path, inputs, outputs):
        self.path = str(path)
        self.inputs = inputs
        self.outputs = outputs

    def run(self, x: np.ndarray) -> dict:
        raise NotImplementedError

    def timed(self, x):
        t = time.perf_counter()
        out = self.run(x)
        return out, (time.perf_counter() - t) * 1e3

    def _check_input(self, x):
        want = tuple(self.inputs[0].shape)
        x = np.asarray(x, dtype=np.float32)
        if x.shape != want:
            if x.size == int(np.prod(want)):
                x = x.reshape(want)
            else:
                raise ValueError(f"{os.path.basename(self.path)}: input shape {x.shape}, "
                                 f"expected {want}")
        return x


class LCERunner(StageRunner):
    backend = "lce"

    def __init__(self, path, inputs, outputs, num_threads=1, use_reference_bconv=False,
                 use_indirect_bgemm=None, use_xnnpack=None):
        super().__init__(path, inputs, outputs)
        opts = kernel_options()
        if use_indirect_bgemm is not None:
            opts["use_indirect_bgemm"] = use_indirect_bgemm
        if use_xnnpack is not None:
            opts["use_xnnpack"] = use_xnnpack
        self.options = {"num_threads": num_threads, "use_reference_bconv": use_reference_bconv, **opts}
        with open(path, "rb") as f:
            model = f.read()
        self._it = lce_module().LiteInterpreter(model, int(num_threads), bool(use_reference_bconv),
                                                bool(opts["use_indirect_bgemm"]),
                                                bool(opts["use_xnnpack"]))
        got = [tuple(s) for s in self._it.output_shapes]
        want = [tuple(o.shape) for o in outputs]
        if got != want:
            raise BundleError(f"{path}: output shapes {got} differ from the manifest's {want}")

    def run(self, x):
        outs = self._it.predict([self._check_input(x)])
        return {spec.name: outs[spec.index] for spec in self.outputs}


class LiteRTRunner(StageRunner):
    backend = "litert"

    def __init__(self, path, inputs, outputs, num_threads=1):
        super().__init__(path, inputs, outputs)
        from ai_edge_litert.interpreter import Interpreter

        self.options = {"num_threads": num_threads}
        self._it = Interpreter(model_path=str(path), num_threads=int(num_threads))
        self._it.allocate_tensors()
        by_name = {d["name"]: d for d in self._it.get_output_details()}
        self._out = []
        for spec in outputs:
            d = by_name.get(spec.tensor)
            if d is None:
                raise BundleError(f"{path}: no output tensor {spec.tensor!r} ({spec.name}); "
                                  f"the file does not match the manifest")
            self._out.append((spec.name, d["index"]))
        self._in = self._it.get_input_details()[0]["index"]

    def run(self, x):
        self._it.set_tensor(self._in, self._check_input(x))
        self._it.invoke()
        return {name: self._it.get_tensor(idx) for name, idx in self._out}


def open_file(bundle: Bundle, name: str, backend: str, num_threads: int = 1, **options) -> StageRunner:
    """A runner for one bundle file with the given (resolved) backend."""
    inputs, outputs = bundle.io(name)
    if backend == "lce":
        return LCERunner(bundle.file(name), inputs, outputs, num_threads=num_threads, **options)
    if backend == "litert":
        return LiteRTRunner(bundle.file(name), inputs, outputs, num_threads=num_threads)
    raise ValueError(f"backend must be 'lce' or 'litert', got {backend!r}")


def interleaved_times(chains, runs, warmup):
    """Wall times (ms), one ``(runs, stages)`` array per ``(runners, first_input)`` chain; a run
    of a chain feeds each stage's ``fmap`` output to the next. The chains take turns run by
    run: on a shared or throttling machine the speed drifts by tens of percent over seconds, and
    measuring one model after the other turned that drift into the binary-vs-float ratio."""
    ts = [np.empty((runs, len(runners))) for runners, _ in chains]
    for i in range(-warmup, runs):
        for t, (runners, first_input) in zip(ts, chains):
            x = first_input
            for j, r in enumerate(runners):
                t0 = time.perf_counter()
                o = r.run(x)
                dt = (time.perf_counter() - t0) * 1e3
                if i >= 0:
                    t[i, j] = dt
                x = o.get("fmap")
    return ts


def tune(bundle: Bundle, files: list, inputs: dict, runs: int = 30, warmup: int = 5,
         num_threads: int = 1, rtol: float = 1e-3) -> list:
    """Time every LCE option set on ``files``, a chain of stages (summed medians), and check
    outputs agree with the reference kernels on ``inputs``. Returns rows
    ``{options, ms, max_rel_err, correct}``, fastest first."""
    ref = {}
    for name in files:
        r = open_file(bundle, name, "lce", num_threads, use_reference_bconv=True,
                      use_indirect_bgemm=False, use_xnnpack=False)
        ref[name] = r.run(inputs[name])
    runners, errs = [], []
    for opts in CANDIDATE_OPTIONS:
        rs, err = [], 0.0
        for name in files:
            r = open_file(bundle, name, "lce", num_threads, **opts)
            out = r.run(inputs[name])
            for k, v in out.items():
                scale = max(1.0, float(np.abs(ref[name][k]).max()))
                err = max(err, float(np.abs(v - ref[name][k]).max()) / scale)
            rs.append(r)
        runners.append(rs)
        errs.append(err)
    # The option sets take turns run by run, so a machine whose speed drifts favours none of them.
    times = interleaved_times([(rs, inputs[files[0]]) for rs in runners], runs, warmup)
    rows = [{"options": opts, "ms": float(np.median(t, axis=0).sum()), "max_rel_err": err,
             "correct": err <= rtol} for opts, err, t in zip(CANDIDATE_OPTIONS, errs, times)]
    rows.sort(key=lambda r: (not r["correct"], r["ms"]))
    return rows
