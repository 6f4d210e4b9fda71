"""The one preprocessing contract (`PreprocessSpec`), the function that applies it, its geometry, and the
preprocessed-volume cache."""

from .apply import Preprocessed, apply_spec, apply_spec_labels, spaced_volume
from .cache import (
    PreprocessedCache,
    entry_path,
    load_preprocessed,
    read_header,
    save_preprocessed,
    source_identity,
)
from .dataset import DatasetReport, preprocess_dataset
from .geometry import Geometry, plan_geometry
from .sources import Source, discover_sources, load_source, parse_shard, read_list_file, shard_of
from .spec import PRESETS, PreprocessSpec, resolve_spec

__all__ = [
    "PRESETS",
    "DatasetReport",
    "Geometry",
    "Preprocessed",
    "PreprocessSpec",
    "PreprocessedCache",
    "Source",
    "apply_spec",
    "apply_spec_labels",
    "discover_sources",
    "entry_path",
    "load_preprocessed",
    "load_source",
    "parse_shard",
    "plan_geometry",
    "preprocess_dataset",
    "read_header",
    "read_list_file",
    "resolve_spec",
    "save_preprocessed",
    "shard_of",
    "source_identity",
    "spaced_volume",
]
