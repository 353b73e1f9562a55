"""The options of ``kws train`` as one dataclass, importable without TensorFlow.

The CLI reads its defaults from here (so ``kws --help`` stays instant and no default is stated
twice); :mod:`bnnkws.kws.training.train` runs it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from bnnkws.kws.config import (BINARY_BN_EPSILON, STAGE_FILTER_ARCHS, ConfigError, ModelConfig,
                               pa_stage_bases, unsupported_options)

OPTIMIZERS = ("bop", "adam", "two-stage")
GAMMA_DECAYS = ("exp", "cosine", "none")
LR_SCHEDULES = ("cosine", "exp", "constant")

TRAIN_CONFIG_VERSION = 1


# The sharded pipeline's shards hold no teacher targets and its TensorFlow augmentation no speed
# perturbation, so these options need the in-memory pipeline.
SHARDS_LACK = "the sharded pipeline has no teacher targets or speed perturbation yet"


def memory_only(tc) -> list[str]:
    """The options set in ``tc`` that only the in-memory pipeline applies."""
    return ((["--distill"] if tc.distill is not None else [])
            + (["--speed-prob"] if tc.speed_prob else [])
            + (["--aux-only-per-epoch"] if tc.aux_only_per_epoch else [])
            + (["--data-repeat"] if tc.data_repeat else []))


class TrainError(ValueError):
    """A training option or the state of a run directory is unusable; the message says which."""


@dataclass
class TrainConfig:
    """Every option of ``kws train`` (saved as ``train_config.json`` in the run directory)."""

    # A dataset SPEC, or a list of them trained together (bnnkws.kws.data.multi).
    data: str | list = ""
    arch: str = "quicknet"
    task: Optional[str] = "12"
    width: float = 1.0
    epochs: int = 30
    # 32, not the paper's 128: with ~2,800 training clips, 128 gives 22 Bop steps per epoch and
    # Bop flips too rarely to train deeper nets (BiRealNet 41 % after 20 epochs at 128; at 32,
    # 80 % validation by epoch 17, and QuickNet ahead of its batch-128 run from epoch 13).
    batch_size: int = 32
    optimizer: Optional[str] = None  # None -> "bop" (binary) / "adam" (real-valued)
    # Bop: tuned for ~20-90 steps/epoch (a few thousand clips); see bnnkws.kws.training.optim.
    bop_threshold: float = 1e-6
    bop_gamma: float = 1e-3
    # Cosine to 10 %: an exponential decay to 1 % froze the weights by mid-run (flip ratio
    # below -9 and validation at ~40 % after 5 of 30 epochs), while cosine/0.1 kept flipping
    # and reached 85.7 % test accuracy at the last exit (runs/quicknet-bop, 30 epochs).
    bop_gamma_decay: str = "cosine"
    bop_gamma_final: float = 0.1  # gamma ends at bop_gamma * bop_gamma_final
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    lr_final: float = 0.01  # lr ends at lr * lr_final
    stage1_epochs: Optional[int] = None  # two-stage: epochs without clipping (None -> half)
    stage2_bn_momentum: float = 0.99
    exit_weights: Optional[list] = None
    head_channels: Optional[list] = None  # ModelConfig.head_channels
    stage_filters: Optional[list] = None  # ModelConfig.stage_filters
    binary_bn_epsilon: float = BINARY_BN_EPSILON  # ModelConfig.binary_bn_epsilon
    pa_bases: Optional[list] = None  # ModelConfig.pa_bases: [M, N] or one [M, N] per stage
    single_exit: Optional[int] = None
    real_valued: bool = False
    label_smoothing: float = 0.0
    seed: int = 0
    # The speaker split's seed (datasets without split lists are split by it); None = seed.
    # Apart from seed, two recipes can train on the same speakers with different inits.
    split_seed: Optional[int] = None
    out: Optional[str] = None
    resume: bool = False
    max_train_clips: Optional[int] = None
    augment: bool = True  # False turns every augmentation off
    time_shift: bool = True
    # Background noise (50 % of clips, 10-30 dB SNR) costs accuracy in 5-epoch runs (QuickNet
    # w0.5: 38 % -> 27 % at the last exit) but the 30-epoch default model was trained with it
    # (85.7 % on unseen speakers) and listens to real rooms, so it is on; --no-noise drops it.
    noise: bool = True
    gain: bool = True
    spec_augment: bool = True
    noise_prob: float = 0.5
    snr_db: tuple = (10.0, 30.0)
    # Issue 18: train the way the listener hears. Extra noise recordings (folders or files) are
    # mixed in besides the dataset's own; offset_prob/partial_prob place words anywhere in the
    # window or cut them (-> _unknown_); see bnnkws.kws.features.augment.AugmentConfig.
    noise_dirs: Optional[list] = None
    offset_prob: float = 0.0
    partial_prob: float = 0.0
    generated_noise_prob: float = 0.0
    # Share of clips low-passed at a cutoff uniform in band_limit_hz (a narrow-band channel).
    band_limit_prob: float = 0.0
    band_limit_hz: tuple = (3400.0, 7000.0)
    # Share of clips played at a speed factor uniform in speed_range (new "speakers" from the
    # real ones; bnnkws.kws.features.augment.speed_perturb). In-memory pipeline only.
    speed_prob: float = 0.0
    speed_range: tuple = (0.9, 1.1)
    # Class-balanced task loss: class c's clips weigh n_c ** -class_balance (normalised so the
    # mean weight over the training clips is 1). 0 = every clip counts 1; 1 = every class
    # counts the same; 0.5 between (pooled corpora leave on/off with a seventh of up's clips).
    class_balance: float = 0.0
    # Compile each training step with XLA (Keras' jit_compile): the same computation fused into
    # fewer kernels; not part of the trajectory (float rounding aside), so a run may resume
    # with it on or off.
    jit_compile: bool = False
    # Auxiliary vocabulary heads (training only, bnnkws.kws.data.vocab): one per exit, classifying
    # the clip's word; aux_data adds corpora (dataset SPECs) whose clips train with their word;
    # aux_holdout words get no auxiliary class (None = vocab.DEFAULT_HOLDOUT); each aux head's
    # loss weight is aux_weight times its exit's weight.
    aux_vocab: bool = False
    aux_data: Optional[list] = None
    aux_synth: Optional[list] = None  # like aux_data, but non-task words train no task label
    # Draw this many of the auxiliary-only clips afresh every epoch instead of all of them
    # (a 30k-clip word corpus would otherwise be two thirds of every epoch's steps).
    aux_only_per_epoch: Optional[int] = None
    # With several --data corpora: how many times each one's training clips take part in every
    # epoch (one whole number per corpus; None = once each), so a small corpus that is the one
    # scored is not drowned by a large one.
    data_repeat: Optional[list] = None
    aux_holdout: Optional[list] = None
    aux_min_clips: int = 1  # fewer training clips than this: the word gets no auxiliary class
    aux_weight: float = 0.5
    # aux_margin > 0 makes the auxiliary heads additive-margin softmax (AM-softmax) heads, a
    # metric-learning loss: logits aux_scale * (cos(w_c, e) - aux_margin * [c = word]), with
    # no bias, so a word's embeddings must sit closer to their own class vector than to any
    # other by the margin (bnnkws.kws.training.train.am_softmax_ce). 0 keeps the plain softmax head.
    aux_margin: float = 0.0
    aux_scale: float = 16.0
    # Embedding distillation (bnnkws.kws.training.teacher): each exit's binary embedding also learns
    # to predict a pretrained speech model's embedding of the clip (cosine loss, weight
    # distill_weight times the exit's weight); training only, in-memory pipeline.
    distill: Optional[str] = None
    distill_weight: float = 1.0
    init_from: Optional[str] = None  # a run dir whose (e.g. real-valued) weights start this one
    cache_dir: Optional[str] = None
    # Issue 20: where training runs (bnnkws.kws.training.distribute): not part of the trajectory, so
    # a run may resume on other devices. And how clips reach it (fixed on resume).
    distribute: str = "none"
    devices: Optional[int] = None
    pipeline: str = "auto"  # memory | shards | auto (shards above SHARDS_ABOVE training clips)
    shuffle_buffer: int = 4096
    eval_batch_size: int = 256
    verbose: int = 1
    version: int = TRAIN_CONFIG_VERSION

    def __post_init__(self):
        if self.exit_weights is not None:
            self.exit_weights = [float(w) for w in self.exit_weights]
        if self.head_channels is not None:
            self.head_channels = [int(c) for c in self.head_channels]
        if self.stage_filters is not None:
            self.stage_filters = [int(c) for c in self.stage_filters]
        if self.pa_bases is not None:
            self.pa_bases = [list(p) if isinstance(p, (list, tuple)) else p
                             for p in self.pa_bases]
        self.snr_db = [float(v) for v in self.snr_db]
        self.band_limit_hz = tuple(float(v) for v in self.band_limit_hz)
        self.speed_range = tuple(float(v) for v in self.speed_range)
        if isinstance(self.data, (list, tuple)):
            self.data = [str(v) for v in self.data] if len(self.data) != 1 else str(self.data[0])
        for name in ("noise_dirs", "aux_data", "aux_synth", "aux_holdout"):
            if getattr(self, name) is not None:
                setattr(self, name, [str(v) for v in getattr(self, name)])
        if self.optimizer is None:
            self.optimizer = "adam" if self.real_valued else "bop"
        self.validate()

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise TrainError(f"optimizer {self.optimizer!r} is not one of {list(OPTIMIZERS)}")
        if self.real_valued and self.optimizer != "adam":
            raise TrainError(f"--real-valued has no binary weights: use --optimizer adam, "
                             f"not {self.optimizer!r}")
        if self.epochs < 1:
            raise TrainError(f"epochs must be >= 1, got {self.epochs}")
        if self.head_channels is not None and any(c < 0 for c in self.head_channels):
            raise TrainError(f"--head-channels must be >= 0 (0 = no expansion), "
                             f"got {self.head_channels}")
        for name in unsupported_options(self.arch, self.stage_filters, self.binary_bn_epsilon):
            raise TrainError(f"--{name.replace('_', '-')} is supported for "
                             f"{', '.join(STAGE_FILTER_ARCHS)}, not --arch {self.arch}")
        if self.stage_filters is not None and any(c < 1 for c in self.stage_filters):
            raise TrainError(f"--stage-filters must be >= 1, got {self.stage_filters}")
        if not self.binary_bn_epsilon > 0:
            raise TrainError(f"--binary-bn-epsilon must be > 0, got {self.binary_bn_epsilon}")
        try:
            pa = pa_stage_bases(self.pa_bases, ModelConfig().num_exits)
        except ConfigError as e:
            raise TrainError(f"--pa-bases: {e}") from e
        if self.real_valued and any(p != (1, 1) for p in pa):
            raise TrainError("--pa-bases approximates binary convolutions; the --real-valued "
                             "twin has none (train it without --pa-bases)")
        if self.batch_size < 1:
            raise TrainError(f"batch size must be >= 1, got {self.batch_size}")
        for name in ("bop_threshold", "bop_gamma", "lr"):
            if not getattr(self, name) > 0:
                raise TrainError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.bop_gamma_decay not in GAMMA_DECAYS:
            raise TrainError(f"bop gamma decay {self.bop_gamma_decay!r} is not one of "
                             f"{list(GAMMA_DECAYS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise TrainError(f"lr schedule {self.lr_schedule!r} is not one of "
                             f"{list(LR_SCHEDULES)}")
        for name in ("bop_gamma_final", "lr_final"):
            if not 0 < getattr(self, name) <= 1:
                raise TrainError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:
            raise TrainError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.stage1_epochs is not None and not 0 <= self.stage1_epochs <= self.epochs:
            raise TrainError(f"stage1 epochs must be in 0..{self.epochs}, got {self.stage1_epochs}")
        if not 0 <= self.noise_prob <= 1:
            raise TrainError(f"noise prob must be in [0, 1], got {self.noise_prob}")
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise TrainError(f"snr_db must be (min, max) with min <= max, got {self.snr_db}")
        if len(self.band_limit_hz) != 2 or not 0 < self.band_limit_hz[0] <= self.band_limit_hz[1]:
            raise TrainError(f"band-limit-hz must be LO HI with 0 < LO <= HI, got "
                             f"{self.band_limit_hz}")
        if len(self.speed_range) != 2 or not 0.5 <= self.speed_range[0] <= self.speed_range[1] <= 2:
            raise TrainError(f"speed-range must be LO HI with 0.5 <= LO <= HI <= 2, got "
                             f"{self.speed_range}")
        for name in ("offset_prob", "partial_prob", "generated_noise_prob", "band_limit_prob",
                     "speed_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise TrainError(f"{name.replace('_', '-')} must be in [0, 1], "
                                 f"got {getattr(self, name)}")
        if self.offset_prob + self.partial_prob > 1:
            raise TrainError(f"offset-prob + partial-prob must be <= 1, got "
                             f"{self.offset_prob} + {self.partial_prob}")
        if not 0 <= self.class_balance <= 1:
            raise TrainError(f"class-balance must be in [0, 1], got {self.class_balance}")
        if not self.aux_weight >= 0:
            raise TrainError(f"aux-weight must be >= 0, got {self.aux_weight}")
        if not 0 <= self.aux_margin < 1:
            raise TrainError(f"aux-margin must be in [0, 1) (a cosine margin), "
                             f"got {self.aux_margin}")
        if not self.aux_scale > 0:
            raise TrainError(f"aux-scale must be > 0, got {self.aux_scale}")
        if self.aux_margin and not self.aux_vocab:
            raise TrainError("--aux-margin needs --aux-vocab (it is the auxiliary heads' loss)")
        if self.distill is not None:
            from bnnkws.kws.training.teacher import TEACHERS

            if self.distill not in TEACHERS:
                raise TrainError(f"--distill {self.distill!r}: choose one of {list(TEACHERS)}")
        if self.pipeline == "shards" and memory_only(self):
            raise TrainError(f"{' and '.join(memory_only(self))}: in-memory pipeline only "
                             f"({SHARDS_LACK}); drop --pipeline shards")
        if not self.distill_weight >= 0:
            raise TrainError(f"distill-weight must be >= 0, got {self.distill_weight}")
        if (self.aux_data or self.aux_synth or self.aux_holdout is not None) \
                and not self.aux_vocab:
            raise TrainError("--aux-data/--aux-synth/--aux-holdout need --aux-vocab")
        if self.aux_min_clips < 1:
            raise TrainError(f"--aux-min-clips must be >= 1, got {self.aux_min_clips}")
        if self.distribute not in ("none", "mirrored", "multiworker"):
            raise TrainError(f"--distribute {self.distribute!r}: choose none, mirrored or "
                             f"multiworker")
        if self.pipeline not in ("auto", "memory", "shards"):
            raise TrainError(f"--pipeline {self.pipeline!r}: choose auto, memory or shards")
        if self.shuffle_buffer < 1:
            raise TrainError(f"--shuffle-buffer must be >= 1, got {self.shuffle_buffer}")
        if self.max_train_clips is not None and self.max_train_clips < 1:
            raise TrainError(f"max train clips must be >= 1, got {self.max_train_clips}")
        if self.data_repeat is not None:
            n_data = len(self.data) if isinstance(self.data, list) else 1
            if len(self.data_repeat) != n_data or any(int(k) < 1 for k in self.data_repeat):
                raise TrainError(f"--data-repeat {','.join(map(str, self.data_repeat))}: one "
                                 f"whole number >= 1 for each of the {n_data} --data corpora")
        if self.aux_only_per_epoch is not None:
            if self.aux_only_per_epoch < 1:
                raise TrainError(f"--aux-only-per-epoch must be >= 1, got "
                                 f"{self.aux_only_per_epoch}")
            if not (self.aux_vocab and self.aux_synth):
                raise TrainError("--aux-only-per-epoch draws from the --aux-only corpora: "
                                 "give --aux-vocab and at least one --aux-only SPEC")

    @property
    def stage1(self) -> int:
        if self.optimizer != "two-stage":
            return 0
        return self.epochs // 2 if self.stage1_epochs is None else int(self.stage1_epochs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def speaker_split_seed(self) -> int:
        return self.seed if self.split_seed is None else int(self.split_seed)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise TrainError(f"unknown train config keys: {sorted(unknown)}")
        return cls(**d)
