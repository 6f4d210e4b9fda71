"""CT-RATE layout loader (also the layout the built-in synthetic cohort writes).

    dataset/{train_fixed,valid_fixed}/<patient>/<study>/<volume>.nii.gz
    dataset/radiology_text_reports/{train,validation}_reports.csv
    dataset/multi_abnormality_labels/{train,valid}_predicted_labels.csv
    dataset/metadata/{train,validation}_metadata.csv            (optional; joined into `extra`)
    dataset/metadata/no_chest_{train,valid}.txt                 (optional; volumes that are not chest CT)

Volume names are `<split>_<patient>_<study letter>_<reconstruction>`; a study's report is shared by its
reconstructions. The reports table defines the volumes of a split. Modes: `first_all` keeps one volume per report
(the lowest reconstruction number present: the retrieval protocol), `dup_all` keeps every volume.

When only the original `train/`, `valid/` folders exist (not the corrected `*_fixed`), they are used and each
record gets ``extra["needs_rescale"] = True``: those files store raw values, HU = RescaleSlope * x +
RescaleIntercept from the metadata.
"""

from __future__ import annotations

import csv
import fnmatch
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from ..text.reports import ReportReadError, read_ctrate_reports
from .records import (
    DatasetError,
    StudyRecord,
    holdout_split,
    label_columns,
    labels_from_row,
    read_name_list,
    require_unique_keys,
    strip_volume_suffix,
)

_NAME = re.compile(r"^(?P<split>[A-Za-z]+)_(?P<patient>[^_]+)_(?P<study>[^_]+)_(?P<recon>\d+)$")
# base split -> (volume folder, reports csv, labels csv, metadata csv, no_chest list)
_SPLITS = {
    "train": ("train", "train_reports.csv", "train_predicted_labels.csv", "train_metadata.csv", "no_chest_train.txt"),
    "valid": ("valid", "validation_reports.csv", "valid_predicted_labels.csv", "validation_metadata.csv",
              "no_chest_valid.txt"),
}  # fmt: skip
CTRATE_SPLITS = ("train", "valid", "trainnodev", "traindev")

# Volumes known to be unreadable or corrupt in the CT-RATE release (RadFinder's BROKEN_PATHS); glob patterns.
CTRATE_BROKEN_VOLUMES: tuple[str, ...] = (
    "train_11755_a_2",
    "train_11755_a_3",
    "train_11755_a_4",
    "train_1267_a_4",
    "train_3821_a_5",
    "train_9792_a_*",
)

__all__ = ["CTRATE_BROKEN_VOLUMES", "CTRATE_SPLITS", "DatasetError", "ctrate_root", "load_ctrate", "parse_volume_name"]


def parse_volume_name(name: str) -> tuple[str, str, str]:
    """ "train_12_a_1" -> (patient "train_12", study "train_12_a", reconstruction "1")."""
    m = _NAME.match(strip_volume_suffix(name))
    if not m:
        raise DatasetError(f"not a CT-RATE volume name: {name!r} (expected <split>_<patient>_<study>_<recon>)")
    patient = f"{m['split']}_{m['patient']}"
    return patient, f"{patient}_{m['study']}", m["recon"]


def ctrate_root(root: str | Path) -> Path:
    """Accept either the folder that contains `dataset/` or `dataset/` itself."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    if (root / "dataset").is_dir():
        root = root / "dataset"
    if not (root / "radiology_text_reports").is_dir():
        raise DatasetError(f"{root}: no radiology_text_reports/ folder; not a CT-RATE layout")
    return root


def volume_folder(root: Path, base: str) -> tuple[Path, bool]:
    """The folder holding a split's volumes and whether its files need the metadata rescale."""
    fixed, orig = root / f"{_SPLITS[base][0]}_fixed", root / _SPLITS[base][0]
    if fixed.is_dir() or not orig.is_dir():
        return fixed, False
    return orig, True


def is_known_broken(name: str, patterns: Iterable[str] = CTRATE_BROKEN_VOLUMES) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _read_csv_by_volume(path: Path) -> dict[str, dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if "VolumeName" not in (reader.fieldnames or []):
                raise DatasetError(f"{path}: no VolumeName column (has {(reader.fieldnames or [])[:10]})")
            return {strip_volume_suffix(row["VolumeName"].strip()): row for row in reader}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read CSV ({exc})") from exc


def _read_label_table(path: Path) -> dict[str, dict[str, str]]:
    """A label table by volume; a column that is neither VolumeName nor one of the 18 CT-RATE findings is refused
    (it would be dropped without a word, and a misspelt finding would read as 'unknown' for every volume)."""
    rows = _read_csv_by_volume(path)
    with open(path, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), [])
    known = label_columns(header)
    unknown = [c for c in header if c != "VolumeName" and c not in known]
    if unknown:
        raise DatasetError(
            f"{path}: unknown finding column(s) {unknown}; a label table has VolumeName and the 18 CT-RATE findings"
        )
    return rows


def _float(v: Any) -> float | None:
    try:
        f = float(str(v).strip())
    except (TypeError, ValueError):
        return None
    return f if f == f else None


def metadata_extra(row: dict[str, str]) -> dict[str, Any]:
    """RescaleSlope/Intercept, XYSpacing (a "[x, y]" string -> two floats) and ZSpacing of a metadata row;
    unparseable cells are left out."""
    out: dict[str, Any] = {}
    for col in ("RescaleSlope", "RescaleIntercept", "ZSpacing"):
        f = _float(row.get(col))
        if f is not None:
            out[col] = f
    xy = str(row.get("XYSpacing") or "").strip().strip("[]()")
    parts = [_float(p) for p in re.split(r"[,\s]+", xy) if p]
    if len(parts) == 2 and all(p is not None for p in parts):
        out["XYSpacing"] = parts
    elif len(parts) == 1 and parts[0] is not None:
        out["XYSpacing"] = [parts[0], parts[0]]
    return out


def split_tables(root: Path, base: str) -> dict[str, Path]:
    """The files of one base split ("train" or "valid"), whether they exist or not."""
    _, reports, labels, meta, no_chest = _SPLITS[base]
    return {
        "reports": root / "radiology_text_reports" / reports,
        "labels": root / "multi_abnormality_labels" / labels,
        "metadata": root / "metadata" / meta,
        "no_chest": root / "metadata" / no_chest,
    }


def load_ctrate(
    root: str | Path,
    split: Literal["train", "valid", "trainnodev", "traindev"] = "valid",
    mode: Literal["first_all", "dup_all"] = "first_all",
    *,
    dev_fraction: float = 0.05,
    dev_seed: int = 0,
    dev_patients: str | Path | Iterable[str] | None = None,
    labels_csv: str | Path | None = None,
    no_chest: Literal["keep", "drop_volume", "drop_study"] = "keep",
    skip_broken: bool = True,
    broken: Iterable[str] = CTRATE_BROKEN_VOLUMES,
    metadata: bool = True,
    require_files: bool = True,
) -> list[StudyRecord]:
    """Records of one split, ordered by study then reconstruction.

    split: `train`, `valid`, or a patient-level part of train: `traindev` (held out: `dev_patients`, a list or a
        file of patient ids, or else `dev_fraction` of the patients by a stable hash with `dev_seed`) and
        `trainnodev` (the rest). Select models on traindev, report on valid.
    mode: `first_all` (one volume per report) or `dup_all` (every volume).
    labels_csv: another label table (VolumeName + the 18 classes) instead of the predicted labels.
    no_chest: drop volumes listed in metadata/no_chest_<split>.txt (`drop_volume`) or whole studies containing
        one (`drop_study`, RadFinder's "nohead" mode); a warning is given when the list is absent.
    skip_broken: leave out the volumes of `broken` (glob patterns; default the known-broken CT-RATE volumes).
    metadata: join RescaleSlope, RescaleIntercept, XYSpacing and ZSpacing from metadata/*.csv into `extra`.
    require_files: drop volumes whose file is missing (with a warning; an error when none exists). With False
        every volume of the reports table is returned (what `radfinder check-data` uses).
    """
    if split not in CTRATE_SPLITS:
        raise DatasetError(f"CT-RATE split must be one of {', '.join(CTRATE_SPLITS)}, got {split!r}")
    if mode not in ("first_all", "dup_all"):
        raise DatasetError(f"CT-RATE mode must be first_all or dup_all, got {mode!r}")
    if no_chest not in ("keep", "drop_volume", "drop_study"):
        raise DatasetError(f"no_chest must be keep, drop_volume or drop_study, got {no_chest!r}")
    root = ctrate_root(root)
    base = "train" if split in ("train", "trainnodev", "traindev") else "valid"
    tables = split_tables(root, base)
    folder, needs_rescale = volume_folder(root, base)
    try:
        report_list = read_ctrate_reports(tables["reports"])
    except ReportReadError as exc:
        raise DatasetError(str(exc)) from exc
    reports = {}
    for r in report_list:
        name = strip_volume_suffix(r.id)
        if name in reports:
            raise DatasetError(f"{tables['reports']}: duplicate VolumeName {r.id!r}")
        reports[name] = r
    labels_path = Path(labels_csv) if labels_csv else tables["labels"]
    if labels_csv and not labels_path.is_file():
        raise DatasetError(f"{labels_path}: label table not found")
    labels = _read_label_table(labels_path) if labels_path.is_file() else {}
    meta = _read_csv_by_volume(tables["metadata"]) if metadata and tables["metadata"].is_file() else {}

    names = []
    for name in reports:
        try:
            names.append((*parse_volume_name(name), name))
        except DatasetError as exc:
            raise DatasetError(f"{tables['reports']}: {exc}") from exc
    names.sort(key=lambda t: (t[1], int(t[2])))
    if skip_broken:
        patterns = tuple(broken)
        names = [t for t in names if not is_known_broken(t[3], patterns)]
    if no_chest != "keep":
        if tables["no_chest"].is_file():
            listed = set(read_name_list(tables["no_chest"]))
            bad_studies = {t[1] for t in names if t[3] in listed}
            names = [t for t in names if t[3] not in listed and (no_chest == "drop_volume" or t[1] not in bad_studies)]
        else:
            warnings.warn(f"{tables['no_chest']}: absent; no_chest={no_chest!r} drops nothing", stacklevel=2)

    records: list[StudyRecord] = []
    seen_reports: set[str] = set()
    missing = []
    for patient, study, _recon, name in names:
        if mode == "first_all" and study in seen_reports:
            continue
        path = folder / patient / study / f"{name}.nii.gz"
        if require_files and not path.is_file():
            missing.append(str(path))
            continue
        seen_reports.add(study)
        rep = reports[name]
        extra: dict[str, Any] = metadata_extra(meta[name]) if name in meta else {}
        if needs_rescale:
            extra["needs_rescale"] = True
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
                extra=extra,
            )
        )
    if missing and not records:
        raise DatasetError(f"{root}: none of the {len(missing)} volumes of split {base!r} exist (e.g. {missing[0]})")
    if missing:
        warnings.warn(
            f"{root}: {len(missing)} volumes listed in {tables['reports'].name} are missing (e.g. {missing[0]}); "
            "`radfinder check-data ctrate` lists them all",
            stacklevel=2,
        )
    if split in ("trainnodev", "traindev"):
        chosen = None
        if dev_patients is not None:
            if isinstance(dev_patients, (str, Path)):
                if not Path(dev_patients).is_file():
                    raise DatasetError(f"{dev_patients}: dev patient list not found")
                chosen = read_name_list(dev_patients)
            else:
                chosen = [str(p) for p in dev_patients]
        kept, held = holdout_split(records, dev_fraction, dev_seed, chosen)
        records = held if split == "traindev" else kept
    require_unique_keys(records, str(tables["reports"]))
    return records
