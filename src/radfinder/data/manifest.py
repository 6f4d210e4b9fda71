"""Generic manifest for a user's own data: CSV or JSONL with one row per volume.

Columns (JSONL: keys):
  volume      path, relative to the manifest's folder or absolute (NIfTI, NRRD, NPZ, DICOM file or folder); required
  report      full text, split into findings/impressions at their headers; or `findings` and `impressions`
  id          unique key (default: the volume file name without extensions)
  patient     patient id for patient-level splits (default: the key)
  split       e.g. train / valid / test
  report_id   several volumes sharing one report (default: the key)
  series      DICOM series selector (SeriesNumber, UID or description substring)
  labels      JSONL only: a list of 18 numbers in CT-RATE order or a {class name: value} mapping
  <class>     any of the 18 CT-RATE class names as a label column (case and "_" vs " " ignored); 1/0/-1, empty =
              unknown
Any other column is kept in `StudyRecord.extra`.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Any

from ..text.findings import CTRATE_FINDINGS
from ..text.sections import split_sections
from .records import (
    DatasetError,
    StudyRecord,
    label_columns,
    labels_from_any,
    labels_from_row,
    require_unique_keys,
    strip_volume_suffix,
)

_KNOWN = {"volume", "report", "findings", "impressions", "id", "patient", "split", "report_id", "series", "labels",
          "dataset"}  # fmt: skip


def _rows(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read manifest ({exc})") from exc
    if path.suffix.lower() == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{n}: invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{n}: each line must be a JSON object, got {type(row).__name__}")
            rows.append(row)
        return rows
    try:
        return list(csv.DictReader(text.splitlines()))
    except csv.Error as exc:
        raise DatasetError(f"{path}: malformed CSV ({exc})") from exc


def _text(v: Any) -> str:
    return "" if v is None else str(v).strip()


def load_manifest(path: str | Path, split: str | None = None, *, require_files: bool = False) -> list[StudyRecord]:
    """Records of a manifest, optionally only those whose `split` column equals `split` ("all" = every row).

    require_files: drop rows whose volume does not exist (with a warning; an error when none exists). Off by
    default: a manifest row names a file on purpose, so a missing one is shown by `radfinder check-data`.
    """
    path = Path(path)
    if path.is_dir():
        cands = sorted([*path.glob("*.jsonl"), *path.glob("*.csv")])
        if len(cands) != 1:
            raise DatasetError(f"{path}: a folder needs exactly one .csv or .jsonl manifest in it, found {len(cands)}")
        path = cands[0]
    if not path.is_file():
        raise DatasetError(f"manifest not found: {path}")
    rows = _rows(path)
    if not rows:
        raise DatasetError(f"{path}: manifest has no rows")
    columns = {k for row in rows for k in row}
    if "volume" not in columns:
        raise DatasetError(f"{path}: manifest needs a 'volume' column, has {sorted(columns)}")
    label_cols = label_columns(columns - _KNOWN)
    records, missing = [], []
    for n, row in enumerate(rows, 1):
        where = f"{path}: row {n}"
        vol_text = _text(row.get("volume"))
        if not vol_text:
            raise DatasetError(f"{where}: empty 'volume'")
        vol = Path(vol_text).expanduser()
        vol = vol if vol.is_absolute() else path.parent / vol
        key = _text(row.get("id")) or strip_volume_suffix(vol.name)
        rec_split = _text(row.get("split"))
        if split not in (None, "all") and rec_split != split:
            continue
        if row.get("findings") is not None or row.get("impressions") is not None:
            findings, impressions = _text(row.get("findings")), _text(row.get("impressions"))
        else:
            sec = split_sections(_text(row.get("report")))
            findings, impressions = sec.findings, sec.impressions
        if row.get("labels") not in (None, ""):
            labels = labels_from_any(row["labels"], where)
        else:
            labels = labels_from_row({name: row.get(col) for col, name in label_cols.items()}, CTRATE_FINDINGS)
        if require_files and not vol.exists():
            missing.append(str(vol))
            continue
        extra = {k: v for k, v in row.items() if k not in _KNOWN and k not in label_cols}
        records.append(
            StudyRecord(
                key=key,
                path=str(vol),
                report_id=_text(row.get("report_id")) or key,
                findings=findings,
                impressions=impressions,
                patient=_text(row.get("patient")) or key,
                split=rec_split,
                dataset=_text(row.get("dataset")) or "manifest",
                labels=labels,
                series=_text(row.get("series")) or None,
                extra=extra,
            )
        )
    if missing and not records:
        raise DatasetError(f"{path}: none of the {len(missing)} volumes exist (e.g. {missing[0]})")
    if missing:
        warnings.warn(f"{path}: {len(missing)} volumes are missing (e.g. {missing[0]})", stacklevel=2)
    try:
        require_unique_keys(records, str(path))
    except DatasetError as exc:
        raise DatasetError(f"{exc} (add a unique 'id' column)") from exc
    return records
