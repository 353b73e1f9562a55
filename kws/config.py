"""The one model configuration object: it travels from training into the exported bundle.

Labels, exits, temperatures, the exit threshold and the log-mel normalisation live here and
nowhere else; the frontend parameters are nested as a :class:`FrontendConfig`. numpy-free and
TensorFlow-free so the deployed runtime can read it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bnnkws.frontend.config import DEFAULT_FRONTEND, FrontendConfig
from bnnkws.kws.fileio import atomic_write_text

ARCHS = ("quicknet", "birealnet", "meliusnet", "binarydensenet")
STAGE_FILTER_ARCHS = ("quicknet",)  # architectures with stage_filters / binary_bn_epsilon
BINARY_BN_EPSILON = 1e-5  # the default: every batch norm's epsilon, as models were built before

# Speech Commands 12-class task order (10 words + silence + unknown), the default label set.
SPEECH_COMMANDS_12 = [
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    "_silence_", "_unknown_",
]

CONFIG_VERSION = 1


class ConfigError(ValueError):
    """A configuration value (or file) is invalid; the message names it."""


PA_MAX_BASES = 8  # piecewise approximation: at most 8 weight / activation bases (the paper's M)


def pa_stage_bases(value, num_stages: int) -> list:
    """``ModelConfig.pa_bases`` as one ``(M, N)`` tuple per stage (ConfigError if malformed).

    ``None`` or ``[M, N]`` apply to every stage; a list of ``num_stages`` pairs sets each
    stage. M (weight bases) and N (activation bases) are whole numbers in 1..PA_MAX_BASES.
    """
    if value is None:
        return [(1, 1)] * num_stages
    pairs = None
    try:
        if len(value) == 2 and all(isinstance(v, int) for v in value):
            pairs = [tuple(value)] * num_stages
        elif all(len(p) == 2 for p in value):
            pairs = [tuple(p) for p in value]
    except TypeError:
        pass
    if pairs is None or len(pairs) != num_stages:
        raise ConfigError(f"pa_bases must be [M, N] or {num_stages} [M, N] pairs (one per "
                          f"stage), got {value!r}")
    for m, n in pairs:
        if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= PA_MAX_BASES
                   for v in (m, n)):
            raise ConfigError(f"pa_bases: M and N must be whole numbers in 1..{PA_MAX_BASES}, "
                              f"got {value!r}")
    return pairs


def unsupported_options(arch: str, stage_filters=None,
                        binary_bn_epsilon: float = BINARY_BN_EPSILON) -> list:
    """Names of the QuickNet-only options set away from their default for another ``arch``."""
    if arch in STAGE_FILTER_ARCHS:
        return []
    return [name for name, on in (("stage_filters", stage_filters is not None),
                                  ("binary_bn_epsilon", binary_bn_epsilon != BINARY_BN_EPSILON)) if on]


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model and interpret its outputs.

    Exits are numbered from 1. ``temperatures`` and ``exit_loss_weights`` always have
    ``num_exits`` entries indexed by exit number - 1, also for a single-exit (E_s) model, whose
    only exit is exit ``single_exit`` (named ``f"exit{single_exit}"``).
    """

    arch: str = "quicknet"
    width: float = 1.0
    labels: list = field(default_factory=lambda: list(SPEECH_COMMANDS_12))
    num_exits: int = 5
    single_exit: Optional[int] = None
    binary: bool = True
    temperatures: Optional[list] = None  # None -> [1.0] * num_exits
    delta: Any = 0.3  # exit threshold on the (normalised) entropy; or one per exit (a list)
    entropy_normalized: bool = True
    min_exit: int = 1
    norm_mean: float = 0.0  # log-mel normalisation applied inside stage 1: (x - mean) / std
    norm_std: float = 1.0
    exit_loss_weights: Optional[list] = None  # None -> [1.0] * num_exits
    # Per exit: 0, or the width of a binary 1x1 convolution between the stage's feature map and
    # the exit's pooling (a richer embedding for an exit whose stage is narrow). None -> 0s.
    head_channels: Optional[list] = None
    # Per stage: filters at width 1.0, or None for the architecture's own plan (QuickNet only).
    # A wider tail (e.g. 64,128,256,512,512, larq-zoo QuickNet's 512-filter last section) makes
    # the later stages dearer than the early ones, which is where early exits save time.
    stage_filters: Optional[list] = None
    # Epsilon of the batch norms after QuickNet's binary convolutions (bconv -> ReLU -> BN). Their
    # input is a count; a channel that almost never fires gets a variance of ~1e-3 and a
    # multiplier of ~30, which LCE's popcount output transform rounds at float32 spacing of
    # K x multiplier and which turns one flipped input sign into a jump of 60. An epsilon of
    # one count bounds the multiplier by gamma and leaves live channels (variance ~1e3) alone.
    binary_bn_epsilon: float = BINARY_BN_EPSILON
    # Piecewise approximation (Zhu et al. 2020, bnnkws.kws.models.pa): [M, N] weight and
    # activation bases of every binary convolution in the stages, or one [M, N] per stage;
    # each becomes M x N binary convolutions. None (= [1, 1]) is the 1-bit network. Exit heads
    # stay 1-bit; the real-valued twin (binary=False) ignores it.
    pa_bases: Optional[list] = None
    frontend: FrontendConfig = field(default_factory=lambda: DEFAULT_FRONTEND)

    def __post_init__(self):
        if isinstance(self.frontend, dict):
            self.frontend = FrontendConfig.from_dict(self.frontend)
        self.labels = [str(x) for x in self.labels]
        if self.temperatures is None:
            self.temperatures = [1.0] * int(self.num_exits)
        if self.exit_loss_weights is None:
            self.exit_loss_weights = [1.0] * int(self.num_exits)
        self.temperatures = [float(t) for t in self.temperatures]
        self.exit_loss_weights = [float(w) for w in self.exit_loss_weights]
        if self.head_channels is None:
            self.head_channels = [0] * int(self.num_exits)
        self.head_channels = [int(c) for c in self.head_channels]
        if self.stage_filters is not None:
            self.stage_filters = [int(c) for c in self.stage_filters]
        if self.pa_bases is not None:  # JSON gives lists; keep lists so round trips compare equal
            self.pa_bases = [list(p) if isinstance(p, (list, tuple)) else p
                             for p in self.pa_bases]
        self.validate()

    # -- checks -------------------------------------------------------------------------------
    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"arch {self.arch!r} is not one of {list(ARCHS)}")
        if not self.width > 0:
            raise ConfigError(f"width must be > 0, got {self.width}")
        if len(self.labels) < 2:
            raise ConfigError(f"need at least 2 labels, got {self.labels}")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"duplicate labels in {self.labels}")
        if not isinstance(self.num_exits, int) or self.num_exits < 1:
            raise ConfigError(f"num_exits must be a positive int, got {self.num_exits!r}")
        if self.single_exit is not None and not 1 <= self.single_exit <= self.num_exits:
            raise ConfigError(f"single_exit must be in 1..{self.num_exits}, got {self.single_exit}")
        if len(self.temperatures) != self.num_exits:
            raise ConfigError(
                f"temperatures has {len(self.temperatures)} entries, need num_exits={self.num_exits}")
        if any(not t > 0 for t in self.temperatures):
            raise ConfigError(f"temperatures must be > 0, got {self.temperatures}")
        if len(self.exit_loss_weights) != self.num_exits:
            raise ConfigError(f"exit_loss_weights has {len(self.exit_loss_weights)} entries, "
                              f"need num_exits={self.num_exits}")
        if any(w < 0 for w in self.exit_loss_weights):
            raise ConfigError(f"exit_loss_weights must be >= 0, got {self.exit_loss_weights}")
        if len(self.head_channels) != self.num_exits or any(c < 0 for c in self.head_channels):
            raise ConfigError(f"head_channels needs {self.num_exits} values >= 0 (0 = no "
                              f"expansion), got {self.head_channels}")
        for name in unsupported_options(self.arch, self.stage_filters, self.binary_bn_epsilon):
            raise ConfigError(f"{name} is supported for {list(STAGE_FILTER_ARCHS)}, "
                              f"not {self.arch!r}")
        if self.stage_filters is not None:
            if len(self.stage_filters) != self.num_exits or any(c < 1 for c in self.stage_filters):
                raise ConfigError(f"stage_filters needs {self.num_exits} values >= 1, "
                                  f"got {self.stage_filters}")
        if not self.binary_bn_epsilon > 0:
            raise ConfigError(f"binary_bn_epsilon must be > 0, got {self.binary_bn_epsilon}")
        pa_stage_bases(self.pa_bases, self.num_exits)
        if not 1 <= self.min_exit <= self.num_exits:
            raise ConfigError(f"min_exit must be in 1..{self.num_exits}, got {self.min_exit}")
        if not self.norm_std > 0:
            raise ConfigError(f"norm_std must be > 0, got {self.norm_std}")
        ds = self.delta if isinstance(self.delta, (list, tuple)) else [self.delta]
        if not ds or any(not isinstance(d, (int, float)) or not d >= 0 for d in ds):
            raise ConfigError(f"delta must be a number >= 0 or a list of them, got {self.delta!r}")
        if len(ds) > 1 and len(ds) != self.num_exits:
            raise ConfigError(f"per-exit delta has {len(ds)} entries, the model {self.num_exits} "
                              f"exits")

    # -- derived ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def active_exits(self) -> list:
        """1-based numbers of the exits the built model has (one for an E_s baseline)."""
        if self.single_exit is not None:
            return [self.single_exit]
        return list(range(1, self.num_exits + 1))

    @property
    def num_stages(self) -> int:
        """Stages the built model runs: all of them, or 1..single_exit for an E_s baseline."""
        return self.single_exit if self.single_exit is not None else self.num_exits

    @property
    def stage_pa_bases(self) -> list:
        """``(M, N)`` per stage (all ``(1, 1)`` for the 1-bit network); see ``pa_bases``."""
        return pa_stage_bases(self.pa_bases, self.num_exits)

    @property
    def uses_pa(self) -> bool:
        """Whether any binary convolution has more than one weight or activation base."""
        return self.binary and any(p != (1, 1) for p in self.stage_pa_bases)

    @property
    def exit_names(self) -> list:
        """Output names of the built model, e.g. ``["exit1", ..., "exit5"]`` or ``["exit3"]``."""
        return [f"exit{k}" for k in self.active_exits]

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["frontend"] = self.frontend.to_dict()
        d["version"] = CONFIG_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        version = d.pop("version", CONFIG_VERSION)
        if version > CONFIG_VERSION:
            raise ConfigError(f"model config version {version} is newer than supported "
                              f"({CONFIG_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))

    def save(self, path) -> Path:
        """Write atomically (temp file + rename) so an interrupted save never leaves half a file."""
        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path) -> "ModelConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model config not found: {path}")
        try:
            return cls.from_json(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from e
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e

    def replace(self, **changes) -> "ModelConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)
