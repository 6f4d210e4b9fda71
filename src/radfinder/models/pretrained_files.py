"""The files of a self-describing checkpoint directory: written from a model, read back into a model's parts.

Layout written by `save_pretrained`:
  model.safetensors   weights, official key layout with the `model.` prefix (so official tools read it too)
  config.json         {"format": "radfinder", "format_version": 1, "model": <RadFinderConfig, explicit sizes>}
  preprocess.json     the PreprocessSpec the model expects
  text/               the text backbone's HF config.json and the tokenizer files
  labels.json         the label vocabulary (`radfinder.text.vocabulary`); absent in older checkpoints = ctrate18

`read_pretrained_dir` also reads official HF exports (config.json with `radfinder_model_config`). Only safetensors is
ever read: no pickle. The model is built from these parts by `RadFinderModel.from_pretrained`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError, RadfinderError
from ..preprocess.spec import PreprocessSpec, resolve_spec
from ..text.vocabulary import CTRATE18
from ..text.vocabulary import FILENAME as VOCAB_FILE
from .config import RadFinderConfig
from .hub import HubSource, companion_tokenizer, companions_of_folder, resolve_weights
from .official import PREFIX, config_from_official, load_official_state_dict
from .text import has_tokenizer_files, load_tokenizer

FORMAT = "radfinder"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PREPROCESS = "preprocess.json"
TEXT_DIR = "text"


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.chmod(tmp, 0o644)  # safetensors creates 0600 files; checkpoints are meant to be shared
    os.replace(tmp, path)


def save_pretrained(model, directory: str | Path, preprocess: PreprocessSpec | str | None = None) -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {PREFIX + k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    _atomic_write(directory / WEIGHTS, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))

    text_dir = directory / TEXT_DIR
    text_dir.mkdir(exist_ok=True)
    model.backbone_text.config.save_pretrained(text_dir)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(text_dir)
    cfg = model.config.model_dump(mode="json")
    # The text backbone is rebuilt from text/config.json, whatever its original source was.
    cfg["text"].update(source="hf", path=None, hf_config=None, tokenizer=None)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "model_type": "radfinder", "model": cfg,
              "original_text_source": model.config.text.source}
    origin = weights_origin(model)
    if origin:  # the released weights (repo id + commit) these were loaded or trained from
        config["derived_from"] = origin
    _atomic_write(directory / CONFIG, lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))

    spec = resolve_spec(preprocess if preprocess is not None else getattr(model, "preprocess_spec", None))
    _atomic_write(directory / PREPROCESS, lambda p: spec.save(p))
    vocab = getattr(model, "label_vocabulary", None) or CTRATE18
    _atomic_write(directory / VOCAB_FILE, lambda p: p.write_text(vocab.to_json()))
    return directory


def weights_origin(model) -> dict[str, dict[str, str]]:
    """Hub origin of a model's weights, by part: what it was loaded from by id (`hub_sources`), else what the
    checkpoint it was loaded from was itself derived from."""
    return {**(getattr(model, "derived_from", None) or {}), **(getattr(model, "hub_sources", None) or {})}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not a RadFinder checkpoint directory?)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path}: weights file missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from exc


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape from the header only (no tensor data read)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: weights file missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from exc


def spec_from_official(cfg: dict) -> PreprocessSpec:
    ip = cfg.get("image_preprocessing") or {}
    try:
        return PreprocessSpec(
            orientation=ip.get("orientation_axcodes", "RAS"),
            spacing=tuple(ip.get("pixdim", (0.75, 0.75, 3.0))),
            hu_window=(ip.get("intensity_a_min", -1000.0), ip.get("intensity_a_max", 1000.0)),
            out_range=(ip.get("intensity_b_min", 0.0), ip.get("intensity_b_max", 1.0)),
            window=tuple(ip.get("sliding_window_size", (128, 128, 32))),
            dtype=ip.get("dtype", "float16"),
        )
    except Exception as exc:
        raise CheckpointError(f"image_preprocessing in config.json is not usable: {exc}") from exc


@dataclass
class PretrainedDir:
    """What a checkpoint directory holds, read and checked, before any model is built."""

    config: RadFinderConfig
    tokenizer: Any
    spec: PreprocessSpec
    weights: Path
    directory: Path | None = None  # the local folder read (a hub snapshot for a repo id)
    source: HubSource | None = None  # its hub origin (repo id, revision, commit), None for a plain local folder
    derived_from: dict | None = None  # config.json's record of the released weights the checkpoint came from
    tokenizer_source: HubSource | None = None  # the tokenizer repo of an official export, when fetched by id
    tokenizer_error: str | None = None  # why that tokenizer could not be had (shown when text is tokenized)


def read_pretrained_dir(directory: str | Path) -> PretrainedDir:
    """Read config, tokenizer and preprocessing spec of a radfinder checkpoint or an official HF export; `directory`
    may also be a Hugging Face id `ORG/NAME[@REV]` (`radfinder.models.hub`)."""
    requested = directory
    resolved = resolve_weights(directory, "checkpoint")
    directory = resolved.path
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found")
    cfg = _read_json(directory / CONFIG)
    weights = directory / WEIGHTS
    tokenizer = tokenizer_source = tokenizer_error = None
    if "radfinder_model_config" in cfg:
        try:
            model_cfg = config_from_official(cfg, safetensors_shapes(weights))
        except ConfigError as exc:
            raise CheckpointError(f"{directory / CONFIG}: {exc}") from exc
        spec = spec_from_official(cfg)
        for cand in (directory / TEXT_DIR, directory):
            if has_tokenizer_files(cand):
                tokenizer = load_tokenizer(cand)
                break
        tokenizer_source = companions_of_folder(directory).get("tokenizer")
        if tokenizer is None and companion_tokenizer(directory) is not None:
            # the export names its tokenizer repo (Qwen/Qwen3-Embedding-0.6B) instead of shipping it: fetched when
            # the checkpoint itself was asked for by hub id, else only looked up in the hub cache (a local folder
            # never starts a download); without it the image side still works, so a failure is kept for `tokenize`
            try:
                found = resolve_weights(companion_tokenizer(directory), "tokenizer", cache_only=resolved.source is None
                                        or Path(str(requested)).exists())
                tokenizer, tokenizer_source = load_tokenizer(found.path), found.source
            except RadfinderError as exc:
                tokenizer_error = str(exc)
    elif cfg.get("format") == FORMAT:
        if int(cfg.get("format_version", 0)) > FORMAT_VERSION:
            raise CheckpointError(f"{directory}: written by a newer radfinder (format {cfg['format_version']})")
        try:
            model_cfg = RadFinderConfig.model_validate(cfg["model"])
        except Exception as exc:
            raise CheckpointError(f"{directory / CONFIG}: invalid model config:\n{exc}") from exc
        text_dir = directory / TEXT_DIR
        if not (text_dir / "config.json").is_file():
            raise CheckpointError(f"{text_dir / 'config.json'}: missing (the text encoder cannot be rebuilt)")
        text = model_cfg.text.model_copy(update={"source": "hf", "path": str(text_dir)})
        model_cfg = model_cfg.model_copy(update={"text": text})
        if has_tokenizer_files(text_dir):
            tokenizer = load_tokenizer(text_dir)
        preprocess_path = directory / PREPROCESS
        try:
            spec = PreprocessSpec.model_validate(_read_json(preprocess_path))
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"{preprocess_path}: invalid preprocessing spec:\n{exc}") from exc
    else:
        raise CheckpointError(f"{directory / CONFIG}: neither a radfinder checkpoint nor an official RadFinder export")
    return PretrainedDir(config=model_cfg, tokenizer=tokenizer, spec=spec, weights=weights, directory=directory,
                         source=resolved.source, derived_from=cfg.get("derived_from"),
                         tokenizer_source=tokenizer_source, tokenizer_error=tokenizer_error)


def load_pretrained_weights(model, weights: Path) -> None:
    """Load `weights` (official key layout) into `model` strictly; the model must already be in eval mode."""
    state_dict = read_safetensors(weights)
    try:
        load_official_state_dict(model, state_dict, strict=True)
    except CheckpointError as exc:
        raise CheckpointError(f"{weights}: {exc}") from exc
