"""Mirrors: a generated synthetic cohort (CT-RATE layout + truth.jsonl) rewritten in the layouts of the other
datasets, so that every loader and `check-data` can be tested on small data in its real layout.

    write_radchestct_mirror  npz/<NoteAcc_DEID>.npz (IPL, isotropic, int16 HU clipped to [-1000, 1000]) +
                             img{train,valid,test}_Abnormality_and_Location_Labels.csv (abnormality*location columns)
    write_merlin_mirror      merlin_data/<study id>.nii.gz + reports_final.csv (and .xlsx) with FINDINGS/IMPRESSION
    write_inspect_mirror     full/CTPA/<impression_id>.nii.gz + full/impressions_{train,valid,test}.tsv
    write_manifest_mirror    a CSV or JSONL manifest over the cohort's own NIfTI files

Each mirror writes `mirror.json`: per key the source study and volume, the truth labels and, for Rad-ChestCT, the
world centre of the source volume (npz files carry no position: `load_volume` centres them at the origin, so
world(npz) = world(source) - centre).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import RadfinderError
from ...text.findings import CTRATE_FINDINGS

# Label columns of the Rad-ChestCT mirror: a subset of the real vocabulary, as `abnormality*location`.
RADCHESTCT_MIRROR_COLUMNS: dict[str, tuple[str, ...]] = {
    "catheter_or_port": ("right_upper_chest", "left_upper_chest"),
    "pacemaker_or_defib": ("heart",),
    "calcification": ("aorta", "heart"),
    "cardiomegaly": ("heart",),
    "pericardial_effusion": ("heart",),
    "hernia": ("stomach",),
    "lymphadenopathy": ("mediastinum",),
    "emphysema": ("right_lung", "left_lung"),
    "atelectasis": ("right_lung", "left_lung"),
    "nodule": ("right_lung", "left_lung"),
    "nodulegr1cm": ("right_lung", "left_lung"),
    "opacity": ("right_lung", "left_lung"),
    "scarring": ("right_lung", "left_lung"),
    "pleural_effusion": ("right_lung", "left_lung"),
    "bronchial_wall_thickening": ("right_lung", "left_lung"),
    "consolidation": ("right_lung", "left_lung"),
    "bronchiectasis": ("right_lung", "left_lung"),
    "septal_thickening": ("right_lung", "left_lung"),
    "cyst": ("liver", "kidney"),  # not mapped to any CT-RATE class: must be ignored by the loader
}


_RADCHESTCT_PREFIX = {"train": "trn", "valid": "val", "test": "tst"}


def read_truth(cohort: str | Path) -> list[dict[str, Any]]:
    path = Path(cohort) / "truth.jsonl"
    if not path.is_file():
        raise RadfinderError(f"{path}: not found; `cohort` must be a folder written by make_cohort")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _id(prefix: str, *parts: object, n: int = 8) -> str:
    return prefix + hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:n]


def _three_way(studies: list[dict], names: tuple[str, str, str]) -> list[str]:
    """Cohort valid studies -> names[1]; train studies -> names[0], every third one -> names[2] (and the second
    of exactly two), so that all three splits get studies from a cohort with three or more train studies."""
    n_train = sum(s["split"] != "valid" for s in studies)
    out, pos = [], 0
    for s in studies:
        if s["split"] == "valid":
            out.append(names[1])
            continue
        out.append(names[2] if pos % 3 == 2 or (n_train == 2 and pos == 1) else names[0])
        pos += 1
    return out


def _first_volume(cohort: Path, study: dict) -> Path:
    return cohort / study["volumes"][0]["path"]


def _write_mirror_json(out: Path, kind: str, cohort: Path, entries: dict) -> None:
    doc = {"kind": kind, "source": str(cohort), "studies": entries}
    (out / "mirror.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def nifti_to_radchestct_npz(src: str | Path, dst: str | Path, spacing_mm: float = 0.8) -> dict[str, Any]:
    """Resample a volume onto the Rad-ChestCT grid: axes (I, P, L), isotropic `spacing_mm`, covering the same
    world box, centred on the source centre; int16 HU clipped to [-1000, 1000], stored under key `ct`.
    Returns the shape and the source centre (world RAS mm)."""
    from scipy.ndimage import affine_transform

    from ...io import load_volume
    from ...io.formats import NPZ_DIRECTIONS_RAS

    vol = load_volume(src)
    shape = np.array(vol.shape, dtype=float)
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    world = corners @ vol.affine[:3, :3].T + vol.affine[:3, 3]
    extent = world.max(0) - world.min(0)  # along world x, y, z
    centre = vol.affine[:3, :3] @ ((shape - 1) / 2) + vol.affine[:3, 3]
    # axis 0 runs along world z, axis 1 along y, axis 2 along x
    n = np.array([int(np.floor(extent[2] / spacing_mm)) + 1, int(np.floor(extent[1] / spacing_mm)) + 1,
                  int(np.floor(extent[0] / spacing_mm)) + 1])  # fmt: skip
    target = np.eye(4)
    target[:3, :3] = NPZ_DIRECTIONS_RAS * spacing_mm
    target[:3, 3] = centre - target[:3, :3] @ ((n - 1) / 2)
    m = np.linalg.inv(vol.affine) @ target  # target index -> source index
    data = affine_transform(vol.array.astype(np.float32), m[:3, :3], offset=m[:3, 3], output_shape=tuple(n),
                            order=1, mode="constant", cval=-1000.0)  # fmt: skip
    ct = np.clip(np.rint(data), -1000, 1000).astype(np.int16)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(dst, ct=ct)
    return {"shape": [int(v) for v in n], "centre_ras": [round(float(v), 4) for v in centre]}


def _radchestct_row(key: str, labels: dict[str, int], columns: list[str], seed: int) -> dict[str, Any]:
    from ...text.radchestct_labels import RADCHESTCT_TO_CTRATE18

    rng = np.random.default_rng(int(hashlib.sha256(f"{seed}|{key}".encode()).hexdigest()[:8], 16))
    row: dict[str, Any] = {c: 0 for c in columns}
    for c in columns:
        if c.startswith("cyst*"):
            row[c] = int(rng.random() < 0.3)
    for finding in sorted(f for f, v in labels.items() if v == 1):
        names = [a for a in RADCHESTCT_TO_CTRATE18.get(finding, ()) if any(c.split("*")[0] == a for c in columns)]
        if not names:
            continue
        cands = [c for c in columns if c.split("*")[0] in names]
        row[cands[int(rng.integers(len(cands)))]] = 1
    return row


def write_radchestct_mirror(cohort: str | Path, out: str | Path, *, spacing_mm: float = 0.8, seed: int = 0) -> dict:
    """Rad-ChestCT layout from a synthetic cohort (first volume of each study). Coarser `spacing_mm` keeps test
    mirrors small (load them with `load_radchestct(..., spacing_mm=...)`)."""
    cohort, out = Path(cohort), Path(out)
    columns = [f"{a}*{loc}" for a, locs in RADCHESTCT_MIRROR_COLUMNS.items() for loc in locs]
    rows: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    entries = {}
    counters = {"train": 0, "valid": 0, "test": 0}
    studies = read_truth(cohort)
    for study, split in zip(studies, _three_way(studies, ("train", "valid", "test")), strict=True):
        counters[split] += 1
        key = f"{_RADCHESTCT_PREFIX[split]}{counters[split]:05d}"
        geo = nifti_to_radchestct_npz(_first_volume(cohort, study), out / "npz" / f"{key}.npz", spacing_mm)
        rows[split].append({"NoteAcc_DEID": key, **_radchestct_row(key, study["labels"], columns, seed)})
        entries[key] = {"study": study["study"], "split": split, "volume": study["volumes"][0]["path"],
                        "labels": study["labels"], "spacing_mm": spacing_mm, **geo}  # fmt: skip
    for split, split_rows in rows.items():
        path = out / f"img{split}_Abnormality_and_Location_Labels.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=["NoteAcc_DEID", *columns], lineterminator="\n")
            w.writeheader()
            w.writerows(split_rows)
    _write_mirror_json(out, "radchestct", cohort, entries)
    return {"out": str(out), "n_volumes": len(entries), "splits": {k: len(v) for k, v in rows.items()}}


def merlin_report_text(findings: str, impressions: str, history: str = "", technique: str = "") -> str:
    """A full report in the Merlin style: CLINICAL HISTORY, TECHNIQUE, FINDINGS and IMPRESSION sections."""
    head = "".join(f"{h}: {t}\n" for h, t in (("CLINICAL HISTORY", history), ("TECHNIQUE", technique)) if t)
    return f"{head}\nFINDINGS:\n{findings}\n\nIMPRESSION:\n{impressions}\n"


def write_merlin_mirror(cohort: str | Path, out: str | Path, *, xlsx: bool = False) -> dict:
    """Merlin layout: merlin_data/<study id>.nii.gz (the study's first volume) + reports_final.csv, and
    reports_final.xlsx when `xlsx` (needs openpyxl)."""
    import pandas as pd

    cohort, out = Path(cohort), Path(out)
    (out / "merlin_data").mkdir(parents=True, exist_ok=True)
    rows, entries = [], {}
    studies = read_truth(cohort)
    for study, split in zip(studies, _three_way(studies, ("train", "val", "test")), strict=True):
        key = _id("AC", study["study"], n=7)
        shutil.copyfile(_first_volume(cohort, study), out / "merlin_data" / f"{key}.nii.gz")
        en = study["texts"]["en"]
        full = merlin_report_text(
            en["Findings_EN"], en["Impressions_EN"], en["ClinicalInformation_EN"], en["Technique_EN"]
        )
        rows.append({"study id": key, "Split": split, "Findings": full})
        entries[key] = {"study": study["study"], "split": split, "volume": study["volumes"][0]["path"],
                        "labels": study["labels"], "findings": en["Findings_EN"],
                        "impressions": en["Impressions_EN"]}  # fmt: skip
    df = pd.DataFrame(rows, columns=["study id", "Split", "Findings"])
    df.to_csv(out / "reports_final.csv", index=False)
    if xlsx:
        df.to_excel(out / "reports_final.xlsx", index=False)
    _write_mirror_json(out, "merlin", cohort, entries)
    return {"out": str(out), "n_volumes": len(entries)}


def write_inspect_mirror(cohort: str | Path, out: str | Path) -> dict:
    """INSPECT layout: full/CTPA/<impression_id>.nii.gz + full/impressions_<split>.tsv (impression_id,
    person_id, impressions); a patient's studies share one split."""
    cohort, out = Path(cohort), Path(out)
    full = out / "full"
    (full / "CTPA").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    entries = {}
    for study in read_truth(cohort):
        key = _id("PE", study["study"])
        person = _id("", study["patient"], n=10)
        split = "train" if study["split"] == "train" else ("valid", "test")[int(person, 16) % 2]
        shutil.copyfile(_first_volume(cohort, study), full / "CTPA" / f"{key}.nii.gz")
        imp = study["texts"]["en"]["Impressions_EN"]
        rows[split].append({"impression_id": key, "person_id": person, "impressions": imp})
        entries[key] = {"study": study["study"], "patient": person, "split": split, "impressions": imp,
                        "volume": study["volumes"][0]["path"], "labels": study["labels"]}  # fmt: skip
    for split, split_rows in rows.items():
        with (full / f"impressions_{split}.tsv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=["impression_id", "person_id", "impressions"], delimiter="\t",
                               lineterminator="\n")  # fmt: skip
            w.writeheader()
            w.writerows(split_rows)
    _write_mirror_json(out, "inspect", cohort, entries)
    return {"out": str(out), "n_volumes": len(entries), "splits": {k: len(v) for k, v in rows.items()}}


def write_manifest_mirror(cohort: str | Path, path: str | Path) -> dict:
    """A manifest (CSV, or JSONL by suffix) over every NIfTI volume of the cohort, with relative volume paths,
    full report text, patient, split and the 18 labels."""
    cohort, path = Path(cohort), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for study in read_truth(cohort):
        en = study["texts"]["en"]
        for v in study["volumes"]:
            vol = (cohort / v["path"]).resolve()
            rows.append({"id": v["name"].removesuffix(".nii.gz"), "volume": str(vol), "patient": study["patient"],
                         "split": study["split"], "report_id": study["study"],
                         "report": f"Findings: {en['Findings_EN']}\nImpression: {en['Impressions_EN']}",
                         **{f: study["labels"][f] for f in CTRATE_FINDINGS}})  # fmt: skip
    if path.suffix.lower() == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
    return {"out": str(path), "n_volumes": len(rows)}
