"""apply_spec vs the equivalent MONAI pipeline on real CT (TotalSegmentator test volumes, see their SOURCE.md).

Tolerance: max |radfinder - MONAI| <= 1e-3 in [0, 1] units (about two float16 steps near 1, the pack's tolerance
for a different interpolation kernel); in practice both compute the same float64 trilinear values, so we also
require at most 1e-4 of the voxels to differ at all.
"""

from __future__ import annotations

import numpy as np
import pytest

from radfinder.preprocess import PreprocessSpec, apply_spec, load_source

# Importing MONAI alone takes ~15 s on a loaded machine, so these run with `make test-slow`; the benchmark
# (bench/bench_preprocess.py) repeats the comparison on a CT-RATE-sized volume.
pytestmark = [pytest.mark.real_data, pytest.mark.filterwarnings("ignore::FutureWarning")]

CASES = ["aorta_crop/ct_cropped.nii.gz", "pulmonary_crop/ct_cropped.nii.gz", "example_ct_sm/example_ct_sm.nii.gz"]
TOL = 1e-3


def _monai_pipeline(path, spec: PreprocessSpec) -> np.ndarray:
    torch = pytest.importorskip("torch")
    mt = pytest.importorskip("monai.transforms")
    img = mt.LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    img = mt.ScaleIntensityRange(
        a_min=spec.hu_window[0], a_max=spec.hu_window[1], b_min=spec.out_range[0], b_max=spec.out_range[1], clip=True
    )(img)
    img = mt.Orientation(axcodes=spec.orientation)(img)
    img = mt.Spacing(pixdim=spec.spacing, mode="bilinear")(img)
    img = img.to(torch.float16)
    roi = [(n // w) * w or n for n, w in zip(img.shape[1:], spec.window, strict=True)]
    img = mt.CenterSpatialCrop(roi_size=roi)(img)
    img = mt.SpatialPad(spatial_size=spec.window, method="symmetric")(img)
    return np.asarray(img[0].numpy()), np.asarray(img.affine, dtype=np.float64)


@pytest.mark.parametrize("case", CASES)
def test_matches_monai_on_real_ct(real_data, case):
    path = real_data / "totalsegmentator_ct" / case
    if not path.is_file():
        pytest.skip(f"missing {path}")
    spec = PreprocessSpec()
    ref, ref_affine = _monai_pipeline(path, spec)
    pre = apply_spec(load_source(path), spec)
    assert pre.image.shape == ref.shape
    diff = np.abs(pre.image.astype(np.float32) - ref.astype(np.float32))
    assert diff.max() <= TOL
    assert (diff > 0).mean() <= 1e-4
    np.testing.assert_allclose(pre.affine, ref_affine, atol=1e-4)
    assert 0.05 < float(pre.image.mean()) < 0.95  # real anatomy, not an empty crop
