"""Text stages of the demo: training labels from the rule labeler, snippet pairs from mined slice references.

Training labels come from the TRAIN reports through `radfinder.text.labeler.RuleLabeler` (as in the paper,
where they come from the reports); the evaluation uses the cohort's own label table of the valid split
(the synthetic ground truth).

Snippet pairs: every slice reference mined from a report ("series 4, image 38") is looked up in the study's
DICOM headers (series number + InstanceNumber -> the image's z in RAS mm) and placed in the depth cells of the
preprocessed volume (`plan_geometry` of the demo spec, the same plan `apply_spec` uses). References without a
series or outside the scan are dropped and counted.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..preprocess.spec import PreprocessSpec
from ..text.findings import CTRATE_FINDINGS


def write_rule_labels(records: Sequence[Any], path: Path) -> dict[str, int]:
    """Label every record's report with the rule labeler; CSV with VolumeName + the 18 classes. Returns the
    positive count per finding."""
    from ..text.labeler import RuleLabeler

    labeler = RuleLabeler()
    counts: Counter[str] = Counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["VolumeName", *CTRATE_FINDINGS])
        for r in records:
            res = labeler.label(r.findings, r.impressions)
            row = [int(res.labels[f]) for f in CTRATE_FINDINGS]
            counts.update(f for f, v in zip(CTRATE_FINDINGS, row, strict=True) if v == 1)
            w.writerow([f"{r.key}.nii.gz", *row])
    tmp.replace(path)
    return {f: counts.get(f, 0) for f in CTRATE_FINDINGS}


def depth_cell_of_z(z_mm: float, final_affine: np.ndarray, cell_voxels: int) -> tuple[int, float]:
    """(depth cell, continuous voxel index along depth) of world z in a preprocessed image with this affine."""
    aff = np.asarray(final_affine, dtype=np.float64)
    k = (float(z_mm) - aff[2, 3]) / aff[2, 2]
    return int(np.floor((k + 0.5) / cell_voxels)), k


def mine_pairs(records: Sequence[Any], dicom_root: Path, spec: PreprocessSpec) -> tuple[list[dict], dict[str, int]]:
    """Snippet pairs of every record (see module doc) and counts of what was kept or dropped."""
    import nibabel as nib

    from ..io.dicom_index import index_dicom_study
    from ..preprocess.geometry import plan_geometry
    from ..text.references import mine_references

    stats: Counter[str] = Counter()
    rows: list[dict] = []
    t = spec.depth_tokens_per_window
    cell_voxels = spec.window[2] // t
    for r in records:
        refs = [("findings", x) for x in mine_references(r.findings)]
        refs += [("impressions", x) for x in mine_references(r.impressions)]
        stats["references"] += len(refs)
        if not refs:
            continue
        img = nib.load(r.path)
        geom = plan_geometry(tuple(int(v) for v in img.shape[:3]), np.asarray(img.affine, np.float64), spec)
        n_cells = int(geom.grid[2]) * t
        indexes: dict[int, Any] = {}  # only the referenced series' folders are indexed
        for section, ref in refs:
            if ref.series is None or not ref.snippet.strip():
                stats["dropped_no_series"] += 1
                continue
            if ref.series not in indexes:
                folder = dicom_root / r.report_id / str(ref.series)
                indexes[ref.series] = index_dicom_study(folder) if folder.is_dir() else None
            index = indexes[ref.series]
            if index is None:
                stats["dropped_series_not_found"] += 1
                continue
            for image in ref.images:
                try:
                    inst = index.lookup(int(ref.series), int(image))
                except Exception:
                    stats["dropped_not_in_dicom"] += 1
                    continue
                z = float(inst.position[2])
                cell, k = depth_cell_of_z(z, geom.affine, cell_voxels)
                if not 0 <= cell < n_cells:
                    stats["dropped_outside_scan"] += 1
                    continue
                rows.append({
                    "key": r.key, "split": r.split, "snippet": ref.snippet, "depth_cell": cell,
                    "true_z_mm": round(z, 3), "series": ref.series, "image": int(image), "section": section,
                })  # fmt: skip
                stats["pairs"] += 1
    return rows, dict(stats)


def write_pairs(rows: Sequence[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
