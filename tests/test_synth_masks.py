"""Segmentations of the synthetic cohort (TotalSegmentator multilabel format) and the disjoint random streams of
the pre-training and probe cohorts."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from radfinder.data.synth import make_cohort
from radfinder.data.synth.cohort import plan_cohort
from radfinder.data.synth.segmentation import LESION_BASE, lesion_id
from radfinder.data.synth.study import ANATOMY, FINDINGS, NOISE, rng_for
from radfinder.text.findings import CTRATE_FINDINGS

# TotalSegmentator v2 ids (task `total`), written out here from its class map rather than imported
V2 = {"lung_upper_lobe_left": 10, "lung_lower_lobe_left": 11, "lung_upper_lobe_right": 12,
      "lung_middle_lobe_right": 13, "lung_lower_lobe_right": 14, "esophagus": 15, "trachea": 16, "heart": 51,
      "aorta": 52}  # fmt: skip
LOBE_OF = {"right upper lobe": 12, "right middle lobe": 13, "right lower lobe": 14, "left upper lobe": 10,
           "lingula": 10, "left lower lobe": 11}  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("masks") / "c"
    make_cohort(out, 2, 11, workers=1, show_progress=False)
    return out


def _studies(root):
    return [json.loads(x) for x in (root / "truth.jsonl").read_text().splitlines() if x.strip()]


def test_every_volume_has_a_mask_on_its_own_grid_with_the_v2_organ_ids(cohort):
    classes = json.loads((cohort / "masks" / "classes.json").read_text())
    for name, cid in V2.items():
        assert classes[str(cid)] == name
    seen = set()
    for st in _studies(cohort):
        for v in st["volumes"]:
            img, seg = nib.load(cohort / v["path"]), nib.load(cohort / v["mask"])
            assert seg.shape == img.shape and np.allclose(seg.affine, img.affine)
            ids = set(np.unique(np.asarray(seg.dataobj)).tolist())
            assert ids <= {0} | {int(k) for k in classes}
            seen |= ids
    assert set(V2.values()) <= seen  # five lobes, heart, aorta, esophagus and trachea are their own structures


def test_lesion_ids_mark_the_findings_where_the_truth_puts_them(cohort):
    checked = 0
    for st in _studies(cohort):
        v = st["volumes"][0]
        seg = np.asarray(nib.load(cohort / v["mask"]).dataobj)
        aff = nib.load(cohort / v["mask"]).affine
        lesion_ids = {i for i in np.unique(seg).tolist() if i > LESION_BASE}
        positives = {lesion_id(f) for f, y in st["labels"].items() if y}
        assert lesion_ids <= positives  # no lesion id without its positive label
        for les in st["lesions"]:
            ijk = np.rint(np.linalg.inv(aff) @ np.r_[les["center_ras_mm"], 1.0])[:3].astype(int)
            if not all(0 <= ijk[a] < seg.shape[a] for a in range(3)):
                continue  # outside this reconstruction's extent
            lid = lesion_id(les["finding"])
            if lid in lesion_ids and les["finding"] not in ("Peribronchial thickening", "Pericardial effusion"):
                # its voxels lie inside the boxes of that finding's lesions (a finding may have several)
                boxes = [np.asarray(o["bbox_ras_mm"]) for o in st["lesions"] if o["finding"] == les["finding"]]
                pts = np.argwhere(seg == lid)
                world = (aff[:3, :3] @ pts.T).T + aff[:3, 3]
                inside = np.zeros(len(world), bool)
                for b in boxes:
                    inside |= np.all((world >= b[0] - 3.0) & (world <= b[1] + 3.0), axis=1)
                assert inside.all(), les["finding"]
                checked += 1
            if les.get("location") in LOBE_OF and les["finding"] in ("Lung nodule", "Consolidation"):
                # the lesion centre sits in the lobe the report names (lesion ids override lobes: look around)
                nb = seg[tuple(slice(max(0, c - 3), c + 4) for c in ijk)]
                assert LOBE_OF[les["location"]] in nb, (les["finding"], les["location"])
    assert checked >= 1


def test_pretraining_and_probe_streams_never_meet_a_demo_seed(tmp_path):
    # the same (seed, purpose, index) gives unrelated draws in each stream, for every seed a user may pick
    for seed in range(25):
        for purpose in (0, ANATOMY, FINDINGS, NOISE):
            draws = {s: rng_for(seed, purpose, 3, s).random(4).tolist() for s in ("cohort", "pretrain", "probe")}
            assert len({tuple(d) for d in draws.values()}) == 3
    demo = {p["study"] for p in plan_cohort(40, 0)}
    pre = plan_cohort(40, 0, stream="pretrain")
    assert all(p["study"].startswith("pretrain-") for p in pre) and not demo & {p["study"] for p in pre}
    # what a pre-training cohort holds: volumes, masks, truth; no DICOM, no report, no label table
    make_cohort(tmp_path / "pt", 2, 0, workers=1, show_progress=False, stream="pretrain", valid_fraction=0.0)
    names = {p.name for p in (tmp_path / "pt").iterdir()}
    assert names == {"volumes", "masks", "truth.jsonl", "cohort.json"}
    for st in _studies(tmp_path / "pt"):
        assert "texts" not in st and "references" not in st
        assert st["study"].startswith("pretrain-")
    with pytest.raises(Exception, match="stream must be one of"):
        make_cohort(tmp_path / "x", 1, 0, stream="other", show_progress=False)
    assert CTRATE_FINDINGS  # the label vocabulary the truth uses
