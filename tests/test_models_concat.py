"""The concat window encoder: its features are its parts' features side by side, saved and loaded with the model."""

from __future__ import annotations

import pytest
import torch

from radfinder.errors import ConfigError
from radfinder.models.config import resolve_model_config
from radfinder.models.radfinder import RadFinderModel

PARTS = [{"kind": "histogram", "embed_dim": 80, "options": {"spatial_grid": [2, 2], "depth_tokens": 2}},
         {"kind": "light3d", "embed_dim": 8, "feature_dim": 6,
          "options": {"widths": [4, 8, 8], "blocks": [0, 0, 0], "spatial_grid": [2, 2]}}]  # fmt: skip


def _model() -> RadFinderModel:
    torch.manual_seed(0)
    cfg = resolve_model_config("tiny", ["window_encoder.window_size=[32,32,8]"])
    cfg.window_encoder = type(cfg.window_encoder).model_validate(
        {"kind": "concat", "embed_dim": 86, "window_size": [32, 32, 8], "options": {"parts": PARTS}})
    return RadFinderModel(cfg).eval()


def test_concat_features_are_the_parts_side_by_side(tmp_path):
    model = _model()
    enc = model.backbone_image
    assert enc.feature_dim == 86 and enc.has_spatial_tokens and enc.depth_tokens == 2
    x = torch.rand(3, 1, 32, 32, 8)
    enc.fit_standardization(x)
    got = enc(x, spatial=True)
    hist, light = (p.forward_features(x, spatial=True) for p in enc.parts)
    for name in ("cls", "patch_average", "axis2", "spatial"):
        want = torch.cat([getattr(hist, name), getattr(light, name)], dim=-1)
        torch.testing.assert_close(getattr(got, name), want)
    model.save_pretrained(tmp_path / "m")
    back = RadFinderModel.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(back.backbone_image(x, spatial=True).spatial, got.spatial)


def test_concat_checks_its_width():
    cfg = resolve_model_config("tiny")
    cfg.window_encoder = type(cfg.window_encoder).model_validate(
        {"kind": "concat", "embed_dim": 10, "window_size": [32, 32, 8], "options": {"parts": PARTS}})
    with pytest.raises(ConfigError, match="86-d features"):
        RadFinderModel(cfg)
