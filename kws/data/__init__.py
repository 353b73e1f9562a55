"""Speech datasets read the way their users have them on disk, with speaker-disjoint splits.

``load_dataset(spec, task=..., seed=...)`` returns a :class:`Dataset` of :class:`Clip`s;
features and training pipelines live in :mod:`bnnkws.kws.features.cache` and
:mod:`bnnkws.kws.features.pipeline`. Transcribed sentences (:mod:`.transcripts`) are cut into
a word corpus in MSWC's layout by forced alignment (:mod:`.align`, :mod:`.words`). Nothing
here imports TensorFlow.
"""
from .base import (BACKGROUND, SILENCE, SPLITS, UNKNOWN, Clip, ClipList, Dataset, check_file,
                   speaker_from_name)
from .spec import DatasetError, detect_kind, load_dataset, parse_spec, same_dataset
from .multi import merge, sources
from .speech_commands import LABELS12, WORDS12

__all__ = ["Clip", "ClipList", "Dataset", "DatasetError", "load_dataset", "parse_spec",
           "same_dataset", "detect_kind", "check_file", "speaker_from_name", "SPLITS", "SILENCE",
           "UNKNOWN", "BACKGROUND", "LABELS12", "WORDS12", "merge", "sources"]
