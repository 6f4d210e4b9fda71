"""The filter-bank window encoder: its shape measures against an eigen-decomposition, a nodule found where it is,
pooling that agrees across cells / depth tokens / window, standardisation, config and the weight-free names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radfinder.errors import ConfigError
from radfinder.models.config import WindowEncoderConfig
from radfinder.models.filterbank import SHAPE_MEASURES, FilterBankWindowEncoder, filterbank_dim, shape_measures
from radfinder.models.radfinder import build_window_encoder
from radfinder.models.weight_free import weight_free_config


def _window(hu: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.clip((hu + 1000.0) / 2000.0, 0, 1).astype(np.float32))[None, None]


def _expected(lam: np.ndarray) -> list[float]:
    """The measures' definitions from eigenvalues sorted l1 >= l2 >= l3 (module doc), without the gradient."""
    l1, l2, l3 = sorted(lam, reverse=True)
    tr = l1 + l2 + l3
    return [max(-l1, 0), max(-l2 - abs(l1), 0), max(-l3 - abs(l2), 0), max(l3, 0), max(l2 - abs(l3), 0),
            max(l1 - abs(l2), 0), max(-tr, 0), max(tr, 0)]  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
def test_shape_measures_match_numpy_eigenvalues(seed):
    # a quadratic field has an exact finite-difference Hessian: spacing and sigma^2 scaling included
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(3, 3)) * 20
    a = a + a.T
    spacing, sigma = (2.0, 2.0, 3.0), 5.0
    g = np.stack(np.meshgrid(*[np.arange(-3, 4) * s for s in spacing], indexing="ij"), -1)
    f = 0.5 * np.einsum("...i,ij,...j->...", g, a, g)
    got = shape_measures(torch.tensor(f, dtype=torch.float64)[None], spacing, sigma)[0, :, 3, 3, 3].numpy()
    want = _expected(np.linalg.eigvalsh(a) * sigma**2)
    np.testing.assert_allclose(got[:8], want, rtol=1e-6, atol=1e-6)
    assert got[SHAPE_MEASURES.index("gradient")] == pytest.approx(0.0, abs=1e-9)  # the field's stationary point


def _chest(nodule: tuple[int, int, int] | None = None) -> np.ndarray:
    """Air outside, a soft-tissue box (40 HU) holding a lung cavity (-850 HU), an optional 10 mm nodule (voxel
    centre; 2 x 2 x 3 mm voxels) at 40 HU."""
    hu = np.full((128, 128, 32), -1000.0)
    hu[8:120, 8:120, :] = 40.0
    hu[24:104, 24:104, :] = -850.0
    if nodule is not None:
        g = np.stack(np.meshgrid(np.arange(128) * 2.0, np.arange(128) * 2.0, np.arange(32) * 3.0, indexing="ij"), -1)
        c = np.array(nodule) * np.array([2.0, 2.0, 3.0])
        hu[np.linalg.norm(g - c, axis=-1) <= 5.0] = 40.0
    return hu


def test_a_nodule_lights_up_its_lung_cell_and_depth_token():
    enc = FilterBankWindowEncoder(spatial_grid=(8, 8))
    names = enc.feature_names()
    blob = names.index("lung max bright_blob@3mm")
    frac = names.index("lung fraction")
    nod = (72, 40, 18)  # cell (4, 2), depth token 4
    x = torch.cat([_window(_chest()), _window(_chest(nod))])
    f = enc.raw_features(x, spatial=True)
    cells = f.spatial[1, ..., blob]
    assert tuple(int(i) for i in np.unravel_index(int(cells.argmax()), cells.shape)) == (4, 2, 4)
    assert f.axis2[1, :, blob].argmax() == 4
    assert f.cls[1, blob] > 3 * f.cls[0, blob]  # the plain chest has no bright blob in its lung
    # the lung field is the cavity: full in an inner cell, empty in a corner cell (air outside the box)
    assert f.spatial[0, 4, 4, 0, frac] == pytest.approx(1.0) and f.spatial[0, 0, 0, 0, frac] == 0.0


def test_pooling_agrees_across_cells_tokens_and_window():
    enc = FilterBankWindowEncoder(spatial_grid=(8, 8))
    names = enc.feature_names()
    f = enc.raw_features(_window(_chest((40, 80, 10))), spatial=True)
    for i, name in enumerate(names):
        if " max " in f" {name}":  # maxima: the window's is the largest cell's, a token's the largest of its cells
            torch.testing.assert_close(f.cls[0, i], f.spatial[0, ..., i].max())
            torch.testing.assert_close(f.axis2[0, :, i], f.spatial[0, ..., i].amax((0, 1)))
    lung, body = names.index("lung fraction"), names.index("body fraction")
    # region fractions (square-root compressed) add up to the whole window and to every depth token
    torch.testing.assert_close(f.cls[0, lung] ** 2 + f.cls[0, body] ** 2, torch.tensor(1.0))
    torch.testing.assert_close(f.axis2[0, :, lung] ** 2 + f.axis2[0, :, body] ** 2, torch.ones(8))
    cavity = (80 * 80) / (128 * 128)  # the cavity's share of every slice
    assert f.cls[0, lung] ** 2 == pytest.approx(cavity, abs=0.05)


def test_standardization_fits_train_windows_and_travels_with_the_model(tmp_path):
    from radfinder.models import RadFinderModel
    from radfinder.models.config import resolve_model_config

    cfg = resolve_model_config("tiny")
    cfg.window_encoder = WindowEncoderConfig.model_validate(weight_free_config("filterbank"))
    model = RadFinderModel(cfg).eval()
    enc = model.backbone_image
    rng = np.random.default_rng(0)
    x = torch.cat([_window(_chest((40 + 8 * i, 60, 12)) + rng.normal(0, 20, (128, 128, 32))) for i in range(3)])
    raw = enc.raw_features(x)
    enc.fit_standardization(x)
    ref = raw.axis2.reshape(-1, enc.feature_dim).double()
    torch.testing.assert_close(enc.axis2_mean, ref.mean(0).float(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(enc.axis2_std, ref.std(0).clamp_min(1e-3).float(), atol=1e-4, rtol=1e-3)
    f = enc(x)
    keep = enc.cls_std > 1e-3
    assert torch.allclose(f.cls.mean(0)[keep], torch.zeros(1), atol=1e-3)
    model.save_pretrained(tmp_path / "m")
    back = RadFinderModel.from_pretrained(tmp_path / "m").eval()
    torch.testing.assert_close(back.backbone_image(x).axis2, f.axis2)


def test_builder_options_width_and_settings_hash():
    from radfinder.features import state_dict_hash

    enc = build_window_encoder(WindowEncoderConfig.model_validate(weight_free_config("filterbank")))
    assert isinstance(enc, FilterBankWindowEncoder) and enc.feature_dim == filterbank_dim() == 130
    assert not enc.has_spatial_tokens and len(enc.feature_names()) == enc.feature_dim
    with pytest.raises(ConfigError, match="embed_dim"):
        build_window_encoder(WindowEncoderConfig(kind="filterbank", embed_dim=64))
    with pytest.raises(ConfigError, match="unknown options"):
        build_window_encoder(WindowEncoderConfig(kind="filterbank", embed_dim=130, options={"sigma": 3}))
    other = build_window_encoder(WindowEncoderConfig.model_validate(
        weight_free_config("filterbank", spacing_mm=(0.75, 0.75, 3.0))))  # fmt: skip
    assert state_dict_hash(other) != state_dict_hash(enc)  # other settings: another feature cache


def test_histogram_plus_filterbank_is_both_side_by_side():
    cfg = WindowEncoderConfig.model_validate(weight_free_config("histogram+filterbank", spatial_grid=(4, 4)))
    enc = build_window_encoder(cfg)
    assert enc.feature_dim == 80 + 130 and enc.has_spatial_tokens
    f = enc(_window(_chest((40, 80, 10))), spatial=True)
    assert f.spatial.shape == (1, 4, 4, 8, 210) and f.axis2.shape == (1, 8, 210)
    with pytest.raises(ValueError, match="weight-free encoder"):
        weight_free_config("filters")


@pytest.mark.parametrize(("scales", "edges"), [((), (-1000.0, 0.0, 500.0)), ((2.0,), (-1000.0, 0.0, 0.0)),
                                               ((2.0,), (0.0, -1000.0))])
def test_an_encoder_without_scales_or_with_unordered_band_edges_is_refused(scales, edges):
    # either fault alone makes features that mean nothing (no filter, or a band that holds no HU value)
    with pytest.raises(ValueError, match="at least one scale and strictly increasing band edges"):
        FilterBankWindowEncoder(scales_mm=scales, band_edges=edges)
    FilterBankWindowEncoder(scales_mm=(2.0,), band_edges=(-1000.0, 0.0, 500.0))  # the well-formed neighbour builds
