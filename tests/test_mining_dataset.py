"""`mine_dataset` / `radfinder mine` over the shared synthetic cohort: output lines, volumes, drop reasons,
DICOM-folder mapping, languages, and the records API the demo uses."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import pytest

import radfinder.cli.mine_cmds  # noqa: F401  (registers `mine` until cli/main.py imports it)
from helpers_data import depth_cell_bounds_by_hand, depth_cell_by_hand, synth_cohort
from radfinder.cli import main
from radfinder.data.mining import ReportItem, make_dicom_locator, mine_dataset, mine_records
from radfinder.io.dicom_index import index_dicom_study
from radfinder.preprocess.geometry import plan_geometry
from radfinder.preprocess.spec import PreprocessSpec

KEYS = {"key", "report_id", "split", "snippet", "series", "image", "depth_cell", "depth_mm", "world_z_mm",
        "cell_world_z_mm", "share", "field", "start", "end", "lang", "spec_hash"}  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return synth_cohort(tmp_path_factory)


@pytest.fixture(scope="module")
def truth(cohort) -> list[dict]:
    return [json.loads(x) for x in (cohort / "truth.jsonl").read_text().splitlines()]


def _tables(cohort: Path) -> list[Path]:
    return sorted((cohort / "dataset" / "radiology_text_reports").glob("*_reports.csv"))


def test_cli_writes_one_line_per_reference_volume_and_cell(cohort, truth, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    args = ["mine", "--dicom-root", str(cohort / "dicom"), "--out", str(out), "--json"]
    for t in _tables(cohort):
        args += ["--reports", str(t)]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert summary["pairs"] == len(lines) > 0
    assert summary["resolved"] + sum(summary["dropped"].values()) == summary["references"]
    assert summary["reports"] == len(truth) and summary["volumes"] == sum(len(t["volumes"]) for t in truth)
    by_study = {t["study"]: t for t in truth}
    for line in lines:
        assert set(line) == KEYS and line["lang"] == "en"
        t = by_study[line["report_id"]]
        assert line["key"] in {v["name"].removesuffix(".nii.gz") for v in t["volumes"]}
        assert line["split"] == t["split"] and line["snippet"].strip()
        text = t["texts"]["en"]["Findings_EN" if line["field"] == "findings" else "Impressions_EN"]
        assert str(line["image"]) in text[line["start"] : line["end"]]
        assert str(line["image"]) not in line["snippet"].split()  # the answer is cut out of the snippet
    for t in truth:  # a study exported as several volumes gets each resolved reference once per volume
        keys = {v["name"].removesuffix(".nii.gz") for v in t["volumes"]}
        spans: dict[tuple, set] = {}
        for line in lines:
            if line["report_id"] == t["study"]:
                spans.setdefault((line["field"], line["start"]), set()).add(line["key"])
        assert all(v == keys for v in spans.values())
    # cell centre and plane z agree with the training volume's geometry
    line = lines[0]
    vol = next(v for v in by_study[line["report_id"]]["volumes"] if v["name"].startswith(line["key"] + "."))
    img = nib.load(cohort / vol["path"])
    g = plan_geometry(img.shape, img.affine, PreprocessSpec())
    lo, hi = depth_cell_bounds_by_hand(g.affine, PreprocessSpec(), line["depth_cell"])
    assert lo <= line["world_z_mm"] < hi and line["cell_world_z_mm"] == pytest.approx((lo + hi) / 2, abs=1e-3)
    assert line["spec_hash"] == PreprocessSpec().hash()


def test_study_with_two_volumes_gets_a_line_per_volume(cohort, truth, tmp_path):
    t = next((t for t in truth if len(t["volumes"]) == 2), None)
    assert t is not None, "cohort has no study exported as two volumes"
    thin = next(x for x in t["series"] if x["role"] == "thin")
    image = thin["n_slices"] // 2
    rows = [(v["name"], f"Nodule in the right lower lobe (series {thin['number']}, image {image}).", "")
            for v in t["volumes"]]  # fmt: skip
    s = mine_dataset(_write_reports(tmp_path / "r.csv", rows), cohort / "dicom", dataset_root=cohort,
                     show_progress=False)  # fmt: skip
    assert s.reports == 1 and s.references == 1 and s.resolved == 1
    assert sorted(x["key"] for x in s.lines) == sorted(v["name"].removesuffix(".nii.gz") for v in t["volumes"])
    index = index_dicom_study(cohort / thin["dicom_dir"])
    z = index.lookup(thin["number"], image).position[2]
    for line in s.lines:  # each volume (thin or thick reconstruction) places the same world z in its own grid
        vol = next(v for v in t["volumes"] if v["name"].startswith(line["key"] + "."))
        img = nib.load(cohort / vol["path"])
        g = plan_geometry(img.shape, img.affine, PreprocessSpec())
        assert line["depth_cell"] == depth_cell_by_hand(g.affine, PreprocessSpec(), z)
        assert line["world_z_mm"] == pytest.approx(z, abs=1e-3)


def test_text_summary(cohort, tmp_path, capsys):
    t = _tables(cohort)
    assert main(["mine", "--reports", str(t[0]), "--dicom-root", str(cohort / "dicom"), "--out",
                 str(tmp_path / "p.jsonl")]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "reports read:" in text and "references found:" in text and "dropped:" in text


def _write_reports(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["VolumeName", "Findings_EN", "Impressions_EN"])
        w.writerows(rows)
    return path


def _outside_image(cohort: Path, t: dict) -> tuple[int, int] | None:
    """(series, image) of a thin-series slice that the centre crop of the first volume cuts away."""
    vol = t["volumes"][0]
    img = nib.load(cohort / vol["path"])
    g = plan_geometry(img.shape, img.affine, PreprocessSpec())
    s = next(x for x in t["series"] if x["role"] == "thin")
    index = index_dicom_study(cohort / s["dicom_dir"])
    for inst in sorted(index.instances, key=lambda i: i.position[2]):
        if not 0 <= depth_cell_by_hand(g.affine, PreprocessSpec(), inst.position[2]) < g.shape[2] // 4:
            return s["number"], inst.instance_number
    return None


def test_drop_reasons_are_counted(cohort, truth, tmp_path):
    t = truth[0]
    name = t["volumes"][0]["name"].removesuffix(".nii.gz")
    thin = next(x for x in t["series"] if x["role"] == "thin")
    outside = _outside_image(cohort, t)
    assert outside is not None, "the crop cuts no slice of this study"
    mid = thin["n_slices"] // 2
    findings = (
        "A bare reference to a lesion (image 12). "  # first: no series named before it
        f"A nodule in the right upper lobe (series {thin['number']}, image {mid}). "
        f"Another nodule in the left lower lobe (series {thin['number']}, image 9999). "
        "Consolidation in the lingula (series 77, image 5). "
        f"Pleural plaque near the apex (series {outside[0]}, image {outside[1]})."
    )
    reports = _write_reports(tmp_path / "r.csv", [(f"{name}.nii.gz", findings, "")])
    s = mine_dataset(reports, cohort / "dicom", dataset_root=cohort, show_progress=False)
    assert s.references == 5 and s.resolved == 1 and s.pairs == 1
    assert dict(s.dropped) == {"no_series": 1, "missing_image": 1, "unknown_series": 1, "outside_crop": 1}
    assert s.lines[0]["image"] == mid and s.lines[0]["snippet"] == "A nodule in the right upper lobe."
    # The same report with its study's DICOM folder missing, and with a volume that does not exist.
    s = mine_dataset(reports, tmp_path / "nowhere", dataset_root=cohort, show_progress=False)
    assert dict(s.dropped) == {"no_series": 1, "no_dicom": 4} and s.problems
    missing = _write_reports(tmp_path / "m.csv", [(f"{name[:-1]}9.nii.gz", findings, "")])
    s = mine_dataset(missing, cohort / "dicom", dataset_root=cohort, show_progress=False)
    assert dict(s.dropped) == {"no_series": 1, "no_volume": 4} and s.volumes == 0


def test_multi_image_references_each_cell_or_first(cohort, truth, tmp_path):
    t = truth[0]
    name = t["volumes"][0]["name"].removesuffix(".nii.gz")
    thin = next(x for x in t["series"] if x["role"] == "thin")
    n = thin["n_slices"]
    lo, hi = n // 2 - 2, n // 2 + 2  # five neighbouring 2.5 mm slices: 12.5 mm, so one or two 12 mm cells
    far = n // 2 + 20  # 50 mm away: another cell
    findings = f"Nodules in both lungs (series {thin['number']}, images {lo}-{hi}, {far})."
    reports = _write_reports(tmp_path / "r.csv", [(f"{name}.nii.gz", findings, "")])
    each = mine_dataset(reports, cohort / "dicom", dataset_root=cohort, show_progress=False)
    first = mine_dataset(reports, cohort / "dicom", dataset_root=cohort, multi="first", show_progress=False)
    cells = [x["depth_cell"] for x in each.lines]
    assert len(cells) == len(set(cells)) and 2 <= len(cells) <= 3  # one line per distinct cell
    assert each.lines[0]["image"] == lo and each.lines[-1]["image"] == far
    assert [x["image"] for x in first.lines] == [lo] and first.lines[0]["depth_cell"] == cells[0]
    assert each.resolved == first.resolved == 1


def test_dicom_folder_mapping_is_overridable(cohort, truth, tmp_path):
    t = truth[0]
    root = tmp_path / "pacs"
    (root / "site" / "P1").mkdir(parents=True)
    (root / "site" / "P1" / "exam").symlink_to(cohort / "dicom" / t["study"], target_is_directory=True)
    item = ReportItem(t["study"], "", "", [], t["patient"])
    assert make_dicom_locator(root, "{study}")(item) == root / t["study"]
    assert make_dicom_locator(root, "site/{patient}")(item) == root / "site" / t["patient"]
    mapping = tmp_path / "map.csv"
    mapping.write_text(f"study,folder\n{t['study']},site/P1/exam\n")
    assert make_dicom_locator(root, "{study}", mapping)(item) == root / "site" / "P1" / "exam"
    base = mine_dataset(_tables(cohort), cohort / "dicom", show_progress=False)
    mapped = mine_dataset(_tables(cohort), root, dicom_map=mapping, show_progress=False)
    ours = [x for x in base.lines if x["report_id"] == t["study"]]
    assert ours and [x for x in mapped.lines if x["report_id"] == t["study"]] == ours
    assert mapped.dropped["no_dicom"] == base.resolved - sum(
        1 for _ in {(x["field"], x["start"]) for x in ours}
    )  # every other study has no folder under the new root


def test_german_reports_and_bad_columns(cohort, tmp_path, capsys):
    out = tmp_path / "de.jsonl"
    assert main(["mine", "--reports", str(cohort / "reports_de.csv"), "--dicom-root", str(cohort / "dicom"),
                 "--out", str(out), "--lang", "de", "--json"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert summary["pairs"] == len(lines) > 0 and all(x["lang"] == "de" for x in lines)
    code = main(["mine", "--reports", str(cohort / "reports_de.csv"), "--dicom-root", str(cohort / "dicom"),
                 "--out", str(tmp_path / "x.jsonl"), "--lang", "en"])  # fmt: skip
    assert code == 2 and "Findings_EN" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_records_api_matches_the_table_api(cohort):
    from radfinder.data.ctrate import load_ctrate

    records = load_ctrate(cohort, "train", "dup_all") + load_ctrate(cohort, "valid", "dup_all")
    a = mine_records(records, cohort / "dicom")
    b = mine_dataset(_tables(cohort), cohort / "dicom", show_progress=False)
    key = lambda x: (x["key"], x["field"], x["start"], x["image"])  # noqa: E731
    assert sorted(a.lines, key=key) == sorted(b.lines, key=key)
    assert (a.references, a.resolved, a.pairs) == (b.references, b.resolved, b.pairs)
