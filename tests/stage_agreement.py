"""Do two implementations of a bundle compute the same network? Stage by stage, element by element.

Why not count clips end to end (issue 36): a binary activation whose pre-sign value lies within
rounding of zero may come out +1 in one implementation and -1 in the other. LCE's
``LceBconv2d`` computes ``popcount * multiplier + bias`` with batch norm and K (the bits per
output) fused into the multiplier and bias, or compares the popcount with an integer threshold;
the portable path and Keras compute ``sign(x)`` of a float ``x`` summed in another order. Their
fmaps differ by ~1e-3 on fused channels; fed forward through the chain, such differences flip
activations in later stages, and a flip near a tied top-2 moves a clip's argmax. How many of a
few dozen clips that reaches depends on the trained draw and on the CPU's float kernels: the
same seed trained elsewhere gave 22 of 24 clips where this machine gives 24, and with seed 2
here the Keras-vs-LCE argmax differed on 2 of 72 clips at exit 5 although every stage, fed the
same input, agrees with Keras on every clip.

What is compared instead, for each stage k (:func:`compare_stages`):

* both implementations get the *same* input, the reference's stage k-1 ``fmap`` (stage 1: the
  same audio or log-mel), so no difference compounds from one stage into the next;
* per element: the share of ``fmap`` elements and of ``embedding`` values within float tolerance
  of the reference, and the share of embedding elements with the same sign (the heads, CWR* and
  the replay memory read the embedding's signs only);
* per clip: the share of clips on which every element of the stage agrees in that sense.

A correct conversion differs only where a pre-sign value inside the stage falls within rounding
of zero. Measured on four trained draws of the tiny run (seed 0 trained with oneDNN on and
off, which give different models, seeds 1 and 2), LCE against Keras, the portable stages and
the Pi's re-converted ones on 72 clips (48 for `kws eval`), the worst stage had 99.6 % of fmap
elements and 99.9 % of embedding values close, 99.96 % of signs equal and 95.8 % of clips
agreeing; the four untrained architectures of test_models_arch agree everywhere. A broken
conversion differs on every clip (24 compared): a binary convolution with every threshold one
popcount step off (the smallest error an integer threshold can have) left at most 9 % of its
stage's fmap elements close, 27 % of the embedding values and 93 % of the signs; the same on
its one channel with the largest multiplier, at most 75 %, 79 % and 99 %; the real-valued
twin's stage or stage 4 run in place of stage 5, at most 22 % (fmap), 10 % (values) and 88 %
(signs); no clip agreed in any of them. The bounds below sit far from both regimes: to fail a
correct conversion, rounding flips would have to reach over ten times more clips, or more
elements, than in any draw measured.

Not used: keeping only clips whose every pre-sign value is clear of zero. A stage holds
thousands of pre-sign values per clip; the smallest |value| is ~1e-4 of the largest (measured
median), below the fused transform's rounding, so almost no clip would be "clear".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Tolerances for "the same value", relative to the clip's largest |output| (at least 1). A correct
# conversion's float error comes from LCE's fused output transform, which adds K * multiplier
# to the popcount term (K = 3 * 3 * channels in, up to 576 here; multipliers up to ~30 on
# channels that nearly never fire; below 1e-3 variance they are folded away at export):
# measured at most 1.8e-3 on fmaps whose largest value is >= 4.7 (<= 4e-4 of it) and 2.9e-3 on
# embeddings. A flip or a wrong threshold moves values by twice a multiplier (0.1 and more).
FMAP_TOL = 2e-3
EMB_TOL = 2e-2
# Bounds per stage (measured: see the module docstring):
MIN_FMAP_CLOSE = 0.95  # fmap elements close (correct >= 0.995; broken <= 0.75)
MIN_EMB_CLOSE = 0.95  # embedding values close (correct >= 0.998; broken <= 0.79)
MIN_SIGNS_EQUAL = 0.98  # embedding signs equal (correct >= 0.9996; all thresholds off <= 0.94)
MIN_CLIPS_AGREE = 0.5  # clips on which everything agrees (correct >= 0.958; broken 0)


@dataclass
class StageAgreement:
    """How closely ``other`` reproduced ``ref`` at one stage, fed ``ref``'s previous fmap."""

    stage: int
    clips: int
    fmap_close: float | None  # None: the reference stage has no fmap (the last stage)
    signs_equal: float
    clips_agree: float
    fmap_max_diff: float | None
    emb_close: float
    emb_max_diff: float

    @property
    def ok(self) -> bool:
        return (self.signs_equal >= MIN_SIGNS_EQUAL and self.emb_close >= MIN_EMB_CLOSE
                and self.clips_agree >= MIN_CLIPS_AGREE
                and (self.fmap_close is None or self.fmap_close >= MIN_FMAP_CLOSE))

    def __str__(self):
        fm = "-" if self.fmap_close is None else f"{self.fmap_close:.4f}"
        fd = "-" if self.fmap_max_diff is None else f"{self.fmap_max_diff:.2g}"
        return (f"stage {self.stage}: fmap close {fm} (max diff {fd}); embedding signs equal "
                f"{self.signs_equal:.4f}, values close {self.emb_close:.4f} (max diff "
                f"{self.emb_max_diff:.2g}); clips agreeing {self.clips_agree:.3f} of {self.clips}"
                f"{'' if self.ok else '  <- differs'}")


def compare_stages(ref, other, inputs, stages=None) -> list:
    """Feed both implementations the same input at every stage; one :class:`StageAgreement`
    per stage.

    ``ref`` and ``other`` are functions ``(k, xs) -> {"fmap": (n, ...), "embedding": (n, D),
    ...}`` running stage k (1-based) alone on a batch of inputs, one per clip (stage 1:
    ``inputs``; stage k > 1: ``ref``'s stage k-1 ``fmap``). ``stages``: how many stages
    (default: until ``ref`` has no fmap).
    """
    xs = np.asarray(inputs)
    out, k = [], 1
    while xs is not None and (stages is None or k <= stages):
        a, b = ref(k, xs), other(k, xs)
        n = len(xs)
        ea = np.asarray(a["embedding"], np.float32).reshape(n, -1)
        eb = np.asarray(b["embedding"], np.float32).reshape(n, -1)
        if ea.shape == eb.shape:
            signs = (ea >= 0) == (eb >= 0)
            ediff = np.abs(ea - eb)
            eclose = ediff <= EMB_TOL * np.maximum(1.0, np.abs(ea).max(axis=1, keepdims=True))
        else:  # another stage's embedding: nothing agrees
            signs = eclose = np.zeros(ea.shape, bool)
            ediff = np.full(ea.shape, np.inf)
        clip_ok = signs.all(axis=1) & eclose.all(axis=1)
        fmap_close = fmap_diff = nxt = None
        if "fmap" in a:
            nxt = np.asarray(a["fmap"], np.float32).reshape((n,) + np.shape(a["fmap"])[-3:])
            fa = nxt.reshape(n, -1)
            fb = np.asarray(b["fmap"], np.float32).reshape(n, -1) if "fmap" in b else None
            if fb is None or fb.shape != fa.shape:
                close, fmap_diff = np.zeros(fa.shape, bool), np.inf
            else:
                d = np.abs(fa - fb)
                close = d <= FMAP_TOL * np.maximum(1.0, np.abs(fa).max(axis=1, keepdims=True))
                fmap_diff = float(d.max())
            clip_ok &= close.all(axis=1)
            fmap_close = float(close.mean())
        out.append(StageAgreement(
            stage=k, clips=n, fmap_close=fmap_close, signs_equal=float(signs.mean()),
            clips_agree=float(clip_ok.mean()), fmap_max_diff=fmap_diff,
            emb_close=float(eclose.mean()), emb_max_diff=float(ediff.max())))
        xs, k = nxt, k + 1
    return out


def assert_same_network(agreements, what: str) -> None:
    """Fail naming every stage whose outputs do not agree (see the module docstring)."""
    for a in agreements:
        print(what, a)
    bad = [str(a) for a in agreements if not a.ok]
    assert not bad, f"{what}: stages disagree beyond rounding flips:\n" + "\n".join(bad)


# ---- the implementations compared ---------------------------------------------------------------
def per_clip(run):
    """``(k, xs) -> batched outputs`` from ``run(k, x) -> outputs`` of one clip."""
    def batched(k, xs):
        outs = [run(k, x) for x in xs]
        return {name: np.stack([np.asarray(o[name]).reshape(np.shape(o[name])[1:]) for o in outs])
                for name in outs[0] if all(name in o for o in outs)}

    return batched


def detector_stages(det, stage1: str = "audio"):
    """Stages run by a Detector's own interpreters (``Detector.run_stage``), one clip at a time;
    stage 1 reads the inputs as raw audio or, with ``stage1="features"``, as log-mel."""
    def run(k, x):
        if k == 1:
            return det.run_stage(1, **{stage1: x})
        return det.run_stage(k, x[None])

    return per_clip(run)


def keras_stages(cfg, model):
    """The Keras model's stages, the whole batch at once (stage 1 takes log-mel)."""
    from bnnkws.deploy.export import stage_models

    stages = stage_models(model, cfg)

    def run(k, xs):
        st = stages[k - 1]
        x = np.asarray(xs, np.float32).reshape((len(xs),) + tuple(st.input_shape[1:]))
        return {name: np.asarray(v) for name, v in st(x, training=False).items()}

    return run


def replace_stage(run, k: int, stage_run):
    """``run`` with stage ``k`` answered by ``stage_run(x)`` of one clip instead (a broken
    conversion)."""
    wrong = per_clip(lambda j, x: stage_run(x if j == 1 else x[None]))

    def replaced(j, xs):
        return wrong(j, xs) if j == k else run(j, xs)

    return replaced


def lce_file_runner(bundle, name: str, data: bytes, tmp: Path):
    """An LCE runner for ``data``, a changed copy of the bundle's file ``name``."""
    from bnnkws.deploy.interpreters import LCERunner

    path = Path(tmp) / name.replace("/", "_")
    path.write_bytes(data)
    ins, outs = bundle.io(name)
    return LCERunner(path, ins, outs).run


def threshold_off_by_one(flatbuffer: bytes, which: int = 0, channels=None) -> bytes:
    """The LCE file with one binary convolution's output thresholds a popcount step off.

    ``LceBconv2d`` (float output) computes ``accum' * multiplier + bias`` from the popcount;
    adding ``2 * multiplier`` to the bias moves every output as one more matching bit would,
    i.e. its fused threshold by one step: the smallest error an integer threshold can have.
    ``which``: the n-th LceBconv2d of the file; ``channels``: only these output channels
    (``"largest"``: the one with the largest multiplier).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    buf = bytearray(flatbuffer)
    model = schema.Model.GetRootAsModel(buf, 0)
    sg = model.Subgraphs(0)
    codes = [model.OperatorCodes(i).CustomCode() for i in range(model.OperatorCodesLength())]
    ops = [sg.Operators(j) for j in range(sg.OperatorsLength())
           if codes[sg.Operators(j).OpcodeIndex()] == b"LceBconv2d"]
    op = ops[which]

    def view(i):  # a writable float32 view into buf of the op's i-th input constant
        data = model.Buffers(sg.Tensors(op.Inputs(i)).Buffer()).DataAsNumpy()
        assert not isinstance(data, int), "constant not stored inside the flatbuffer"
        return data.view(np.float32)

    mul, bias = view(2), view(3)  # LceBconv2d inputs: input, filter, multiplier, bias, thresholds
    if isinstance(channels, str) and channels == "largest":
        channels = [int(np.argmax(np.abs(mul)))]
    sel = slice(None) if channels is None else channels
    bias[sel] += 2 * mul[sel]
    return bytes(buf)
