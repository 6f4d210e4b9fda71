"""The pretrained ASTRA inflated 3D ResNet-152 CT backbone as a radfinder window encoder (extra `radfinder[astra]`).

The weights themselves (shard packages, checks, safetensors cache) are `radfinder.models.astra_weights`.

Input convention (not stated by the packages; derived from the weights): windows in [0, 1] from HU
[-1000, 1000] (RadFinder's preprocessing, unchanged), depth on the kernel's inflated axis, the grey channel
replicated to the three stem channels (folded into the stem). Evidence: the BatchNorm running statistics match
the activations of real CT best this way (median KL(batch || running) over all 155 BN layers, 3 real chest/abdomen
windows: 0.068 for [0, 1] depth-first vs 0.12 with depth last and > 5 with ImageNet mean/std normalisation).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .astra_weights import (
    ASTRA_BYTES,
    ASTRA_EMBED_DIM,
    ASTRA_EXTRA,
    ASTRA_NUM_TENSORS,
    ASTRA_SHA256,
    ASTRA_SHARD_MODULES,
    SAFETENSORS_NAME,
    AstraWeightsNotInstalled,
    astra_available,
    astra_shard_paths,
    astra_weights_path,
    join_astra_shards,
    load_astra_state_dict,
    read_astra_checkpoint,
    weights_cache_dir,
)
from .resnet3d import RESNET152_3D, ResNet3dWindowEncoder

__all__ = [
    "ASTRA_BYTES", "ASTRA_EMBED_DIM", "ASTRA_EXTRA", "ASTRA_NUM_TENSORS", "ASTRA_SHA256", "ASTRA_SHARD_MODULES",
    "SAFETENSORS_NAME", "AstraWeightsNotInstalled", "astra_available", "astra_shard_paths", "astra_weights_path",
    "join_astra_shards", "load_astra_resnet152", "load_astra_state_dict", "read_astra_checkpoint",
    "weights_cache_dir",
]


def load_astra_resnet152(
    device: str | torch.device = "cpu",
    *,
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path | None = None,
    inplane_pool: int = 1,
    depth_tokens: int = 8,
) -> ResNet3dWindowEncoder:
    """The pretrained ASTRA I3ResNet-152 as a frozen window encoder (embed_dim 2048), weights loaded strictly.

    Windows (N, 1, 128, 128, 32) in [0, 1] -> `WindowFeatures` (cls, patch_average (N, 2048), axis2 (N, 8, 2048)).
    `encoder(windows, chunk_size=k)` bounds memory. `encoder.load_seconds` records how long loading took.
    """
    t0 = time.perf_counter()
    state_dict, metadata = load_astra_state_dict(cache_dir)
    with torch.device("meta"):  # no random init of 117 M parameters that are overwritten right away
        encoder = ResNet3dWindowEncoder(RESNET152_3D, depth_tokens=depth_tokens, inplane_pool=inplane_pool)
    encoder.to_empty(device=device)
    encoder.load_backbone_state_dict(state_dict, source=f"ASTRA I3ResNet-152 weights ({SAFETENSORS_NAME})")
    encoder.to(dtype=dtype)
    encoder.weights_metadata = metadata
    encoder.load_seconds = time.perf_counter() - t0
    return encoder
