"""plan_geometry / apply_spec against independent references: world-coordinate scipy interpolation for every
orientation, SimpleITK for oblique volumes, and hand-computed crop/pad and rounding rules."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from radfinder.errors import VolumeReadError
from radfinder.io.volume import Volume
from radfinder.preprocess import PreprocessSpec, apply_spec, plan_geometry, spaced_volume
from radfinder.preprocess.geometry import round_half_even

SMALL = dict(window=(16, 16, 8), depth_tokens_per_window=2)


def _smooth_volume(shape, seed=0):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*(np.linspace(0, 1, n) for n in shape), indexing="ij")
    hu = 900 * np.sin(5 * grids[0] + 2) * np.cos(4 * grids[1]) + 700 * grids[2] - 300
    hu += rng.normal(0, 60, shape)
    return np.clip(hu, -1024, 3000).astype(np.int16)


def _affine(perm, signs, spacing, origin):
    a = np.eye(4)
    a[:3, :3] = 0
    for i, (ax, sg) in enumerate(zip(perm, signs, strict=True)):
        a[ax, i] = sg * spacing[i]
    a[:3, 3] = origin
    return a


def _window01(hu, spec):
    lo, hi = spec.hu_window
    return np.clip((np.asarray(hu, np.float64) - lo) / (hi - lo), 0, 1)


def _reference_sample(values, src_affine, out_affine, out_shape, order=1):
    """Independent resampler: world position of every output voxel -> source voxel coords -> scipy."""
    idx = np.indices(out_shape).reshape(3, -1).T.astype(np.float64)
    world = idx @ out_affine[:3, :3].T + out_affine[:3, 3]
    src = (world - src_affine[:3, 3]) @ np.linalg.inv(src_affine[:3, :3]).T
    src = np.clip(src, 0, np.array(values.shape) - 1)
    return map_coordinates(values, src.T, order=order, mode="nearest").reshape(out_shape)


@pytest.mark.parametrize(
    "perm,signs", [((0, 1, 2), (-1, -1, 1)), ((1, 2, 0), (-1, -1, 1)), ((2, 0, 1), (1, -1, -1)), ((0, 2, 1), (1, 1, 1))]
)
def test_any_orientation_matches_world_space_reference(perm, signs):
    spec = PreprocessSpec(**SMALL)
    shape, spacing = (23, 19, 11), (1.3, 0.9, 2.5)
    hu = _smooth_volume(shape)
    aff = _affine(perm, signs, spacing, (12.5, -40.0, 7.25))
    geom = plan_geometry(shape, aff, spec)
    # Independent geometry: per world axis, extent of the voxel centres and the size rule.
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in shape]))) @ aff[:3, :3].T + aff[:3, 3]
    np.testing.assert_allclose(geom.spaced_affine[:3, 3], corners.min(axis=0), atol=1e-9)
    np.testing.assert_allclose(geom.spaced_affine[:3, :3], np.diag(spec.spacing), atol=1e-12)
    extent = corners.max(axis=0) - corners.min(axis=0)
    assert geom.spaced_shape == tuple(round_half_even(e / s + 1) for e, s in zip(extent, spec.spacing, strict=True))
    assert not geom.oblique
    spaced, _ = spaced_volume(Volume(hu, aff), spec)
    ref = _reference_sample(_window01(hu, spec), aff, geom.spaced_affine, geom.spaced_shape)
    assert np.abs(spaced - ref).max() < 1e-6
    # The final image is that volume cast to float16, cropped/padded at crop_start.
    pre = apply_spec(Volume(hu, aff), spec)
    (h0, h1), (w0, w1), (d0, d1) = geom.valid_box
    cs = geom.crop_start
    inner = pre.image[h0:h1, w0:w1, d0:d1]
    np.testing.assert_array_equal(
        inner, spaced[h0 + cs[0] : h1 + cs[0], w0 + cs[1] : w1 + cs[1], d0 + cs[2] : d1 + cs[2]].astype(np.float16)
    )
    assert pre.image.sum(dtype=np.float64) == pytest.approx(inner.sum(dtype=np.float64))  # the padding is zero


def test_crop_and_pad_rules():
    spec = PreprocessSpec(spacing=(1.0, 1.0, 1.0), window=(128, 128, 32))
    # spaced sizes equal the input sizes at unit spacing
    geom = plan_geometry((272, 100, 17), np.eye(4), spec)
    assert geom.crop_start == (272 // 2 - 256 // 2, -((128 - 100) // 2), -((32 - 17) // 2))
    assert geom.shape == (256, 128, 32) and geom.grid == (2, 1, 1)
    geom = plan_geometry((300, 129, 95), np.eye(4), spec)
    assert geom.crop_start == (150 - 128, 64 - 64, 47 - 32) and geom.shape == (256, 128, 64)
    none = plan_geometry((300, 129, 95), np.eye(4), PreprocessSpec(spacing=(1.0, 1.0, 1.0), crop="none"))
    assert none.shape == (384, 256, 96) and none.crop_start == (-42, -63, 0) and none.grid == (3, 2, 3)
    assert none.valid_box == ((42, 342), (63, 192), (0, 95))
    np.testing.assert_allclose(none.affine[:3, 3], [-42, -63, 0])


def test_output_size_rounds_half_to_even():
    spec = PreprocessSpec(spacing=(3.0, 3.0, 3.0))
    # (n - 1) * 1.5 / 3 + 1: n = 20 -> 10.5 -> 10, n = 22 -> 11.5 -> 12, n = 21 -> 11
    geom = plan_geometry((20, 22, 21), np.diag([1.5, 1.5, 1.5, 1.0]), spec)
    assert geom.spaced_shape == (10, 12, 11)


def test_identity_grid_reproduces_intensities_exactly():
    """Input already at the spec grid: every output voxel is the window of its own source voxel."""
    spec = PreprocessSpec(**SMALL, spacing=(0.75, 0.75, 3.0))
    hu = _smooth_volume((32, 16, 24), seed=3)
    aff = _affine((0, 1, 2), (-1, -1, 1), (0.75, 0.75, 3.0), (10.0, 20.0, -30.0))  # LPS: flips x and y
    pre = apply_spec(Volume(hu, aff), spec)
    expected = ((hu[::-1, ::-1, :].astype(np.float32) + 1000) / np.float32(2000)).clip(0, 1).astype(np.float16)
    np.testing.assert_array_equal(pre.image, expected)
    geom = plan_geometry(hu.shape, aff, spec)
    # a source voxel lands on its mirrored index
    np.testing.assert_allclose(geom.source_to_voxel(np.array([3.0, 5.0, 7.0])), [28, 10, 7], atol=1e-9)
    xyz = geom.voxel_to_world(np.array([[1.5, 2.0, 3.25]]))
    np.testing.assert_allclose(geom.world_to_voxel(xyz), [[1.5, 2.0, 3.25]], atol=1e-9)


def test_nearest_after_and_pad_value_options():
    shape, spacing = (21, 18, 13), (1.13, 0.97, 2.3)
    hu = _smooth_volume(shape, seed=5)
    aff = _affine((0, 1, 2), (1, 1, 1), spacing, (0.0, 0.0, 0.0))
    base = PreprocessSpec(**SMALL)
    geom = plan_geometry(shape, aff, base)

    near = spaced_volume(Volume(hu, aff), base.model_copy(update={"interpolation": "nearest"}))[0]
    ref = _reference_sample(_window01(hu, base), aff, geom.spaced_affine, geom.spaced_shape, order=0)
    assert np.abs(near - ref).max() < 1e-6

    after_spec = base.model_copy(update={"intensity_order": "after"})
    after = spaced_volume(Volume(hu, aff), after_spec)[0]
    ref_hu = _reference_sample(hu.astype(np.float64), aff, geom.spaced_affine, geom.spaced_shape)
    assert np.abs(after - _window01(ref_hu, base)).max() < 1e-6
    before = spaced_volume(Volume(hu, aff), base)[0]
    assert np.abs(after - before).max() > 1e-3  # the order really changes values where clipping bites

    padded = apply_spec(Volume(hu, aff), base.model_copy(update={"crop": "none", "pad_value": 0.25}))
    g = plan_geometry(shape, aff, base.model_copy(update={"crop": "none"}))
    (h0, h1), (w0, w1), (d0, d1) = g.valid_box
    assert padded.image.shape == g.shape and all(s % w == 0 for s, w in zip(g.shape, base.window, strict=True))
    np.testing.assert_array_equal(padded.image[h0:h1, w0:w1, d0:d1], before.astype(np.float16))
    mask = np.ones(g.shape, bool)
    mask[h0:h1, w0:w1, d0:d1] = False
    assert mask.any() and (padded.image[mask] == np.float16(0.25)).all()


def test_oblique_volume_matches_simpleitk():
    sitk = pytest.importorskip("SimpleITK")
    spec = PreprocessSpec(**SMALL, spacing=(1.0, 1.0, 2.0))
    shape, spacing = (30, 26, 14), (1.2, 1.1, 2.4)
    hu = _smooth_volume(shape, seed=7)
    a, b = np.deg2rad(20), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag(spacing)
    aff[:3, 3] = (5.0, -7.0, 11.0)
    geom = plan_geometry(shape, aff, spec)
    assert geom.oblique
    ours, spaced_aff = spaced_volume(Volume(hu, aff), spec)

    # SimpleITK works in LPS: flip x and y of every world quantity.
    flip = np.diag([-1.0, -1.0, 1.0])
    img = sitk.GetImageFromArray(_window01(hu, spec).transpose(2, 1, 0).copy())
    img.SetSpacing(spacing)
    img.SetDirection((flip @ rz @ rx).ravel().tolist())
    img.SetOrigin((flip @ aff[:3, 3]).tolist())
    res = sitk.ResampleImageFilter()
    res.SetSize(list(geom.spaced_shape))
    res.SetOutputSpacing(spec.spacing)
    res.SetOutputDirection(flip.ravel().tolist())
    res.SetOutputOrigin((flip @ spaced_aff[:3, 3]).tolist())
    res.SetInterpolator(sitk.sitkLinear)
    res.SetDefaultPixelValue(float("nan"))
    ref = sitk.GetArrayFromImage(res.Execute(img)).transpose(2, 1, 0)
    inside = np.isfinite(ref)
    assert inside.mean() > 0.3
    assert np.abs(ours[inside] - ref[inside]).max() < 1e-5
    # the axis-aligned output grid covers every source voxel centre
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in shape]))) @ aff[:3, :3].T + aff[:3, 3]
    vox = (corners - spaced_aff[:3, 3]) / np.array(spec.spacing)
    assert (vox > -0.51).all() and (vox < np.array(geom.spaced_shape) - 0.49).all()


def test_bad_volumes_are_clear_errors():
    spec = PreprocessSpec(**SMALL)
    with pytest.raises(VolumeReadError, match="singular"):
        apply_spec(Volume(np.zeros((4, 4, 4), np.int16), np.diag([1.0, 0.0, 1.0, 1.0])), spec)
    arr = np.zeros((4, 4, 4), np.float32)
    arr[1, 1, 1] = np.nan
    with pytest.raises(VolumeReadError, match="NaN"):
        apply_spec(Volume(arr, np.eye(4), {"source": "x.nii.gz"}), spec)
