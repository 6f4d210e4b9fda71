"""Ground truth against the files: DICOM geometry (SimpleITK as the independent reader), slice references that
resolve to real instances containing the lesion, report spans, and findings that are visible where stated."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from radfinder.data.synth.anatomy import sample_anatomy
from radfinder.data.synth.cohort import plan_cohort
from radfinder.data.synth.findings import plan_findings
from radfinder.data.synth.render import render_volumes, scan_geometry
from radfinder.data.synth.study import ANATOMY, FINDINGS, NOISE, rng_for, run_study
from radfinder.io import load_volume
from radfinder.text.findings import CTRATE_FINDINGS

SEED = 21


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict]:
    """One study with every finding, one with none (so negations and no-reference paths run too)."""
    out = tmp_path_factory.mktemp("truth")
    plans = plan_cohort(2, SEED)
    plans[0]["labels"] = [1] * 18
    plans[0]["instance_order"] = {"thin": "descending", "thick": "ascending"}
    plans[0]["export"] = ["thick", "thin"]
    plans[1]["labels"] = [0] * 18
    truths = [run_study(p, str(out), "demo", SEED, False)["truth"] for p in plans]
    return out, {"all": truths[0], "none": truths[1], "plans": plans}


def _series_files(out: Path, s: dict) -> dict[int, pydicom.Dataset]:
    files = {}
    for p in (out / s["dicom_dir"]).glob("*.dcm"):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        files[int(ds.InstanceNumber)] = ds
    return files


def test_dicom_geometry_matches_simpleitk_and_nifti(study):
    sitk = pytest.importorskip("SimpleITK")
    out, t = study
    truth = t["all"]
    for v in truth["volumes"]:
        s = next(x for x in truth["series"] if x["number"] == v["series_number"])
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(out / s["dicom_dir"])))
        img = reader.Execute()
        arr = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0))  # -> (x, y, z) like our arrays
        nii = nib.load(out / v["path"])
        data = np.asarray(nii.dataobj)
        # SimpleITK sorts by position along the normal (z ascending), which is our array order.
        assert arr.shape == data.shape == tuple(v["shape"])
        np.testing.assert_array_equal(arr, data)
        aff = nii.affine
        lps_origin = np.array(img.GetOrigin())
        np.testing.assert_allclose([-lps_origin[0], -lps_origin[1], lps_origin[2]], aff[:3, 3], atol=1e-3)
        np.testing.assert_allclose(img.GetSpacing(), np.linalg.norm(aff[:3, :3], axis=0), rtol=1e-5)
        np.testing.assert_allclose(np.array(img.GetDirection()).reshape(3, 3), np.eye(3), atol=1e-6)  # LPS axial
        assert s["n_slices"] == data.shape[2]


def test_geometry_agrees_with_radfinder_reader(study):
    out, t = study
    for v in t["all"]["volumes"]:
        s = next(x for x in t["all"]["series"] if x["number"] == v["series_number"])
        vol_dcm = load_volume(out / s["dicom_dir"])
        vol_nii = load_volume(out / v["path"])
        np.testing.assert_allclose(
            vol_dcm.world_of(np.array([[0, 0, 0], [5, 7, 3]])),
            vol_nii.world_of(np.array([[0, 0, 0], [5, 7, 3]])),
            atol=1e-3,
        )
        np.testing.assert_array_equal(np.asarray(vol_dcm.array), np.asarray(vol_nii.array))


def test_every_reference_resolves_to_a_slice_through_the_lesion(study):
    out, t = study
    truth = t["all"]
    assert truth["references"], "the all-findings study should reference some slices"
    series = {s["number"]: s for s in truth["series"]}
    files = {n: _series_files(out, s) for n, s in series.items()}
    for s in truth["series"]:
        assert sorted(files[s["number"]]) == list(range(1, s["n_slices"] + 1))
    langs = set()
    for ref in truth["references"]:
        langs.add(ref["lang"])
        text = truth["texts"][ref["lang"]][ref["field"]]
        assert text[ref["start"] : ref["end"]] == ref["text"]
        for image in ref["images"]:
            assert str(image) in ref["text"]
        if not ref["implicit_series"]:
            assert str(ref["series"]) in ref["text"]
        for image, les_id, z in zip(ref["images"], ref["lesions"], ref["slice_z_mm"], strict=True):
            ds = files[ref["series"]][image]
            zf = float(ds.ImagePositionPatient[2])
            lesion = truth["lesions"][les_id]
            assert lesion["finding"] == ref["finding"]
            assert abs(zf - lesion["center_ras_mm"][2]) <= float(ds.SliceThickness) / 2 + 1e-3
            assert abs(zf - z) < 1e-3
    assert langs == {"en", "de"}
    # Descending order really counts down as z goes up.
    thin = next(s for s in truth["series"] if s["role"] == "thin")
    f = files[thin["number"]]
    assert float(f[1].ImagePositionPatient[2]) > float(f[2].ImagePositionPatient[2])


def test_distractors_are_not_references(study):
    _, t = study
    for truth in (t["all"], t["none"]):
        spans = [(r["lang"], r["field"], r["start"], r["end"]) for r in truth["references"]]
        kinds = set()
        for dd in truth["distractors"]:
            kinds.add(dd["kind"])
            assert truth["texts"][dd["lang"]][dd["field"]][dd["start"] : dd["end"]] == dd["text"]
            for lang, fld, a, b in spans:
                assert not (lang == dd["lang"] and fld == dd["field"] and a < dd["end"] and dd["start"] < b)
        assert {"time", "series_only"} <= kinds
    assert not t["none"]["references"] and not t["none"]["lesions"]
    assert "No " in t["none"]["texts"]["en"]["Findings_EN"] or "normal" in t["none"]["texts"]["en"]["Findings_EN"]


def test_each_finding_is_visible_at_its_centre(study):
    """Render the same anatomy, geometry and noise with and without the findings: every lesion changes HU
    around its stated centre (cardiomegaly by heart volume instead, its centre is heart in both)."""
    _, t = study
    plan = t["plans"][0]
    A0 = sample_anatomy(rng_for(SEED, ANATOMY, plan["patient_index"]))
    rng = rng_for(SEED, FINDINGS, plan["index"])
    A1 = sample_anatomy(rng_for(SEED, ANATOMY, plan["patient_index"]))
    lesions, ops = plan_findings(rng, A1, np.ones(18, int))
    g = scan_geometry(rng, A1, "demo")
    with_f = render_volumes(A1, ops, g, "demo", rng_for(SEED, NOISE, plan["index"]))[0]
    without = render_volumes(A0, [], g, "demo", rng_for(SEED, NOISE, plan["index"]))[0]
    assert {les.finding for les in lesions} == set(CTRATE_FINDINGS)
    diff = np.abs(with_f.astype(np.float32) - without)
    for les in lesions:
        if les.finding == "Cardiomegaly":
            assert ((with_f > 20) & (with_f < 70)).sum() > ((without > 20) & (without < 70)).sum() * 1.05
            continue
        i = int(np.argmin(np.abs(g.xs - les.center[0])))
        j = int(np.argmin(np.abs(g.ys - les.center[1])))
        k = int(np.argmin(np.abs(g.zs_thin - les.center[2])))
        r = 3  # about 6-7 mm around the centre
        patch = diff[max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1, max(k - 2, 0) : k + 3]
        assert patch.max() > 60, f"{les.finding} not visible at its centre (max change {patch.max():.0f} HU)"
