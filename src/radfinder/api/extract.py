"""Dataset-wide frozen-feature extraction with a RadFinder window encoder or the ASTRA ResNet-152.

`extract_dataset` resolves the inputs (files and folders, a list file, or a CT-RATE split), the window encoder and
its preprocessing spec, the device and the shard (torchrun's RANK / WORLD_SIZE / LOCAL_RANK when launched by it),
then runs `radfinder.features.extract_features` into a `FeatureStore`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..features import ExtractItem, ExtractSummary, FeatureStore, extract_features, items_from_paths, state_dict_hash
from ..models.accel import maybe_compile
from ..preprocess.spec import PreprocessSpec, resolve_spec

BACKBONES = ("astra-resnet152",)


@dataclass
class WindowEncoderChoice:
    encoder: torch.nn.Module
    spec: PreprocessSpec
    description: dict[str, Any]  # the FeatureStore backbone description (with "hash")
    feature_dim: int


def extraction_device(device: str | torch.device | None = "auto") -> torch.device:
    """ "auto": cuda:LOCAL_RANK when CUDA is present (cuda:0 outside torchrun), else CPU."""
    from ..device import resolve_device

    if device in (None, "auto") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return resolve_device(device)


def choose_window_encoder(
    model: str | Path | None = None,
    backbone: str | None = None,
    spec: str | Path | PreprocessSpec | None = None,
    device: torch.device | str = "cpu",
    spectre: str | Path | None = None,
) -> WindowEncoderChoice:
    """The window encoder of a checkpoint / preset (`model`) or a named backbone (`backbone`), with its spec.

    A checkpoint's own spec is used; `spec` may only repeat it. Presets and backbones use `spec` (default: the
    RadFinder spec). `spectre`: SPECTRE component files (folder or hub id, e.g. cclaess/SPECTRE) whose backbone
    replaces a preset's random window encoder (the frozen encoder RadFinder's features come from).
    """
    from .model import load_model

    if (model is None) == (backbone is None):
        raise ConfigError("give exactly one window encoder: a model (checkpoint or preset) or a backbone")
    if backbone is not None:
        if backbone != "astra-resnet152":
            raise ConfigError(f"unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})")
        from ..models.astra import SAFETENSORS_NAME, load_astra_resnet152

        chosen = resolve_spec(spec)
        encoder = load_astra_resnet152(device)
        if tuple(encoder.window_size) != tuple(chosen.window):
            raise ConfigError(f"the ASTRA backbone takes {encoder.window_size} windows, the spec {chosen.window}")
        desc = {"kind": "resnet3d", "name": backbone, "weights": SAFETENSORS_NAME,
                "hash": state_dict_hash(encoder)}  # fmt: skip
        return WindowEncoderChoice(encoder.eval(), chosen, desc, encoder.feature_dim)

    from ..models.hub import looks_like_hub_id

    loaded = load_model(model, device=device)
    is_checkpoint = Path(str(model)).is_dir() or looks_like_hub_id(str(model))
    if spectre is not None:
        from ..models.spectre import load_spectre

        if is_checkpoint:
            raise ConfigError(f"--spectre loads a backbone into a preset (e.g. radfinder-vitl); {model} is a "
                              "checkpoint with its own encoder")
        load_spectre(loaded, spectre, parts=("backbone",))
    if spec is not None:
        wanted = resolve_spec(spec)
        if is_checkpoint and wanted.hash() != loaded.preprocess_spec.hash():
            raise ConfigError(
                f"{model} was trained with preprocessing spec {loaded.preprocess_spec.hash()}, --spec gives "
                f"{wanted.hash()}: features must be extracted with the checkpoint's own spec (drop --spec)"
            )
        loaded.preprocess_spec = wanted
    encoder = loaded.backbone_image
    desc = {
        "kind": loaded.config.window_encoder.kind,
        "name": loaded.config.name,
        "source": str(model),
        # repo id + commit of a released checkpoint: part of the cache key, so another revision is refused
        "hub": loaded.hub_sources.get("checkpoint") or loaded.hub_sources.get("spectre"),
        "config": loaded.config.window_encoder.model_dump(mode="json"),
        "hash": state_dict_hash(encoder),
    }
    return WindowEncoderChoice(encoder.eval(), loaded.preprocess_spec, desc, int(encoder.feature_dim))


def ctrate_items(root: str | Path, split: str) -> tuple[list[ExtractItem], dict[str, Any]]:
    """CT-RATE volumes of a split as extraction items keyed by volume name, and their records (for loading)."""
    from ..data.ctrate import load_ctrate

    records = load_ctrate(root, split=split, mode="dup_all")
    items = [ExtractItem.from_record(r) for r in records]
    return items, {r.key: r for r in records}


def load_record_volume(record):
    """A dataset record's volume in HU (CT-RATE originals store raw values: HU = slope * x + intercept)."""
    from ..io.volume import Volume

    vol = record.load_volume()
    if not record.extra.get("needs_rescale"):
        return vol
    slope, inter = record.extra.get("RescaleSlope"), record.extra.get("RescaleIntercept")
    if slope is None or inter is None:
        raise ConfigError(f"{record.path}: stored values need RescaleSlope/Intercept, the metadata has none")
    hu = vol.array.astype(np.float32) * np.float32(slope) + np.float32(inter)
    if float(slope).is_integer() and float(inter).is_integer() and np.abs(hu).max(initial=0) < 32767:
        hu = hu.astype(np.int16)
    return Volume(hu, vol.affine, vol.meta)


def input_items(inputs: Sequence[str | Path] = (), list_file: str | Path | None = None) -> list[ExtractItem]:
    """Items for files, folders (NIfTI/NRRD/MHA searched recursively, DICOM series/study folders) and the paths of
    a list file, keyed by file / folder name."""
    from ..preprocess.sources import discover_sources, read_list_file

    paths: list[str | Path] = list(inputs)
    if list_file is not None:
        paths += read_list_file(list_file)
    if not paths:
        raise ConfigError("no inputs: give scan paths, --list FILE, or --ctrate ROOT")
    npz = [p for p in paths if str(p).lower().endswith(".npz")]  # discover_sources does not list NPZ files
    sources = discover_sources([p for p in paths if p not in npz]) if len(npz) < len(paths) else []
    return items_from_paths([s.path for s in sources] + [Path(p) for p in npz])


def extract_dataset(
    out: str | Path,
    inputs: Sequence[str | Path] = (),
    *,
    list_file: str | Path | None = None,
    ctrate: str | Path | None = None,
    split: str = "valid",
    model: str | Path | None = None,
    backbone: str | None = None,
    spec: str | Path | PreprocessSpec | None = None,
    batch_size: int = 8,
    shard: tuple[int, int] | None = None,
    device: str | torch.device | None = "auto",
    show_progress: bool = True,
    compile: bool = False,
    spatial: bool = False,
    masks: str | Path | None = None,
    groups: str | Path | None = None,
    spectre: str | Path | None = None,
) -> tuple[ExtractSummary, FeatureStore]:
    """Extract window features of every input of this process's shard into the cache at `out` (see module doc).
    Existing entries are skipped, so a rerun resumes. `shard` None: torchrun's RANK/WORLD_SIZE (or 0/1).
    `compile`: run the encoder through `torch.compile` (pays off on long CUDA runs). `spatial`: keep the coarse
    spatial token grid (encoders that have one). `masks`: a folder of segmentations or "auto" (the cohort's
    ``masks/`` beside the volumes): anatomy coverage per spatial token for fVLM (implies `spatial`); `groups`: the
    anatomy-groups YAML (default: fVLM's lung, heart, esophagus, aorta)."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    load_fn = None
    if ctrate is not None:
        if inputs or list_file is not None:
            raise ConfigError("--ctrate lists the volumes itself: give no other inputs")
        items, records = ctrate_items(ctrate, split)

        def load_fn(item: ExtractItem):
            return load_record_volume(records[item.key])
    else:
        items = input_items(inputs, list_file)
    dev = extraction_device(device)
    choice = choose_window_encoder(model, backbone, spec, dev, spectre=spectre)
    spatial = spatial or masks is not None
    if spatial and not getattr(choice.encoder, "has_spatial_tokens", False):
        raise ConfigError(f"the window encoder {choice.description.get('kind')!r} has no spatial tokens; spatial "
                          "features and anatomy masks need one that has (light3d, e.g. pretrained-synthetic)")
    anatomy_groups = None
    if masks is not None:
        from ..data.anatomy import load_anatomy_groups

        anatomy_groups = load_anatomy_groups(groups)
    store = FeatureStore(out, choice.spec, choice.description, choice.feature_dim, spatial=spatial)
    summary = extract_features(
        items, maybe_compile(choice.encoder, compile), store, batch_size=batch_size, device=dev, shard=shard,
        show_progress=show_progress, load_fn=load_fn, masks=masks, groups=anatomy_groups,
    )  # fmt: skip
    return summary, store
