"""Window-encoder weights that ship inside the package (`radfinder/resources/encoders/<name>/`).

A shipped encoder is a folder with `encoder.safetensors` and `card.json`: how it was made (command, resolved
config, git commit, cohort seed and size, hardware, wall time), the `WindowEncoderConfig` that rebuilds it, the
preprocessing spec it was trained for, the sha256 of the weights file and its probe table. A folder written by
`radfinder pretrain-encoder` (`<run>/encoder`, with `encoder.json` in place of the card) loads the same way.
Loading reads safetensors only (no pickle), needs no network, and refuses a file whose sha256 differs from the
card's.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..errors import CheckpointError, ConfigError

SHIPPED_ENCODERS = ("pretrained-synthetic",)
WEIGHTS = "encoder.safetensors"


def encoder_dir(name_or_path: str | Path) -> Path:
    """The folder of a shipped encoder name, or a folder path as given."""
    if str(name_or_path) in SHIPPED_ENCODERS:
        return Path(str(resources.files("radfinder") / "resources" / "encoders" / str(name_or_path)))
    path = Path(name_or_path)
    if not (path / WEIGHTS).is_file():
        raise ConfigError(
            f"unknown window-encoder weights {str(name_or_path)!r}: not shipped ({', '.join(SHIPPED_ENCODERS)}) "
            f"nor a folder with {WEIGHTS}"
        )
    return path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_card(name_or_path: str | Path) -> dict[str, Any]:
    d = encoder_dir(name_or_path)
    for name in ("card.json", "encoder.json"):
        if (d / name).is_file():
            return json.loads((d / name).read_text())
    raise CheckpointError(f"{d}: no card.json or encoder.json beside {WEIGHTS}")


def load_encoder_weights(name_or_path: str | Path) -> dict[str, torch.Tensor]:
    """The encoder's state dict, checked against the card's sha256 when the card records one."""
    d = encoder_dir(name_or_path)
    card = read_card(d)
    if card.get("sha256") and sha256_of(d / WEIGHTS) != card["sha256"]:
        raise CheckpointError(f"{d / WEIGHTS}: sha256 differs from its card (damaged or replaced file)")
    try:
        return load_file(str(d / WEIGHTS))
    except Exception as exc:  # safetensors' own errors do not name the file
        raise CheckpointError(f"{d / WEIGHTS}: unreadable ({exc})") from exc


def window_encoder_config(name_or_path: str | Path) -> dict[str, Any]:
    """The `WindowEncoderConfig` fields of a shipped encoder, with `options.weights` naming it."""
    cfg = json.loads(json.dumps(read_card(name_or_path)["window_encoder"]))
    cfg["options"]["weights"] = str(name_or_path)
    return cfg
