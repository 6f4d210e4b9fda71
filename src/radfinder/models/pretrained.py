"""Self-describing checkpoints: a directory that rebuilds the model offline with nothing else.

The file layout and its reader/writer are `radfinder.models.pretrained_files` (below the model class); this module
adds the entry point that builds the model, `from_pretrained`, and re-exports the file helpers.
"""

from __future__ import annotations

from pathlib import Path

from .pretrained_files import (
    CONFIG,
    FORMAT,
    FORMAT_VERSION,
    PREPROCESS,
    TEXT_DIR,
    WEIGHTS,
    PretrainedDir,
    load_pretrained_weights,
    read_pretrained_dir,
    read_safetensors,
    safetensors_shapes,
    save_pretrained,
    spec_from_official,
)
from .radfinder import RadFinderModel

__all__ = [
    "CONFIG", "FORMAT", "FORMAT_VERSION", "PREPROCESS", "TEXT_DIR", "WEIGHTS", "PretrainedDir", "from_pretrained",
    "load_pretrained_weights", "read_pretrained_dir", "read_safetensors", "safetensors_shapes", "save_pretrained",
    "spec_from_official",
]


def from_pretrained(directory: str | Path, device=None, dtype=None) -> RadFinderModel:
    """Load a directory written by `save_pretrained` or an official HF export; the model is returned in eval mode."""
    return RadFinderModel.from_pretrained(directory, device=device, dtype=dtype)
