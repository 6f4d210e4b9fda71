"""Inputs of `radfinder.data.mining`: report tables, the training volumes of a report, its DICOM study folder.

A CT-RATE style reports table has one row per volume (`VolumeName`, e.g. ``train_12_a_1``); rows of one study
with the same text are one report (`ReportItem`) whose volumes are those rows' NIfTI files under the dataset root
(`VolumeFinder`). The study's DICOM folder comes from `make_dicom_locator`: ``<dicom_root>/<pattern>`` with
``{study}`` / ``{patient}`` filled in, unless an explicit study -> folder map names the study.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .records import DatasetError, strip_volume_suffix

TEXT_COLUMNS = {"en": ("Findings_EN", "Impressions_EN"), "de": ("Befund", "Beurteilung")}


@dataclass(frozen=True)
class VolumeRef:
    """A training volume: its key (CT-RATE volume name), file and split."""

    key: str
    path: Path | None
    split: str = ""


@dataclass
class ReportItem:
    """One report text and the training volumes it describes."""

    report_id: str
    findings: str
    impressions: str
    volumes: list[VolumeRef]
    patient: str = ""


def read_report_table(path: str | Path, lang: str = "en") -> list[tuple[str, str, str]]:
    """(VolumeName without suffix, findings, impressions) of every row of a CT-RATE style reports CSV."""
    path = Path(path)
    if lang not in TEXT_COLUMNS:
        raise ConfigError(f"lang must be one of {', '.join(TEXT_COLUMNS)}, got {lang!r}")
    f_col, i_col = TEXT_COLUMNS[lang]
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            missing = [c for c in ("VolumeName", f_col, i_col) if c not in cols]
            if missing:
                raise DatasetError(f"{path}: no column(s) {missing} for --lang {lang} (has {cols[:10]})")
            return [
                (strip_volume_suffix(row["VolumeName"].strip()), row[f_col] or "", row[i_col] or "") for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read reports table ({exc})") from exc


def _study_of(name: str) -> tuple[str, str]:
    """(patient, study) of a CT-RATE volume name; a name outside that scheme is its own study and patient."""
    from .ctrate import parse_volume_name

    try:
        patient, study, _ = parse_volume_name(name)
    except DatasetError:
        return name, name
    return patient, study


class VolumeFinder:
    """Finds a volume's NIfTI under a CT-RATE dataset root: `<split>_fixed/<patient>/<study>/<name>.nii.gz` (or the
    original `<split>/...`), else any `<name>.nii.gz` / `.nii` below the root (a `*_fixed` folder preferred)."""

    def __init__(self, root: str | Path):
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset root is not a folder")
        self.root = root / "dataset" if (root / "dataset").is_dir() else root
        self._index: dict[str, Path] | None = None

    def find(self, name: str) -> Path | None:
        patient, study = _study_of(name)
        split = name.split("_", 1)[0]
        for folder in (f"{split}_fixed", split):
            p = self.root / folder / patient / study / f"{name}.nii.gz"
            if p.is_file():
                return p
        if self._index is None:
            self._index = {}
            files = sorted(self.root.rglob("*.nii*"), key=lambda q: ("_fixed" not in str(q.parent), str(q)))
            for q in files:
                self._index.setdefault(strip_volume_suffix(q.name), q)
        return self._index.get(name)


def default_dataset_root(reports: Path) -> Path | None:
    """Where the volumes of a reports CSV probably are: `dataset/` above `radiology_text_reports/`, or a
    `dataset/` folder next to the CSV (the synthetic cohort's `reports_de.csv`)."""
    for cand in (reports.parent.parent, reports.parent / "dataset", reports.parent):
        if any((cand / s).is_dir() for s in ("train_fixed", "valid_fixed", "train", "valid")):
            return cand
    return None


def group_reports(rows: Iterable[tuple[str, str, str]], finder: VolumeFinder | None) -> list[ReportItem]:
    """Rows of one study with the same text become one report; its volumes are the rows' volumes."""
    items: dict[tuple[str, str, str], ReportItem] = {}
    for name, findings, impressions in rows:
        patient, study = _study_of(name)
        key = (study, findings, impressions)
        if key not in items:
            items[key] = ReportItem(study, findings, impressions, [], patient)
        path = finder.find(name) if finder is not None else None
        items[key].volumes.append(VolumeRef(name, path, name.split("_", 1)[0]))
    return list(items.values())


def make_dicom_locator(
    dicom_root: str | Path, pattern: str = "{study}", mapping: Mapping[str, str] | str | Path | None = None
) -> Callable[[ReportItem], Path]:
    """Report -> DICOM study folder: `mapping[report_id]` (a dict, or a CSV/JSON file of study -> folder; relative
    folders are under `dicom_root`) when it names the study, else `dicom_root / pattern.format(study=, patient=)`."""
    root = Path(dicom_root)
    table: dict[str, str] = {}
    if isinstance(mapping, (str, Path)):
        mp = Path(mapping)
        if not mp.is_file():
            raise ConfigError(f"{mp}: DICOM map file not found")
        if mp.suffix.lower() == ".json":
            table = {str(k): str(v) for k, v in json.loads(mp.read_text(encoding="utf-8")).items()}
        else:
            with mp.open(newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.reader(fh) if r and not r[0].startswith("#")]
            if rows and rows[0][:2] == ["study", "folder"]:
                rows = rows[1:]
            bad = [r for r in rows if len(r) < 2]
            if bad:
                raise ConfigError(f"{mp}: each row needs `study,folder`, got {bad[0]}")
            table = {r[0].strip(): r[1].strip() for r in rows}
    elif mapping is not None:
        table = {str(k): str(v) for k, v in mapping.items()}
    try:
        pattern.format(study="s", patient="p", report_id="s")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"DICOM pattern {pattern!r} may use only {{study}} and {{patient}} ({exc})") from exc

    def locate(item: ReportItem) -> Path:
        if item.report_id in table:
            return root / table[item.report_id]
        return root / pattern.format(study=item.report_id, patient=item.patient, report_id=item.report_id)

    return locate
