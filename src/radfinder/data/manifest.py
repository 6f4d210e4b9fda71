"""Generic manifest for a user's own data: CSV or JSONL with one row per volume.

Columns: `volume` (path, relative to the manifest's folder or absolute; NIfTI/NRRD/NPZ/DICOM folder),
`report` (full text) or `findings` + `impressions`, optional `id`, `patient`, `split`, `series`, and any of
the 18 CT-RATE finding names as label columns (1/0/-1, empty = unknown).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..text.sections import split_sections
from .ctrate import DatasetError
from .records import StudyRecord, labels_from_row


def _rows(path: Path) -> list[dict]:
    if path.suffix.lower() == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}:{n}: invalid JSON ({exc.msg})") from exc
        return rows
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def load_manifest(path: str | Path, split: str | None = None) -> list[StudyRecord]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"manifest not found: {path}")
    rows = _rows(path)
    if not rows:
        raise DatasetError(f"{path}: manifest has no rows")
    if "volume" not in rows[0]:
        raise DatasetError(f"{path}: manifest needs a 'volume' column, has {sorted(rows[0])}")
    records = []
    seen: set[str] = set()
    for n, row in enumerate(rows, 1):
        vol = Path(str(row["volume"]))
        vol = vol if vol.is_absolute() else path.parent / vol
        key = str(row.get("id") or vol.name.split(".")[0])
        if key in seen:
            raise DatasetError(f"{path}: row {n}: duplicate id {key!r} (add an 'id' column)")
        seen.add(key)
        if row.get("findings") is not None or row.get("impressions") is not None:
            findings, impressions = str(row.get("findings") or ""), str(row.get("impressions") or "")
        else:
            sec = split_sections(str(row.get("report") or ""))
            findings, impressions = sec.findings, sec.impressions
        rec_split = str(row.get("split") or "")
        if split is not None and rec_split != split:
            continue
        records.append(
            StudyRecord(
                key=key,
                path=str(vol),
                report_id=str(row.get("report_id") or key),
                findings=findings,
                impressions=impressions,
                patient=str(row.get("patient") or key),
                split=rec_split,
                dataset="manifest",
                labels=labels_from_row(row),
                series=(str(row["series"]) if row.get("series") not in (None, "") else None),
            )
        )
    return records
