"""apply_spec against the official preprocessing vectors (tv_preprocess.safetensors), case list read from the pack."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radfinder.io.volume import Volume
from radfinder.preprocess import PreprocessSpec, apply_spec, load_source, plan_geometry, spaced_volume


def _pack(compat_dir):
    from safetensors.numpy import load_file

    tensors = load_file(str(compat_dir / "tv_preprocess.safetensors"))
    manifest = json.loads((compat_dir / "manifest.json").read_text())
    cases = manifest["files"]["tv_preprocess.safetensors"].get("cases", {})
    names = sorted({k.split(".", 1)[0] for k in tensors})
    assert names, "no preprocessing cases in the pack"
    return tensors, cases, names


def _check_case(pre, tensors, name, spec):
    ref = tensors[f"{name}.pixel_values"]
    win = pre.windows()
    assert win.dtype == np.float16 and win.shape == ref.shape
    # Exact float16 equality, not a tolerance: the pack says the official windows are reproducible bit for bit.
    assert np.array_equal(win.view(np.uint16), ref.view(np.uint16)), f"{name}: windows differ"
    assert tuple(pre.grid) == tuple(int(g) for g in tensors[f"{name}.grid_size"].reshape(-1))
    np.testing.assert_array_equal(pre.window_locations(), tensors[f"{name}.window_locations"])
    np.testing.assert_allclose(pre.affine, tensors[f"{name}.output_affine"], atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def pack(compat_dir):
    return compat_dir, *_pack(compat_dir)


def test_every_case_from_the_nifti_files(pack):
    compat_dir, tensors, cases, names = pack
    spec = PreprocessSpec()
    for name in names:
        nifti = cases.get(name, {}).get("nifti_file", f"{name}.nii.gz")
        vol = load_source(compat_dir / nifti)
        if name in cases and "input_axcodes" in cases[name]:
            assert vol.orientation == cases[name]["input_axcodes"]  # taken from the header
        pre = apply_spec(vol, spec)
        _check_case(pre, tensors, name, spec)
        geom = plan_geometry(vol.shape, vol.affine, spec)
        np.testing.assert_allclose(geom.spaced_affine, tensors[f"{name}.spaced_affine"], atol=1e-6, rtol=0)
        if name in cases:
            assert list(geom.spaced_shape) == cases[name]["spaced_shape_after_orientation_and_spacing"]
        assert pre.spaced_shape == geom.spaced_shape and pre.crop_start == geom.crop_start


def test_every_case_from_raw_int16_and_affine(pack):
    """The same from the stored raw voxels: Volume may be int16 HU or float32.

    The official run read the affine from the NIfTI header, i.e. in float32; `input_affine` holds the intended
    decimal values. With the float32 affine the windows are exact; with the decimal one the sampling positions
    move by ~1e-8 voxel, which may flip a float16 rounding but stays far inside the pack's 1e-3 tolerance."""
    _, tensors, cases, names = pack
    spec = PreprocessSpec()
    for name in names:
        slope, inter = cases.get(name, {}).get("scl_slope_inter", [1.0, 0.0])
        hu = tensors[f"{name}.raw_int16"].astype(np.float32) * np.float32(slope) + np.float32(inter)
        header_affine = tensors[f"{name}.input_affine"].astype(np.float32).astype(np.float64)
        for arr in (hu.astype(np.int16), hu):
            _check_case(apply_spec(Volume(arr, header_affine), spec), tensors, name, spec)
        pre = apply_spec(Volume(hu.astype(np.int16), tensors[f"{name}.input_affine"]), spec)
        ref = tensors[f"{name}.pixel_values"].astype(np.float32)
        assert np.abs(pre.windows().astype(np.float32) - ref).max() <= 1e-3
        np.testing.assert_allclose(pre.affine, tensors[f"{name}.output_affine"], atol=1e-5, rtol=0)


def test_spaced_float32_volume(pack):
    _, tensors, cases, names = pack
    spec = PreprocessSpec()
    checked = 0
    for name in names:
        key = f"{name}.spaced_volume_float32"
        if key not in tensors:
            continue
        slope, inter = cases.get(name, {}).get("scl_slope_inter", [1.0, 0.0])
        hu = (tensors[f"{name}.raw_int16"].astype(np.float32) * slope + inter).astype(np.int16)
        header_affine = tensors[f"{name}.input_affine"].astype(np.float32).astype(np.float64)
        spaced, affine = spaced_volume(Volume(hu, header_affine), spec)
        assert spaced.shape == tensors[key].shape and spaced.dtype == np.float32
        assert np.abs(spaced - tensors[key]).max() <= 1e-6
        np.testing.assert_allclose(affine, tensors[f"{name}.spaced_affine"], atol=1e-6, rtol=0)
        checked += 1
    assert checked, "the pack holds no spaced_volume_float32 tensor"


def test_depth_cells_map_back_to_mm(pack):
    compat_dir, tensors, cases, names = pack
    spec = PreprocessSpec()
    vol = load_source(compat_dir / f"{names[0]}.nii.gz")
    pre = apply_spec(vol, spec)
    geom = plan_geometry(vol.shape, vol.affine, spec)
    k = spec.window[2] // spec.depth_tokens_per_window
    assert pre.depth_cell == geom.depth_cell == k
    for cell in range(geom.n_depth_cells):
        lo, hi = pre.depth_cell_bounds_mm(cell)
        assert (lo, hi) == geom.depth_cell_bounds_mm(cell)
        assert hi - lo == pytest.approx(spec.depth_cell_mm)
        # world z of every voxel centre in the cell maps back to the cell, and lies within its bounds
        ijk = np.array([[0.0, 0.0, d] for d in range(cell * k, (cell + 1) * k)])
        xyz = geom.voxel_to_world(ijk)
        assert (geom.depth_cell_of_world(xyz) == cell).all()
        assert ((xyz[:, 2] > lo) & (xyz[:, 2] < hi)).all()
