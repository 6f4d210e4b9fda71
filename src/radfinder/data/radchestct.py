"""Rad-ChestCT (public Zenodo subset) loader.

    <root>/npz/<NoteAcc_DEID>.npz          array `ct`, (Z, Y, X) in IPL orientation, 0.8 mm isotropic, int16 HU
    <root>/imgtrain_Abnormality_and_Location_Labels.csv    (also imgvalid_, imgtest_; in <root> or one folder below)
        index column NoteAcc_DEID, then binary columns named `abnormality*location`

Labels are OR-aggregated into the 18 CT-RATE classes by `radfinder.text.radchestct_labels.radchestct_to_ctrate18`
(classes without any source column, e.g. Mosaic attenuation pattern, are -1). Split `all` is the union of the
three tables (the evaluation set). Reports are not used (empty text). The public release has no patient ids, so
each volume is its own patient. Volumes are read with the Rad-ChestCT geometry of `radfinder.io.formats.npz_affine`;
`spacing_mm` other than 0.8 is passed to `load_volume` through `StudyRecord.load_opts`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .records import DatasetError, StudyRecord, require_unique_keys

RADCHESTCT_SPLITS = ("train", "valid", "test")
INDEX_COLUMN = "NoteAcc_DEID"
NPZ_SPACING_MM = 0.8


def label_csv_name(split: str) -> str:
    return f"img{split}_Abnormality_and_Location_Labels.csv"


def find_label_csv(root: Path, split: str) -> Path | None:
    """The label table of `split` in `root` or a folder directly below it."""
    name = label_csv_name(split)
    if (root / name).is_file():
        return root / name
    found = sorted(root.glob(f"*/{name}"))
    return found[0] if found else None


def read_label_table(path: Path, mapping: Mapping[str, Sequence[str]] | None = None):
    """(ids, (N, 18) float32 labels, {class: mapped abnormalities absent from the table}) of one label CSV.

    `mapping` defaults to `radfinder.text.radchestct_labels.RADCHESTCT_TO_CTRATE18`."""
    from ..text.radchestct_labels import RADCHESTCT_TO_CTRATE18, LabelMapError, radchestct_to_ctrate18

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many types for a malformed table
        raise DatasetError(f"{path}: cannot read Rad-ChestCT label table ({exc})") from exc
    if INDEX_COLUMN not in df.columns:
        raise DatasetError(f"{path}: no {INDEX_COLUMN} column (has {list(df.columns)[:8]})")
    ids = [str(v).strip() for v in df[INDEX_COLUMN]]
    if any(not i for i in ids):
        raise DatasetError(f"{path}: row {ids.index('') + 2} has an empty {INDEX_COLUMN}")
    cols = [c for c in df.columns if "*" in c]
    if not cols:
        raise DatasetError(f"{path}: no label columns named 'abnormality*location'")
    if not ids:
        return [], np.zeros((0, 18), np.float32), {}
    try:
        values = df[cols].apply(pd.to_numeric, errors="raise").to_numpy()
        labels, missing = radchestct_to_ctrate18(cols, values, mapping=mapping or RADCHESTCT_TO_CTRATE18)
    except (ValueError, LabelMapError) as exc:
        raise DatasetError(f"{path}: label values must be 0/1 ({exc})") from exc
    return ids, labels.astype(np.float32), missing


def radchestct_splits(split: str) -> tuple[str, ...]:
    if split == "all":
        return RADCHESTCT_SPLITS
    if split not in RADCHESTCT_SPLITS:
        raise DatasetError(f"Rad-ChestCT split must be all, {', '.join(RADCHESTCT_SPLITS)}, got {split!r}")
    return (split,)


def load_radchestct(
    root: str | Path,
    split: str = "all",
    *,
    mapping: Mapping[str, Sequence[str]] | None = None,
    spacing_mm: float = NPZ_SPACING_MM,
    require_files: bool = True,
) -> list[StudyRecord]:
    """Records of `split` (all | train | valid | test), ordered as in the label tables (train, valid, test).

    An `all` load skips absent tables; a named split needs its table. require_files: drop volumes whose npz is
    missing (with a warning; an error when none exists); False returns every labelled id (for check-data).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    npz_dir = root / "npz"
    records: list[StudyRecord] = []
    missing: list[str] = []
    tables = 0
    for sp in radchestct_splits(split):
        csv_path = find_label_csv(root, sp)
        if csv_path is None:
            if split != "all":
                raise DatasetError(f"{root}: no {label_csv_name(sp)} (looked in the folder and one level below)")
            continue
        tables += 1
        ids, labels, _ = read_label_table(csv_path, mapping)
        for key, lab in zip(ids, labels, strict=True):
            path = npz_dir / f"{key}.npz"
            if require_files and not path.is_file():
                missing.append(str(path))
                continue
            records.append(
                StudyRecord(
                    key=key,
                    path=str(path),
                    report_id=key,
                    findings="",
                    impressions="",
                    patient=key,
                    split=sp,
                    dataset="rad-chestct",
                    labels=lab,
                    load_opts={} if spacing_mm == NPZ_SPACING_MM else {"spacing": (float(spacing_mm),) * 3},
                    extra={"labels_csv": csv_path.name},
                )
            )
    if tables == 0:
        raise DatasetError(f"{root}: no Rad-ChestCT label table ({label_csv_name('train')} etc.) found")
    if missing and not records:
        raise DatasetError(f"{root}: none of the {len(missing)} labelled volumes exist (e.g. {missing[0]})")
    if missing:
        warnings.warn(
            f"{root}: {len(missing)} labelled volumes are missing (e.g. {missing[0]}); "
            "`radfinder check-data radchestct` lists them all",
            stacklevel=2,
        )
    require_unique_keys(records, f"{root} (Rad-ChestCT label tables)")
    return records
