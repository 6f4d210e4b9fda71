"""Merlin (abdominal CT, Stanford AIMI) loader.

    <root>/merlin_data/<study id>.nii.gz
    <root>/reports_final.xlsx  (or reports_final.csv)   columns `study id`, `Split` (train/val/test), `Findings`

`Findings` holds the full report; `radfinder.text.reports.read_merlin_reports` splits it into findings and
impressions at the "IMPRESSION(S):" header (the full text stays in ``extra["full_report"]``, for the
full-report pool retrieval). Merlin has no CT-RATE labels (all -1) and its table no patient ids, so each study
is its own patient. `root` may also be the folder that contains `Merlin/`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..text.reports import ReportReadError, read_merlin_reports
from .records import DatasetError, StudyRecord, require_unique_keys

MERLIN_SPLITS = ("train", "val", "test")
_ALIASES = {"valid": "val", "validation": "val", "dev": "val"}
_REPORT_NAMES = ("reports_final.xlsx", "reports_final.csv")


def merlin_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    if not (root / "merlin_data").is_dir() and (root / "Merlin" / "merlin_data").is_dir():
        root = root / "Merlin"
    return root


def merlin_reports_file(root: Path, reports: str | Path | None = None) -> Path:
    """The report table: `reports` if given, else reports_final.xlsx (reports_final.csv when openpyxl is not
    installed or there is no xlsx)."""
    if reports is not None:
        path = Path(reports)
        path = path if path.is_absolute() or path.exists() else root / path
        if not path.is_file():
            raise DatasetError(f"{path}: Merlin report table not found")
        return path
    xlsx, csv = (root / n for n in _REPORT_NAMES)
    try:
        import openpyxl  # noqa: F401

        have_xlsx_reader = True
    except ImportError:
        have_xlsx_reader = False
    if xlsx.is_file() and (have_xlsx_reader or not csv.is_file()):
        return xlsx
    if csv.is_file():
        return csv
    raise DatasetError(f"{root}: no {' or '.join(_REPORT_NAMES)}; not a Merlin layout")


def normalise_split(split: str) -> str:
    s = str(split).strip().lower()
    return _ALIASES.get(s, s)


def load_merlin(
    root: str | Path,
    split: str = "test",
    *,
    reports: str | Path | None = None,
    require_files: bool = True,
) -> list[StudyRecord]:
    """Records of `split` (train | val | test, `valid` accepted for val, or all), in table order.

    require_files: drop studies whose volume is missing (with a warning; an error when none exists); False
    returns every study of the table (for check-data)."""
    want = normalise_split(split)
    if want != "all" and want not in MERLIN_SPLITS:
        raise DatasetError(f"Merlin split must be all, {', '.join(MERLIN_SPLITS)}, got {split!r}")
    root = merlin_root(root)
    table = merlin_reports_file(root, reports)
    try:
        rows = read_merlin_reports(table)
    except ReportReadError as exc:
        raise DatasetError(str(exc)) from exc
    records, missing = [], []
    for n, rep in enumerate(rows, 2):
        if not rep.id:
            raise DatasetError(f"{table}: row {n} has an empty 'study id'")
        sp = normalise_split(rep.split)
        if want != "all" and sp != want:
            continue
        path = root / "merlin_data" / f"{rep.id}.nii.gz"
        if require_files and not path.is_file():
            missing.append(str(path))
            continue
        records.append(
            StudyRecord(
                key=rep.id,
                path=str(path),
                report_id=rep.id,
                findings=rep.findings,
                impressions=rep.impressions,
                patient=rep.id,
                split=sp,
                dataset="merlin",
                extra={"full_report": rep.raw},
            )
        )
    if missing and not records:
        raise DatasetError(f"{root}: none of the {len(missing)} volumes of split {split!r} exist (e.g. {missing[0]})")
    if missing:
        warnings.warn(
            f"{root}: {len(missing)} volumes listed in {table.name} are missing (e.g. {missing[0]}); "
            "`radfinder check-data merlin` lists them all",
            stacklevel=2,
        )
    require_unique_keys(records, str(table))
    return records
