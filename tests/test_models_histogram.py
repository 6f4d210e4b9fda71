from __future__ import annotations

import numpy as np
import pytest
import torch

from radfinder.errors import ConfigError
from radfinder.models.config import WindowEncoderConfig
from radfinder.models.histogram import DEFAULT_HU_EDGES, HistogramWindowEncoder
from radfinder.models.radfinder import build_window_encoder


def _window(hu: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.clip((hu + 1000.0) / 2000.0, 0, 1).astype(np.float32))[None, None]


def test_fractions_land_in_the_right_quadrant_slab_and_bin():
    enc = HistogramWindowEncoder()
    hu = np.full((128, 128, 32), -1000.0)  # air everywhere
    hu[:64, 64:, 8:12] = 50.0  # soft tissue: quadrant (left half of axis 0, upper half of axis 1), slab 2
    f = enc(_window(hu))
    nb = enc.n_bins
    soft_bin = int(np.searchsorted(np.array(DEFAULT_HU_EDGES), 50.0, side="right"))
    axis2 = f.axis2[0].reshape(8, 4, nb) ** 2  # back to fractions
    assert torch.allclose(axis2.sum(-1), torch.ones(8, 4))
    assert axis2[2, 1, soft_bin] == pytest.approx(1.0) and axis2[2, 1, 0] == 0
    assert axis2[3, 1, soft_bin] == 0 and axis2[2, 0, soft_bin] == 0
    whole = f.patch_average[0].reshape(4, nb)
    assert whole[1, soft_bin] == pytest.approx(1 / 8) and whole[0, 0] == pytest.approx(1.0)
    assert torch.allclose(f.cls, f.patch_average.sqrt())


def test_builder_checks_width_and_registers_the_kind():
    enc = build_window_encoder(WindowEncoderConfig(kind="histogram", embed_dim=4 * (len(DEFAULT_HU_EDGES) + 1)))
    assert isinstance(enc, HistogramWindowEncoder) and enc.feature_dim == 80
    assert not any(p.requires_grad for p in enc.parameters())
    with pytest.raises(ConfigError, match="embed_dim"):
        build_window_encoder(WindowEncoderConfig(kind="histogram", embed_dim=64))
    with pytest.raises(ConfigError, match="unknown options"):
        build_window_encoder(WindowEncoderConfig(kind="histogram", embed_dim=80, options={"bins": 3}))


def test_standardization_is_fitted_saved_and_loaded(tmp_path):
    from radfinder.models import RadFinderModel
    from radfinder.models.config import resolve_model_config

    cfg = resolve_model_config("tiny", ["window_encoder.kind=histogram", "window_encoder.embed_dim=80"])
    model = RadFinderModel(cfg).eval()
    rng = np.random.default_rng(0)
    windows = _window(rng.normal(-300, 400, size=(128, 128, 32))).repeat(3, 1, 1, 1, 1)
    windows[1] = windows[1] * 0.5
    enc = model.backbone_image
    enc.fit_standardization(windows)
    f = enc(windows)
    assert torch.allclose(f.cls.mean(0)[enc.cls_std > 1e-3], torch.zeros(1), atol=1e-4)
    model.save_pretrained(tmp_path / "m")
    back = RadFinderModel.from_pretrained(tmp_path / "m").eval()
    torch.testing.assert_close(back.backbone_image(windows).axis2, f.axis2)
