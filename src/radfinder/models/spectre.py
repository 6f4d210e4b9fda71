"""Initialising a RadFinderModel from the SPECTRE component files (`cclaess/SPECTRE`), by folder or hub id.

The files are torch pickles of plain state dicts (the compat SPEC, section 9); they are opened with
`torch.load(weights_only=True)`, which only rebuilds tensors and containers (no code runs). How each part is loaded
(backbone non-strict and folded, combiner strict with `axis_patch_proj` from `patch_proj`, heads copied into the
`_copy` twins, text with base-weight LoRA semantics) is `models.official.load_spectre_components`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import CheckpointError
from .hub import ALLOW_PATTERNS, resolve_weights
from .official import LoadReport, load_spectre_components

PARTS = ("backbone", "combiner", "image_head", "text_head", "text")
SPECTRE_FILES = dict(zip(PARTS, ALLOW_PATTERNS["spectre"], strict=True))  # part -> file name in the repo


def read_component(path: Path) -> dict[str, torch.Tensor]:
    """One component file: a mapping of parameter names to tensors."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip errors do not name the file
        raise CheckpointError(f"{path}: unreadable component file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(sd, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in sd.items()):
        raise CheckpointError(f"{path}: expected a state dict (parameter name -> tensor)")
    return dict(sd)


def load_spectre(model, name_or_path: str | Path, parts: tuple[str, ...] = PARTS) -> dict[str, LoadReport]:
    """Load the SPECTRE parts present in a folder or hub repo (`ORG/NAME[@REV]`, e.g. cclaess/SPECTRE) into
    `model`; `parts` limits which (e.g. ("backbone",) for a frozen feature extractor). A part named in `parts` whose
    file is missing is an error. The repo id and commit go into `model.hub_sources["spectre"]`."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise CheckpointError(f"unknown SPECTRE parts {sorted(unknown)} (known: {', '.join(PARTS)})")
    resolved = resolve_weights(name_or_path, "spectre")
    if not resolved.path.is_dir():
        raise CheckpointError(f"{name_or_path}: SPECTRE folder not found (a folder with {SPECTRE_FILES['backbone']} "
                              "..., or a hub id such as cclaess/SPECTRE)")
    missing = [SPECTRE_FILES[p] for p in parts if not (resolved.path / SPECTRE_FILES[p]).is_file()]
    if missing:
        raise CheckpointError(f"{resolved.path}: SPECTRE component files missing: {', '.join(missing)}")
    components = {p: read_component(resolved.path / SPECTRE_FILES[p]) for p in parts}
    reports = load_spectre_components(model, **components)
    backbone = reports.get("backbone")
    if backbone is not None:  # non-strict (the file holds more than the encoder), but every encoder weight must come
        lost = [k for k in backbone.missing if not k.endswith("rope.periods")]  # periods: a recomputed constant
        if lost:
            raise CheckpointError(f"{resolved.path / SPECTRE_FILES['backbone']}: no weights for {len(lost)} window-"
                                  f"encoder tensors ({', '.join(lost[:5])}, ...): not this architecture's backbone")
    if resolved.source is not None:
        model.hub_sources["spectre"] = resolved.source.as_dict()
    return reports
