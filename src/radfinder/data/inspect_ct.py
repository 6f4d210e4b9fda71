"""INSPECT (CT pulmonary angiography, Stanford AIMI) loader.

What is known (RadFinder's loader): the data sit in `Inspect/full/`, with the report impressions in
`full/impressions_*.tsv`; only impressions are released as text; about 20 keys are broken (4D files and
similar) and are excluded there by a hard-coded list we do not have.

Assumptions made here, since the volume naming is not documented in what we could read:
  * One table per split, `impressions_<split>.tsv` (e.g. impressions_train.tsv); the split is the part of the
    file name after "impressions_". A `split` column, when present, overrides it. `impressions=` names the
    table(s) explicitly.
  * The id column is the first of impression_id, image_id, id, study_id, person_id (as
    `radfinder.text.reports.read_inspect_impressions` reads it); a `person_id` column, when present and not the id,
    gives the patient (else each study is its own patient).
  * Each volume is a file named `<id>.nii.gz` (or .nii, .nrrd, .npz) anywhere up to two folders below `root`
    (e.g. `full/<id>.nii.gz` or `full/CTPA/<id>.nii.gz`), or in `volumes_dir=` when given. Two files with the
    same id are an error.
  * Broken keys: pass them as `exclude=` (names, globs or a file) through `load_dataset`.
No CT-RATE labels (all -1).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..text.reports import ReportReadError, read_inspect_impressions
from .records import DatasetError, StudyRecord, require_unique_keys, strip_volume_suffix

_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".npz")
_SPLIT_ALIASES = {"val": "valid", "validation": "valid", "dev": "valid"}


def inspect_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    for sub in ("full", "Inspect/full"):
        if not list(root.glob("impressions_*.tsv")) and list((root / sub).glob("impressions_*.tsv")):
            return root / sub
    return root


def impression_tables(
    root: Path, impressions: str | Path | Iterable[str | Path] | None = None
) -> list[tuple[str, Path]]:
    """[(split, table)]; the split is "" for a table not named impressions_<split>.tsv."""
    if impressions is None:
        paths = sorted(root.glob("impressions_*.tsv"))
        if not paths:
            raise DatasetError(f"{root}: no impressions_*.tsv; not an INSPECT layout (see radfinder.data.inspect_ct)")
    else:
        items = [impressions] if isinstance(impressions, (str, Path)) else list(impressions)
        paths = [Path(p) if Path(p).is_absolute() or Path(p).exists() else root / p for p in items]
        for p in paths:
            if not p.is_file():
                raise DatasetError(f"{p}: INSPECT impressions table not found")
    out = []
    for p in paths:
        name = p.name.split(".")[0]
        out.append((normalise_split(name.removeprefix("impressions_")) if name.startswith("impressions_") else "", p))
    return out


def normalise_split(split: str) -> str:
    s = str(split).strip().lower()
    return _SPLIT_ALIASES.get(s, s)


def index_volumes(root: Path, depth: int = 2) -> dict[str, Path]:
    """{id: file} for every volume file up to `depth` folders below `root`."""
    found: dict[str, Path] = {}
    dirs, level = [root], 0
    while dirs and level <= depth:
        nxt = []
        for d in dirs:
            try:
                entries = sorted(d.iterdir())
            except OSError:
                continue
            for e in entries:
                if e.is_dir():
                    nxt.append(e)
                elif e.name.lower().endswith(_SUFFIXES):
                    key = strip_volume_suffix(e.name)
                    if key in found:
                        raise DatasetError(f"two volume files for INSPECT id {key!r}: {found[key]} and {e}")
                    found[key] = e
        dirs, level = nxt, level + 1
    return found


def _side_columns(path: Path) -> pd.DataFrame | None:
    try:
        df = pd.read_csv(path, sep="\t" if path.suffix.lower() != ".csv" else ",", dtype=str, keep_default_na=False)
    except Exception:  # the report reader has already validated the table
        return None
    return df


def load_inspect(
    root: str | Path,
    split: str = "test",
    *,
    impressions: str | Path | Iterable[str | Path] | None = None,
    volumes_dir: str | Path | None = None,
    require_files: bool = True,
) -> list[StudyRecord]:
    """Records of `split` (a table's split name, e.g. train | valid | test, or all), in table order.

    require_files: drop studies without a volume file (with a warning; an error when none exists); False
    returns every study of the tables, with the expected `<volumes>/<id>.nii.gz` path where none was found."""
    root = inspect_root(root)
    tables = impression_tables(root, impressions)
    want = normalise_split(split)
    vol_root = Path(volumes_dir) if volumes_dir is not None else root
    if not vol_root.is_dir():
        raise DatasetError(f"{vol_root}: INSPECT volume folder not found")
    volumes = index_volumes(vol_root)
    records, missing = [], []
    for table_split, table in tables:
        try:
            reports = read_inspect_impressions(table)
        except ReportReadError as exc:
            raise DatasetError(str(exc)) from exc
        side = _side_columns(table)
        lower = {c.lower(): c for c in side.columns} if side is not None else {}
        person = lower.get("person_id")
        split_col = lower.get("split")
        for n, rep in enumerate(reports):
            if not rep.id:
                raise DatasetError(f"{table}: row {n + 2} has an empty id")
            sp = normalise_split(side[split_col].iloc[n]) if split_col else table_split
            if want != "all" and sp != want:
                continue
            path = volumes.get(rep.id)
            if path is None:
                if require_files:
                    missing.append(rep.id)
                    continue
                path = vol_root / f"{rep.id}.nii.gz"
            pid = str(side[person].iloc[n]).strip() if person and person != _id_column(side) else ""
            records.append(
                StudyRecord(
                    key=rep.id,
                    path=str(path),
                    report_id=rep.id,
                    findings="",
                    impressions=rep.impressions,
                    patient=pid or rep.id,
                    split=sp,
                    dataset="inspect",
                    extra={"impressions_table": table.name},
                )
            )
    if missing and not records:
        raise DatasetError(f"{vol_root}: no volume file for any of the {len(missing)} studies (e.g. {missing[0]})")
    if missing:
        warnings.warn(
            f"{vol_root}: {len(missing)} INSPECT studies have no volume file (e.g. {missing[0]}); "
            "`radfinder check-data inspect` lists them all",
            stacklevel=2,
        )
    require_unique_keys(records, f"{root} (INSPECT impressions tables)")
    return records


def _id_column(df: pd.DataFrame) -> str | None:
    lower = {c.lower(): c for c in df.columns}
    return next((lower[c] for c in ("impression_id", "image_id", "id", "study_id", "person_id") if c in lower), None)
