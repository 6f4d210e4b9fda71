"""`mine_dataset`: snippet -> depth-cell training pairs from the slice references of a whole report dataset.

For each report: mine its slice references (`radfinder.text.references`, findings then impressions as one text,
so a bare "image N" in the impression inherits a series named in the findings), look every referenced
(series, image) up in the study's DICOM headers, and place it in the depth cells of each training volume of the
study (`radfinder.data.depth_mapping`: geometric, through world coordinates, with the preprocessing plan of the
spec). One JSON line per (reference, training volume, target cell):

    {"key", "report_id", "split", "snippet", "series", "image", "depth_cell", "depth_mm", "world_z_mm",
     "cell_world_z_mm", "share", "field", "start", "end", "lang", "spec_hash"}

`start`/`end` are character offsets of the reference in its `field` ("findings" or "impressions": the column
Findings_EN / Impressions_EN, or Befund / Beurteilung for German). `depth_mm` is the referenced image's true depth,
in mm along the cell axis from the start edge of cell 0 (what evaluation scores against); `world_z_mm` and
`cell_world_z_mm` are the world (RAS) z of the image centre and of the target cell's centre. `spec_hash` is the
preprocessing spec the cells were computed for: `radfinder.data.pairs.read_pairs` refuses the file on another grid.

A reference naming several images ("images 40 and 85", "Bild 12-15") gives one line per distinct target cell
(`multi="each"`, the default): each image is a correct location of what the snippet describes (the generator and
radiologists cite one image per lesion), so keeping only the first would throw away true positions, while images
landing in the same cell would only repeat a pair and over-weight long ranges. The first image that lands in the
cell is the line's `image`. `multi="first"` keeps only the first image's cell.

Training volumes and DICOM: the reports table is CT-RATE style (one row per volume, `VolumeName`); rows of one
study with the same text are one report, whose volumes are those rows' NIfTI files under the dataset root
(header only: nothing but the shape and affine is read). The study's DICOM folder is
``<dicom_root>/<dicom_pattern>`` with ``{study}`` (= report id, e.g. ``train_12_a``) and ``{patient}``
(``train_12``) filled in, or the folder given for the study in `dicom_map` (relative to `dicom_root`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError
from ..preprocess.spec import PreprocessSpec, resolve_spec
from .depth_mapping import DEFAULT_MAX_PIXELS, DepthMapper, furthest_reason
from .mining_inputs import (
    TEXT_COLUMNS,
    ReportItem,
    VolumeFinder,
    VolumeRef,
    default_dataset_root,
    group_reports,
    make_dicom_locator,
    read_report_table,
)

__all__ = [
    "TEXT_COLUMNS", "MiningSummary", "ReportItem", "VolumeRef", "default_dataset_root", "group_reports",
    "make_dicom_locator", "mine_dataset", "mine_items", "mine_records", "read_report_table", "report_references",
]  # fmt: skip

_SEP = "\n\n"
_MAX_PROBLEMS = 20


@dataclass
class MiningSummary:
    """Counts of one mining run. Every mined reference is either `resolved` (at least one line written) or
    counted once in `dropped` under the reason that got furthest (`depth_mapping.DROP_REASONS`);
    `attempts_dropped` counts every failed (reference, image, volume) attempt by reason."""

    lang: str
    spec_hash: str
    reports: int = 0
    rows: int = 0
    volumes: int = 0
    references: int = 0
    resolved: int = 0
    pairs: int = 0
    dropped: Counter = field(default_factory=Counter)
    attempts_dropped: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    out: str | None = None
    lines: list[dict] | None = None  # the pairs themselves when no output file was given

    def to_json(self) -> dict[str, Any]:
        return {
            "lang": self.lang, "spec_hash": self.spec_hash, "out": self.out, "reports": self.reports,
            "rows": self.rows, "volumes": self.volumes, "references": self.references, "resolved": self.resolved,
            "pairs": self.pairs, "dropped": dict(sorted(self.dropped.items())),
            "attempts_dropped": dict(sorted(self.attempts_dropped.items())), "problems": list(self.problems),
        }  # fmt: skip

    def note(self, message: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(message)


def _volume_geometry(path: Path, spec: PreprocessSpec):
    """The preprocessing plan of a training volume from its header (NIfTI) or, for other formats, a full read."""
    from ..preprocess.geometry import plan_geometry

    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        img = nib.load(str(path))  # header only: the voxels stay on disk
        shape, affine = tuple(int(v) for v in img.shape[:3]), np.asarray(img.affine, dtype=np.float64)
    else:
        from ..io import load_volume

        vol = load_volume(path)
        shape, affine = vol.shape, vol.affine
    return plan_geometry(shape, affine, spec)


# ----------------------------------------------------------------------------------------------- mining


def report_references(item: ReportItem):
    """(field, reference, start, end) with offsets relative to the field."""
    from ..text.references import mine_references

    text = item.findings + _SEP + item.impressions
    cut = len(item.findings) + len(_SEP)
    for ref in mine_references(text):
        if ref.start < cut:
            yield "findings", ref, ref.start, ref.end
        else:
            yield "impressions", ref, ref.start - cut, ref.end - cut


def _mine_item(
    item: ReportItem, locate, spec: PreprocessSpec, lang: str, multi: str, max_pixels: int, s: MiningSummary
) -> list[dict]:
    from ..errors import VolumeReadError
    from ..io.dicom_index import index_dicom_study

    refs = list(report_references(item))
    s.references += len(refs)
    if not refs:
        return []
    mappers: list[tuple[VolumeRef, DepthMapper | str]] = []
    index, index_loaded = None, False
    for vol in item.volumes:
        if vol.path is None:
            mappers.append((vol, "no_volume"))
            continue
        try:
            geom = _volume_geometry(vol.path, spec)
        except Exception as exc:  # nibabel/reader errors of many types: count, name the file, keep going
            s.note(f"{vol.path}: cannot read volume header ({type(exc).__name__}: {exc})")
            mappers.append((vol, "bad_volume"))
            continue
        if not index_loaded:
            index_loaded = True
            folder = locate(item)
            try:
                index = index_dicom_study(folder) if folder.is_dir() else None
            except VolumeReadError as exc:
                s.note(str(exc))
            if index is None and not folder.is_dir():
                s.note(f"{folder}: no DICOM study folder for report {item.report_id}")
        mappers.append((vol, DepthMapper(index, geom, max_pixels=max_pixels)))
    if not mappers:
        mappers = [(VolumeRef("", None), "no_volume")]
    lines: list[dict] = []
    for fld, ref, start, end in refs:
        reasons: list[str] = []
        written = 0
        images = list(ref.images[:1] if multi == "first" else ref.images)
        if ref.series is None:
            reasons.append("no_series")
        elif not ref.snippet.strip():
            reasons.append("empty_snippet")
        else:
            for vol, mapper in mappers:
                if isinstance(mapper, str):
                    reasons.extend([mapper] * len(images))
                    continue
                cells: set[int] = set()
                for image in images:
                    res = mapper.resolve(ref.series, image)
                    if not res.resolved:
                        reasons.append(res.reason)
                        continue
                    p = res.placement
                    if p.depth_cell in cells:
                        continue
                    cells.add(p.depth_cell)
                    written += 1
                    lines.append({
                        "key": vol.key, "report_id": item.report_id, "split": vol.split, "snippet": ref.snippet,
                        "series": ref.series, "image": int(image), "depth_cell": p.depth_cell,
                        "depth_mm": round(p.depth_mm, 3), "world_z_mm": round(p.world_z_mm, 3),
                        "cell_world_z_mm": round(p.cell_world_z_mm, 3), "share": round(p.share, 4), "field": fld,
                        "start": start, "end": end, "lang": lang, "spec_hash": s.spec_hash,
                    })  # fmt: skip
        s.attempts_dropped.update(reasons)
        if written:
            s.resolved += 1
        else:
            s.dropped[furthest_reason(reasons)] += 1
    return lines


def mine_items(
    items: Sequence[ReportItem],
    locate: Callable[[ReportItem], Path],
    *,
    spec: str | Path | PreprocessSpec | None = None,
    out: str | Path | None = None,
    lang: str = "en",
    multi: Literal["each", "first"] = "each",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    rows: int | None = None,
    show_progress: bool = True,
) -> MiningSummary:
    """Mine prepared `ReportItem`s (see the module doc); pairs go to `out` (JSON lines, written atomically) or,
    without `out`, into `summary.lines`."""
    from ..progress import progress

    if multi not in ("each", "first"):
        raise ConfigError(f"multi must be 'each' or 'first', got {multi!r}")
    spec = resolve_spec(spec)
    s = MiningSummary(lang=lang, spec_hash=spec.hash(), reports=len(items))
    s.rows = rows if rows is not None else sum(len(i.volumes) for i in items)
    s.volumes = len({v.key for i in items for v in i.volumes if v.path is not None})
    fh = tmp = None
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        fh = tmp.open("w", encoding="utf-8")
        s.out = str(out)
    else:
        s.lines = []
    try:
        for item in progress(items, total=len(items), desc="mine", enabled=show_progress):
            lines = _mine_item(item, locate, spec, lang, multi, max_pixels, s)
            s.pairs += len(lines)
            if fh is not None:
                fh.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
            else:
                s.lines.extend(lines)
    finally:
        if fh is not None:
            fh.close()
    if tmp is not None:
        tmp.replace(out)
    return s


def mine_dataset(
    reports: str | Path | Sequence[str | Path],
    dicom_root: str | Path,
    *,
    dataset_root: str | Path | None = None,
    spec: str | Path | PreprocessSpec | None = None,
    out: str | Path | None = None,
    lang: str = "en",
    dicom_pattern: str = "{study}",
    dicom_map: Mapping[str, str] | str | Path | None = None,
    multi: Literal["each", "first"] = "each",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    show_progress: bool = True,
) -> MiningSummary:
    """Mine CT-RATE style report table(s) into snippet -> depth-cell pairs (module doc). `dataset_root`
    defaults to the `dataset/` folder holding the first table (`default_dataset_root`)."""
    paths = [Path(reports)] if isinstance(reports, (str, Path)) else [Path(p) for p in reports]
    if not paths:
        raise ConfigError("no reports table given")
    if dataset_root is None:
        dataset_root = default_dataset_root(paths[0])
        if dataset_root is None:
            raise ConfigError(f"{paths[0]}: cannot tell where the training volumes are; give the dataset root")
    finder = VolumeFinder(dataset_root)
    table = [row for p in paths for row in read_report_table(p, lang)]
    items = group_reports(table, finder)
    locate = make_dicom_locator(dicom_root, dicom_pattern, dicom_map)
    return mine_items(
        items, locate, spec=spec, out=out, lang=lang, multi=multi, max_pixels=max_pixels, rows=len(table),
        show_progress=show_progress,
    )  # fmt: skip


def mine_records(
    records: Sequence[Any],
    dicom_root: str | Path,
    *,
    spec: str | Path | PreprocessSpec | None = None,
    out: str | Path | None = None,
    lang: str = "en",
    dicom_pattern: str = "{study}",
    dicom_map: Mapping[str, str] | str | Path | None = None,
    multi: Literal["each", "first"] = "each",
    show_progress: bool = False,
) -> MiningSummary:
    """Mine already-loaded `StudyRecord`s (e.g. from `load_ctrate(..., mode="dup_all")`): records sharing a
    report id and text are one report; each record's `path` is a training volume."""
    items: dict[tuple[str, str, str], ReportItem] = {}
    for r in records:
        k = (r.report_id, r.findings, r.impressions)
        if k not in items:
            items[k] = ReportItem(r.report_id, r.findings, r.impressions, [], r.patient)
        items[k].volumes.append(VolumeRef(r.key, Path(r.path) if r.path else None, r.split))
    locate = make_dicom_locator(dicom_root, dicom_pattern, dicom_map)
    return mine_items(
        list(items.values()), locate, spec=spec, out=out, lang=lang, multi=multi, rows=len(records),
        show_progress=show_progress,
    )  # fmt: skip
