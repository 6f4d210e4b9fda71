"""Loading a model for inference and turning any scan input into the model's own preprocessed windows."""

from __future__ import annotations

from pathlib import Path

import torch

from ..device import resolve_device
from ..errors import CheckpointError, ConfigError, RadfinderError
from ..io.volume import Volume
from ..preprocess.apply import Preprocessed

ScanInput = str | Path | Volume | Preprocessed


def load_model(checkpoint_or_preset: str | Path, device: str | torch.device | None = "auto", seed: int = 0):
    """A `RadFinderModel` in eval mode on `device` ("auto": CUDA when present, else CPU).

    checkpoint_or_preset: a checkpoint directory (`save_pretrained` output or an official HF export) or a Hugging
        Face id `ORG/NAME[@REV]` (resolved by `radfinder.models.hub`; repo id and commit in `model.hub_sources`;
        an existing local path always wins); the model
        then carries the checkpoint's own preprocessing spec (`model.preprocess_spec`). A preset name (`tiny`,
        `small`, `radfinder-vitl`) builds randomly initialised weights (seeded by `seed`, so two loads agree)
        with the RadFinder spec: useful for tests, benchmarks and feature-extraction dry runs, not for results.
    """
    from ..models import PRESETS, RadFinderModel
    from ..models.hub import looks_like_hub_id

    dev = resolve_device(device)
    path = Path(checkpoint_or_preset)
    if path.is_dir() or looks_like_hub_id(str(checkpoint_or_preset)):
        model = RadFinderModel.from_pretrained(str(checkpoint_or_preset))
        model.source = str(model.checkpoint_dir)  # the local folder (a hub id's snapshot): where its bank lives
    elif str(checkpoint_or_preset) in PRESETS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = RadFinderModel(str(checkpoint_or_preset))
        model.source = f"preset:{checkpoint_or_preset}"
    elif path.exists():
        raise CheckpointError(f"{path}: not a checkpoint directory")
    else:
        raise ConfigError(
            f"{checkpoint_or_preset!r} is neither a checkpoint directory, a Hugging Face id (ORG/NAME[@REV]) nor a "
            f"model preset ({', '.join(PRESETS)})"
        )
    model.to(dev)
    model.eval()
    model.requires_grad_(False)
    return model


def model_device(model) -> torch.device:
    return model.criterion.t.device


def model_dtype(model) -> torch.dtype:
    return model.criterion.t.dtype


def as_volume(scan: str | Path | Volume) -> Volume:
    from ..io import load_volume

    if isinstance(scan, Volume):
        return scan
    if isinstance(scan, str | Path):
        return load_volume(scan)
    raise RadfinderError(f"expected a scan path or a Volume, got {type(scan).__name__}")


def preprocess_for(model, scan: ScanInput) -> tuple[Preprocessed, Volume | None]:
    """Apply the model's own spec to `scan` (a path, a `Volume`, or an already preprocessed volume whose spec hash
    must equal the model's). Returns the preprocessed volume and the source `Volume` (None for `Preprocessed`)."""
    from ..preprocess import apply_spec

    spec = model.preprocess_spec
    if isinstance(scan, Preprocessed):
        if scan.spec_hash != spec.hash():
            raise ConfigError(
                f"scan was preprocessed with spec {scan.spec_hash}, but the model expects {spec.hash()} "
                "(pass the raw scan to use the model's own spec)"
            )
        return scan, None
    volume = as_volume(scan)
    return apply_spec(volume, spec), volume


def check_depth_tokens(model, pre: Preprocessed) -> int:
    """Depth cells per window of the model's window encoder, checked against the spec (cell geometry needs both)."""
    tokens = int(getattr(model.backbone_image, "depth_tokens", 8))
    per_window = pre.window[2] // pre.depth_cell
    if tokens != per_window:
        raise ConfigError(
            f"the window encoder gives {tokens} depth tokens per window but the preprocessing spec defines "
            f"{per_window} depth cells per window (depth_tokens_per_window): depth positions would be wrong"
        )
    return tokens
