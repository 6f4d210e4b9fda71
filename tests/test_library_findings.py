"""Finding-sentence search: a query that names a finding is ranked by that finding's zero-shot probability (from
the scans' own encodings, calibrated when the checkpoint has a calibration), a negated one by 1 - p, free text by
similarity; the ranking never reads a stored report or label."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from helpers_library import tiny_library
from radfinder.api import classify, encode_volume, load_model
from radfinder.library import Library, build_library
from radfinder.library.query import match_finding
from radfinder.models.calibration import FindingCalibration
from radfinder.text.findings import CTRATE_FINDINGS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_library(tmp_path_factory)


@pytest.fixture(scope="module")
def scans(tiny):
    """Every library scan classified on its own (a fresh model load): {study: {finding: FindingScore}}."""
    model = load_model(tiny["ckpt"], device="cpu")
    folder = tiny["manifest"].parent
    return {name: {s.finding: s for s in classify(model, encode_volume(model, folder / f"{name}.nii.gz"))}
            for name in ("effusion", "emphysema", "hernia", "nodule", "normal")}  # fmt: skip


@pytest.mark.parametrize(("text", "finding", "present"), [
    ("Cardiomegaly.", "Cardiomegaly", True),
    ("  pleural EFFUSION ", "Pleural effusion", True),
    ("Arterial wall calcification is present.", "Arterial wall calcification", True),
    ("No pleural effusion.", "Pleural effusion", False),
    ("Emphysema is not seen.", "Emphysema", False),
    ("pacemaker", "Medical material", True),  # an ontology synonym
    ("Pleural effusion in the right lower lobe", None, None),
    ("Cardiomegaly and pericardial effusion.", None, None),
])  # fmt: skip
def test_queries_that_name_a_finding(text, finding, present):
    got = match_finding(text, CTRATE_FINDINGS)
    assert (got is None) if finding is None else (got.finding, got.present) == (finding, present)


@pytest.mark.parametrize("query", ["Pleural effusion.", "Lung nodule is present.", "No lung nodule."])
def test_finding_queries_rank_by_the_zero_shot_probability(tiny, scans, query):
    lib = Library(tiny["library"], model=tiny["model"])
    res = lib.search(query, k=5)
    fq = match_finding(query, lib.findings)
    assert (res["ranking"], res["finding"], res["present"], res["calibrated"]) == ("finding", fq.finding,
                                                                                    fq.present, False)
    p = {name: s[fq.finding].probability for name, s in scans.items()}
    want = {name: v if fq.present else 1 - v for name, v in p.items()}
    assert [r["study"] for r in res["results"]] == sorted(want, key=lambda n: -want[n])
    for r in res["results"]:
        assert r["score"] == pytest.approx(want[r["study"]], abs=1e-5)
    free = lib.search("pleural effusion with compressive atelectasis", k=5)
    assert free["ranking"] == "similarity" and free["finding"] is None


def test_a_calibrated_checkpoint_ranks_and_scores_with_its_calibration(tiny, scans, tmp_path):
    ckpt = shutil.copytree(tiny["ckpt"], tmp_path / "ckpt")
    # a negative scale reverses what the finding's margin means: the ranking must follow the calibration
    scale = np.full(18, 30.0)
    scale[CTRATE_FINDINGS.index("Emphysema")] = -30.0
    scale[CTRATE_FINDINGS.index("Cardiomegaly")] = 0.0  # flat (no positive train report): ties broken by the margin
    FindingCalibration(CTRATE_FINDINGS, scale, np.full(18, -1.0)).save(ckpt)
    model = load_model(ckpt, device="cpu")
    build_library(ckpt, tiny["manifest"], tmp_path / "lib", kind="manifest", model=model, show_progress=False)
    lib = Library(tmp_path / "lib", model=model)
    assert lib.info()["calibrated"] is True
    for finding, sign in (("Emphysema", -1.0), ("Lung nodule", 1.0)):
        res = lib.search(f"{finding}.", k=5)
        want = {n: 1 / (1 + np.exp(-(sign * 30.0 * s[finding].margin - 1.0))) for n, s in scans.items()}
        assert res["calibrated"] is True
        assert [r["study"] for r in res["results"]] == sorted(want, key=lambda n: -want[n])
        for r in res["results"]:
            assert r["score"] == pytest.approx(want[r["study"]], rel=1e-4)
            assert r["findings"][finding] == pytest.approx(want[r["study"]], rel=1e-4)  # stored = calibrated
    flat = lib.search("Cardiomegaly.", k=5)["results"]
    margin = {n: s["Cardiomegaly"].margin for n, s in scans.items()}
    assert [r["study"] for r in flat] == sorted(margin, key=lambda n: -margin[n])
    assert {round(r["score"], 9) for r in flat} == {round(1 / (1 + np.exp(1.0)), 9)}


def test_the_ranking_never_reads_stored_reports_or_labels(tiny, tmp_path):
    lib_dir = shutil.copytree(tiny["library"], tmp_path / "lib")
    before = {q: Library(lib_dir, model=tiny["model"]).search(q, k=5)["results"]
              for q in ("Pleural effusion.", "No lung nodule.", "large right pleural effusion")}  # fmt: skip
    db = sqlite3.connect(lib_dir / "library.sqlite")
    db.execute("UPDATE studies SET findings_text = 'Pleural effusion.', impressions_text = '', labels = ?",
               ("[" + ",".join(["1"] * 18) + "]",))
    db.commit()
    db.close()
    lib = Library(lib_dir, model=tiny["model"])
    for q, res in before.items():
        after = lib.search(q, k=5)["results"]
        assert [(r["study"], round(r["score"], 6)) for r in after] == [(r["study"], round(r["score"], 6))
                                                                        for r in res]
