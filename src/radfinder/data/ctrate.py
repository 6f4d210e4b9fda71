"""CT-RATE layout loader (also the layout the built-in synthetic cohort writes).

    dataset/{train_fixed,valid_fixed}/<patient>/<study>/<volume>.nii.gz
    dataset/radiology_text_reports/{train,validation}_reports.csv
    dataset/multi_abnormality_labels/{train,valid}_predicted_labels.csv

Volume names are `<split>_<patient>_<study letter>_<reconstruction>`; a study's report is shared by its
reconstructions. Modes: `first_all` keeps one volume per report (the first reconstruction: the retrieval
protocol), `dup_all` keeps every volume.
"""

from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path
from typing import Literal

from ..errors import RadfinderError
from ..io.reports import read_ctrate_reports
from .records import StudyRecord, holdout_split, labels_from_row

_NAME = re.compile(r"^(?P<split>[A-Za-z]+)_(?P<patient>[^_]+)_(?P<study>[^_]+)_(?P<recon>\d+)$")
_SPLITS = {"train": ("train_fixed", "train_reports.csv", "train_predicted_labels.csv"),
           "valid": ("valid_fixed", "validation_reports.csv", "valid_predicted_labels.csv")}


class DatasetError(RadfinderError):
    """A dataset folder does not have the expected layout."""


def parse_volume_name(name: str) -> tuple[str, str, str]:
    """"train_12_a_1" -> (patient "train_12", study "train_12_a", reconstruction "1")."""
    m = _NAME.match(name)
    if not m:
        raise DatasetError(f"not a CT-RATE volume name: {name!r} (expected <split>_<patient>_<study>_<recon>)")
    patient = f"{m['split']}_{m['patient']}"
    return patient, f"{patient}_{m['study']}", m["recon"]


def _recon_order(name: str) -> tuple[str, int]:
    _, study, recon = parse_volume_name(name)
    return study, int(recon)


def ctrate_root(root: str | Path) -> Path:
    """Accept either the folder that contains `dataset/` or `dataset/` itself."""
    root = Path(root)
    if (root / "dataset").is_dir():
        root = root / "dataset"
    if not (root / "radiology_text_reports").is_dir():
        raise DatasetError(f"{root}: no radiology_text_reports/ folder; not a CT-RATE layout")
    return root


def load_ctrate(
    root: str | Path,
    split: Literal["train", "valid", "trainnodev", "traindev"] = "valid",
    mode: Literal["first_all", "dup_all"] = "first_all",
    *,
    dev_fraction: float = 0.05,
    dev_seed: int = 0,
    labels_csv: str | Path | None = None,
    require_files: bool = True,
) -> list[StudyRecord]:
    """Records of one split. `traindev` is a patient-level held-out part of train (`dev_fraction` of patients),
    `trainnodev` the rest: select models on traindev, report on valid."""
    root = ctrate_root(root)
    base = "train" if split in ("train", "trainnodev", "traindev") else "valid"
    folder, reports_name, labels_name = _SPLITS[base]
    reports = {r.id: r for r in read_ctrate_reports(root / "radiology_text_reports" / reports_name)}
    labels_path = Path(labels_csv) if labels_csv else root / "multi_abnormality_labels" / labels_name
    labels: dict[str, dict] = {}
    if labels_path.is_file():
        with open(labels_path, newline="") as fh:
            labels = {row["VolumeName"].removesuffix(".nii.gz"): row for row in csv.DictReader(fh)}
    names = sorted((n.removesuffix(".nii.gz") for n in reports), key=_recon_order)
    records: list[StudyRecord] = []
    seen_reports: set[str] = set()
    missing = []
    for name in names:
        patient, study, _ = parse_volume_name(name)
        if mode == "first_all" and study in seen_reports:
            continue
        path = root / folder / patient / study / f"{name}.nii.gz"
        if require_files and not path.is_file():
            missing.append(str(path))
            continue
        seen_reports.add(study)
        rep = reports.get(name) or reports[f"{name}.nii.gz"]
        records.append(
            StudyRecord(
                key=name,
                path=str(path),
                report_id=study,
                findings=rep.findings,
                impressions=rep.impressions,
                patient=patient,
                split=split,
                dataset="ct-rate",
                labels=labels_from_row(labels.get(name, {})),
            )
        )
    if missing and not records:
        raise DatasetError(f"{root}: none of the {len(missing)} volumes of split {base!r} exist (e.g. {missing[0]})")
    if missing:
        warnings.warn(
            f"{root}: {len(missing)} volumes listed in the reports are missing (e.g. {missing[0]}); "
            "`radfinder check-data` lists them all",
            stacklevel=2,
        )
    if split in ("trainnodev", "traindev"):
        kept, held = holdout_split(records, dev_fraction, dev_seed)
        records = held if split == "traindev" else kept
    return records
