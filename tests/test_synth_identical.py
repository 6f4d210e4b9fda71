"""A fixed seed draws the same cohort as before the renderer was sped up: array hashes of every volume and mask
(NIfTI) and byte hashes of every DICOM series of a two-study cohort, the expected values computed with the code
before the change (main at c7ceb89: the DICOM writer then set every element on every slice)."""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np

from radfinder.data.synth import make_cohort

EXPECTED = {
    "dataset/train_fixed/train_1/train_1_a/train_1_a_1.nii.gz": "a2b9362ed64ffc29",
    "dataset/train_fixed/train_1/train_1_a/train_1_a_2.nii.gz": "c2eef1af43c3615c",
    "dataset/valid_fixed/valid_1/valid_1_a/valid_1_a_1.nii.gz": "b08c738f94292b57",
    "masks/train_1_a_1.nii.gz": "be688383f8d6582b",
    "masks/train_1_a_2.nii.gz": "82516158283f2902",
    "masks/valid_1_a_1.nii.gz": "2f8d41bab747524d",
    "dicom/train_1_a/3": "1cb3124dc1493661",
    "dicom/train_1_a/5": "cecd3e46b993e083",
    "dicom/valid_1_a/2": "e8cdeb3191e70c83",
    "dicom/valid_1_a/201": "40c3e19152ad05b1",
}


def _digests(root) -> dict[str, str]:
    out = {}
    for f in sorted(root.rglob("*.nii.gz")):
        img = nib.load(f)
        a = np.asarray(img.dataobj)
        h = hashlib.sha256(a.tobytes() + str(a.dtype).encode() + str(a.shape).encode()
                           + np.asarray(img.affine, np.float64).tobytes())  # fmt: skip
        out[str(f.relative_to(root))] = h.hexdigest()[:16]
    for d in sorted({p.parent for p in (root / "dicom").rglob("*.dcm")}):
        h = hashlib.sha256()
        for p in sorted(d.glob("*.dcm")):
            h.update(p.name.encode() + p.read_bytes())
        out[str(d.relative_to(root))] = h.hexdigest()[:16]
    return out


def test_a_fixed_seed_renders_the_same_volumes_and_dicom_files_as_before(tmp_path):
    make_cohort(tmp_path / "c", 2, 11, res="demo", workers=1, valid_fraction=0.5, show_progress=False)
    assert _digests(tmp_path / "c") == EXPECTED
