"""A backbone coarser in depth than the depth cells says so (issue 15 point 1): the ASTRA-style ResNet-152 has 2
depth positions per 32-slice window, repeated over 8 depth tokens; model info and depth-cell outputs report it."""

from __future__ import annotations

import json

import torch
import yaml

from radfinder.cli.main import main
from radfinder.models.resnet3d import RESNET152_3D, ResNet3dWindowEncoder


def test_resnet_depth_positions_match_its_feature_map_and_are_flagged_coarse():
    with torch.device("meta"):
        enc = ResNet3dWindowEncoder(RESNET152_3D)
    assert enc.depth_positions == 2  # 32 slices / total depth stride 16
    res = enc.depth_resolution(3.0)
    assert res == {"depth_tokens_per_window": 8, "distinct_depth_positions_per_window": 2, "depth_token_mm": 12.0,
                   "depth_resolution_mm": 48.0, "coarse": True}
    # what the flag describes: the 8 tokens are 2 values, each repeated 4 times
    small = ResNet3dWindowEncoder(RESNET152_3D.__class__(layers=(1, 1, 1, 1), width=4), frozen=True)
    axis2 = small(torch.rand(1, 1, 128, 128, 32)).axis2[0]
    assert torch.unique(axis2, dim=0).shape[0] == 2


def test_model_info_reports_depth_resolution(capsys, tmp_path):
    assert main(["model-info", "radfinder-vitl", "--json"]) == 0
    fine = json.loads(capsys.readouterr().out)["depth_resolution"]
    assert fine["coarse"] is False and fine["depth_resolution_mm"] == 12.0
    cfg = {"name": "coarse", "window_encoder": {"kind": "resnet3d", "embed_dim": 2048}}
    path = tmp_path / "coarse.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["model-info", str(path), "--json"]) == 0
    coarse = json.loads(capsys.readouterr().out)["depth_resolution"]
    assert coarse["coarse"] is True and coarse["distinct_depth_positions_per_window"] == 2
    assert main(["model-info", str(path)]) == 0
    assert "COARSE: 2 distinct positions per window" in capsys.readouterr().out
