"""Layout audits per dataset kind for `check_dataset`: files on disk that no table mentions, table joins, label
mappings, known-broken volumes. Each audit yields `Problem`s; none of them reads a volume."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .records import DatasetError, strip_volume_suffix


@dataclass
class Problem:
    """One finding of `check-data`. severity: "error" (exit code 1) or "warning"."""

    severity: str
    code: str
    message: str
    key: str | None = None
    path: str | None = None
    split: str | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _volume_files(folder: Path, pattern: str = "*") -> dict[str, Path]:
    return {strip_volume_suffix(p.name): p for p in folder.glob(pattern) if p.is_file()} if folder.is_dir() else {}


def audit_ctrate(root: Path, splits: list[str | None], opts: dict) -> Iterator[Problem]:
    from .ctrate import (
        CTRATE_BROKEN_VOLUMES,
        _read_csv_by_volume,
        ctrate_root,
        is_known_broken,
        split_tables,
        volume_folder,
    )

    root = ctrate_root(root)
    bases = sorted({"valid" if s == "valid" else "train" for s in splits if s is not None})
    for base in bases:
        tables = split_tables(root, base)
        folder, needs_rescale = volume_folder(root, base)
        if needs_rescale:
            yield Problem("warning", "unfixed_volumes", f"using {folder.name}/ (no {folder.name}_fixed/): volumes "
                          "hold raw values; HU needs RescaleSlope/Intercept from the metadata", split=base)  # fmt: skip
        if not tables["reports"].is_file():
            continue  # the loader has reported it
        try:
            reports = _read_csv_by_volume(tables["reports"])
        except DatasetError as exc:
            yield Problem("error", "unreadable_table", str(exc), path=str(tables["reports"]), split=base)
            continue
        on_disk = _volume_files(folder, "*/*/*.nii.gz")
        for name, path in sorted(on_disk.items()):
            if name not in reports:
                yield Problem("warning", "orphan_volume", f"volume has no row in {tables['reports'].name}",
                              key=name, path=str(path), split=base)  # fmt: skip
        for what in ("labels", "metadata"):
            if not tables[what].is_file():
                sev = "error" if what == "labels" else "warning"
                yield Problem(sev, f"missing_{what}_table", f"{tables[what]} not found", path=str(tables[what]),
                              split=base)  # fmt: skip
                continue
            try:
                rows = _read_csv_by_volume(tables[what])
            except DatasetError as exc:
                yield Problem("error", "unreadable_table", str(exc), path=str(tables[what]), split=base)
                continue
            for name in sorted(set(rows) - set(reports)):
                yield Problem("warning", f"orphan_{what}_row", f"{tables[what].name} row has no report", key=name,
                              split=base)  # fmt: skip
            if what == "metadata":
                for name in sorted(set(reports) - set(rows)):
                    yield Problem("warning", "missing_metadata", f"no row in {tables[what].name}", key=name,
                                  split=base)  # fmt: skip
        broken = [n for n in reports if is_known_broken(n, opts.get("broken", CTRATE_BROKEN_VOLUMES))]
        if broken and opts.get("skip_broken", True):
            yield Problem("warning", "known_broken", f"{len(broken)} volume(s) on the known-broken list are "
                          f"skipped by the loader: {', '.join(sorted(broken))}", split=base)  # fmt: skip


def audit_radchestct(root: Path, splits: list[str | None], opts: dict) -> Iterator[Problem]:
    from .radchestct import RADCHESTCT_SPLITS, find_label_csv, read_label_table

    labelled: set[str] = set()
    absent: dict[str, list[str]] = {}
    for sp in RADCHESTCT_SPLITS:
        path = find_label_csv(root, sp)
        if path is None:
            yield Problem("warning", "missing_labels_table", f"no label table for split {sp!r}", split=sp)
            continue
        try:
            ids, _, missing = read_label_table(path, opts.get("mapping"))
        except DatasetError:
            continue  # the loader has reported it
        labelled |= set(ids)
        for cls, names in missing.items():
            absent.setdefault(cls, sorted(set(names)))
    for path in sorted((root / "npz").glob("*.npz")):
        if path.stem not in labelled:
            yield Problem("warning", "orphan_volume", "npz has no row in any label table", key=path.stem,
                          path=str(path))  # fmt: skip
    for cls, names in absent.items():
        yield Problem("warning", "label_mapping", f"{cls}: mapped Rad-ChestCT abnormalities {names} have no column "
                      "in the label tables")  # fmt: skip


def audit_merlin(root: Path, splits: list[str | None], opts: dict) -> Iterator[Problem]:
    from .merlin import merlin_reports_file, merlin_root
    from .registry import load_dataset

    root = merlin_root(root)
    try:
        merlin_reports_file(root, opts.get("reports"))
        keys = {r.key for r in load_dataset("merlin", root, "all", require_files=False, reports=opts.get("reports"))}
    except DatasetError:
        return
    for name, path in sorted(_volume_files(root / "merlin_data", "*.nii.gz").items()):
        if name not in keys:
            yield Problem("warning", "orphan_volume", "volume has no row in the report table", key=name,
                          path=str(path))  # fmt: skip


def audit_inspect(root: Path, splits: list[str | None], opts: dict) -> Iterator[Problem]:
    from .inspect_ct import index_volumes, inspect_root
    from .registry import load_dataset

    root = inspect_root(root)
    kw = {k: opts[k] for k in ("impressions", "volumes_dir") if k in opts}
    try:
        keys = {r.key for r in load_dataset("inspect", root, "all", require_files=False, **kw)}
        files = index_volumes(Path(opts["volumes_dir"]) if opts.get("volumes_dir") else root)
    except DatasetError:
        return
    for name, path in sorted(files.items()):
        if name not in keys:
            yield Problem("warning", "orphan_volume", "volume has no row in the impressions tables", key=name,
                          path=str(path))  # fmt: skip


AUDITS: dict[str, Callable[[Path, list, dict], Iterator[Problem]]] = {
    "ctrate": audit_ctrate,
    "radchestct": audit_radchestct,
    "merlin": audit_merlin,
    "inspect": audit_inspect,
}
