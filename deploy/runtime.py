"""Early-exit keyword detection on a bundle: numpy and one TFLite interpreter, no TensorFlow.

:class:`Detector` runs stage after stage and stops at the first exit the shared exit policy
(:class:`bnnkws.kws.policy.ExitPolicy`, the same code evaluation uses) accepts, so a confident
clip costs only the stages up to its exit. Logits are always computed in numpy from the
embedding and ``heads.npz``: after CWR* enrolment the heads have more classes than the TFLite
``logits`` output, and one code path for both cases keeps them consistent (export checks the two
agree on an un-enrolled bundle).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from bnnkws.kws.policy import ExitPolicy, delta_value

from .bundle import Bundle, BundleError, head_logits
from .interpreters import open_file, resolve_backend


@dataclass
class Result:
    label: str
    label_index: int
    probs: np.ndarray  # calibrated softmax at the chosen exit
    exit: int  # 1-based exit number
    entropy: float
    stage_ms: list = field(default_factory=list)  # wall time of each stage that ran

    @property
    def total_ms(self) -> float:
        return float(sum(self.stage_ms))


class Detector:
    """Classify 1 s clips (raw audio or log-mel) exit by exit.

    ``delta``: exit threshold (default: the bundle's). ``backend``: ``"lce"`` (LCE interpreter on
    the LCE stages), ``"litert"`` (ai-edge-litert on the portable stages) or ``"auto"`` (LCE when
    importable). ``kernel_options`` override the per-CPU LCE options (see interpreters.py).
    """

    def __init__(self, bundle, delta: float | None = None, num_threads: int = 1,
                 backend: str = "auto", kernel_options: dict | None = None, verify: bool = True):
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle, verify=verify)
        self.backend = resolve_backend(backend)
        self.num_threads = int(num_threads)
        b = self.bundle
        self.stages = b.stages
        opts = dict(kernel_options or {}) if self.backend == "lce" else {}
        portable = self.backend == "litert"
        if portable and any(s.portable is None for s in b.stages):
            raise BundleError(
                f"{b.path}: this bundle is lean (LCE stages only, `kws export --lean`), but the "
                "LCE interpreter is not available here; re-export without --lean to get the "
                "portable stages for ai-edge-litert")

        def runner(spec_file, spec_portable):
            return open_file(b, spec_portable if portable else spec_file, self.backend,
                             self.num_threads, **opts)

        s1 = self.stages[0]
        self._stage1_audio = runner(s1.file, s1.portable)
        self._stage1_features = (runner(s1.features_file, s1.features_portable)
                                 if s1.features_file else None)
        self._rest = [runner(s.file, s.portable) for s in self.stages[1:]]
        self.kernel_options = getattr(self._stage1_audio, "options", {})
        pol = b.policy_settings
        self.delta = delta_value(b.delta if delta is None else delta)
        self._policy_kw = dict(criterion=pol.get("criterion", "entropy"),
                               normalized=pol.get("normalized", True),
                               min_exit=pol.get("min_exit", 1), temperatures=b.temperatures)
        self.policy = self.make_policy(self.delta)
        self._frontend = b.frontend
        # Enrolled words may not decide before their own minimum exit (kws.operating_point).
        words = b.manifest.get("words") or {}
        self.min_exits = np.array([int((words.get(lab) or {}).get("min_exit", 1))
                                   for lab in b.labels], np.int64)

    def make_policy(self, delta) -> ExitPolicy:
        """The bundle's exit rule (criterion, normalisation, temperatures) at threshold delta
        (a number, or one per exit)."""
        return ExitPolicy(delta_value(delta), **self._policy_kw)

    # -- basic facts ----------------------------------------------------------------------------
    @property
    def labels(self) -> list:
        return self.bundle.labels

    @property
    def exits(self) -> list:
        return self.bundle.exits

    def __repr__(self):
        return (f"Detector({str(self.bundle.path)!r}, backend={self.backend!r}, "
                f"delta={self.delta}, exits={self.exits}, options={self.kernel_options})")

    # -- internals ------------------------------------------------------------------------------
    def _first(self, audio, features):
        if (audio is None) == (features is None):
            raise ValueError("pass exactly one of audio= (raw 16 kHz samples) or features= (log-mel)")
        if audio is not None:
            y = np.asarray(audio)
            if y.dtype == np.int16:
                y = y.astype(np.float32) / 32768.0
            y = y.astype(np.float32).reshape(-1)
            n = self._frontend.clip_samples
            if y.shape[0] != n:
                from bnnkws.frontend.audio import pad_or_crop

                y = pad_or_crop(y, n, crop="center")
            return self._stage1_audio, y[None, :]
        if self._stage1_features is None:
            raise ValueError(f"bundle {self.bundle.path} has no log-mel-input stage 1")
        f = np.asarray(features, dtype=np.float32)
        return self._stage1_features, f.reshape((1,) + tuple(f.shape[-2:]))

    def logits_from_embedding(self, exit_k: int, embedding) -> np.ndarray:
        return head_logits(self.bundle.heads[exit_k], np.asarray(embedding, np.float32).reshape(-1))

    def _result(self, k, logits, probs, ent, stage_ms):
        i = int(np.argmax(probs))
        return Result(self.labels[i], i, np.asarray(probs), int(k), float(ent), stage_ms)

    # -- public API -----------------------------------------------------------------------------
    def classify(self, audio=None, features=None, delta: float | None = None,
                 stop=None) -> Result:
        """Run stages until the exit policy accepts (the last exit always decides).

        ``stop``: an extra rule ``stop(exit, probs) -> bool`` consulted at an exit the policy
        did not accept (e.g. :class:`bnnkws.kws.policy.KeywordMassRule`); True leaves there too
        (never before the policy's ``min_exit``).
        """
        runner, x = self._first(audio, features)
        return self.decide(self._stage_outputs(runner, x), delta=delta, stop=stop)

    def _stage_outputs(self, runner, x):
        """Yield ``(outputs, ms)`` stage by stage; lazily, so stages after the exit never run."""
        for r in [runner] + self._rest:
            out, ms = r.timed(x)
            yield out, ms
            x = out.get("fmap")

    def decide(self, stage_outputs, delta: float | None = None, stop=None) -> Result:
        """The exit decision of :meth:`classify` over an iterable of per-stage ``(outputs, ms)``
        (``outputs["embedding"]`` at a stage with an exit), consumed one stage at a time and
        abandoned at the exit. ``classify`` feeds it the interpreters; a benchmark can feed it
        recorded outputs to replay exit rules without running the network again."""
        policy = self.policy if delta is None else self.make_policy(delta)
        stage_ms = []
        n = len(self.stages)
        for i, ((out, ms), spec) in enumerate(zip(stage_outputs, self.stages)):
            stage_ms.append(ms)
            last = i == n - 1
            if spec.exit is not None:
                logits = self.logits_from_embedding(spec.exit, out["embedding"])
                ok, probs, ent = policy.accept(spec.exit, logits, is_last=last)
                if (ok or (stop is not None and spec.exit >= policy.min_exit
                           and stop(spec.exit, probs))) and (
                        last or self.min_exits[int(np.argmax(probs))] <= spec.exit):
                    return self._result(spec.exit, logits, probs, ent, stage_ms)
        raise RuntimeError("bundle has no exit on its last stage")  # export guarantees one

    def classify_batch(self, audio=None, features=None, delta: float | None = None,
                       progress: bool = False) -> list:
        """:meth:`classify` over ``(n, samples)`` audio or ``(n, frames, n_mels)`` features."""
        data = audio if audio is not None else features
        key = "audio" if audio is not None else "features"
        it = range(len(data))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="classify", unit="clip")
        return [self.classify(**{key: data[i]}, delta=delta) for i in it]

    def run_all(self, audio=None, features=None) -> dict:
        """Every stage once: ``{"logits": (E, C), "embeddings": [..], "tflite_logits": [..],
        "stage_ms": [..]}`` (logits from the numpy heads, per exit in exit order)."""
        runner, x = self._first(audio, features)
        logits, embs, tfl, stage_ms = [], [], [], []
        for r, spec in zip([runner] + self._rest, self.stages):
            out, ms = r.timed(x)
            stage_ms.append(ms)
            if spec.exit is not None:
                emb = np.asarray(out["embedding"], np.float32).reshape(-1)
                embs.append(emb)
                logits.append(self.logits_from_embedding(spec.exit, emb))
                if "logits" in out:
                    tfl.append(np.asarray(out["logits"]).reshape(-1))
            if "fmap" in out:
                x = out["fmap"]
        return {"logits": np.stack(logits), "embeddings": embs, "tflite_logits": tfl,
                "stage_ms": stage_ms}

    def run_stage(self, k: int, x=None, *, audio=None, features=None) -> dict:
        """Stage ``k`` (1-based) alone, through the interpreter :meth:`classify` uses for it:
        ``{"fmap", "embedding", "logits"}`` by name (no ``fmap`` on the last stage).

        Stage 1 takes ``audio=`` (raw samples, as :meth:`classify`) or ``features=`` (log-mel);
        stage k > 1 takes ``x``, stage k-1's ``fmap``. Nothing is stored: this is for comparing
        two interpreters, or a bundle and its Keras model, stage by stage on the same input.
        """
        k = int(k)
        if not 1 <= k <= len(self.stages):
            raise ValueError(f"stage {k}: the bundle has stages 1..{len(self.stages)}")
        if k == 1:
            runner, x = self._first(audio, features)
        elif audio is not None or features is not None or x is None:
            raise ValueError(f"stage {k} takes x= (stage {k - 1}'s fmap), not audio or features")
        else:
            runner = self._rest[k - 2]
        return runner.run(x)

    def exit_logits(self, audio=None, features=None) -> np.ndarray:
        """Logits of every exit for one clip, ``(E, C)`` (all stages run; for evaluation)."""
        return self.run_all(audio, features)["logits"]

    def exit_logits_batch(self, audio=None, features=None, progress: bool = False) -> np.ndarray:
        """``(n, E, C)`` logits for a batch of clips."""
        data = audio if audio is not None else features
        key = "audio" if audio is not None else "features"
        it = range(len(data))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="exit logits", unit="clip")
        return np.stack([self.exit_logits(**{key: data[i]}) for i in it])

    def embeddings(self, audio=None, features=None) -> list:
        """Head inputs per exit (list of ``(D_k,)``), for CWR* enrolment."""
        return self.run_all(audio, features)["embeddings"]

    def timed_classify(self, audio=None, features=None):
        """:meth:`classify` plus end-to-end wall ms (policy and numpy heads included)."""
        t = time.perf_counter()
        r = self.classify(audio=audio, features=features)
        return r, (time.perf_counter() - t) * 1e3
