"""`load_dataset(kind, root, split, **opts)`: the one entry point training and evaluation configs use.

Kinds: ctrate, radchestct, merlin, inspect, manifest (aliases such as "ct-rate" or "rad_chestct" accepted).
Every kind returns `StudyRecord`s with unique keys, patient ids and CT-RATE-ordered labels (-1 unknown).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ctrate import load_ctrate
from .inspect_ct import load_inspect
from .manifest import load_manifest
from .merlin import load_merlin
from .radchestct import load_radchestct
from .records import DatasetError, StudyRecord, exclude_records, require_unique_keys


@dataclass(frozen=True)
class DatasetKind:
    """What the registry and `check-data` need to know about a dataset kind.

    splits: the splits `check-data` loads when none is given (together they cover the dataset once).
    has_reports / has_labels: whether every record should carry report text / CT-RATE labels (None: decide
        from the data, for manifests).
    """

    name: str
    loader: Callable[..., list[StudyRecord]]
    default_split: str | None
    splits: tuple[str | None, ...]
    has_reports: bool | None
    has_labels: bool | None
    description: str

    def options(self) -> list[str]:
        params = list(inspect.signature(self.loader).parameters.values())[2:]
        return [p.name for p in params]


DATASETS: dict[str, DatasetKind] = {
    "ctrate": DatasetKind("ctrate", load_ctrate, "valid", ("train", "valid"), True, True,
                          "CT-RATE layout (dataset/{train,valid}_fixed, reports, predicted labels, metadata)"),
    "radchestct": DatasetKind("radchestct", load_radchestct, "all", ("all",),
                              False, True, "Rad-ChestCT npz/ + img*_Abnormality_and_Location_Labels.csv"),
    "merlin": DatasetKind("merlin", load_merlin, "test", ("all",), True, False,
                          "Merlin merlin_data/<study id>.nii.gz + reports_final.xlsx/csv"),
    "inspect": DatasetKind("inspect", load_inspect, "test", ("all",), True, False,
                           "INSPECT volumes + impressions_<split>.tsv"),
    "manifest": DatasetKind("manifest", load_manifest, None, (None,), None, None,
                            "CSV/JSONL manifest: volume, report or findings/impressions, labels, patient, split"),
}  # fmt: skip
_ALIASES = {
    "ct-rate": "ctrate", "ct_rate": "ctrate", "rad-chestct": "radchestct", "rad_chestct": "radchestct",
    "radchest": "radchestct", "inspect_ct": "inspect", "csv": "manifest", "jsonl": "manifest",
}  # fmt: skip


def dataset_kind(kind: str) -> DatasetKind:
    key = str(kind).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset kind {kind!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[key]


def load_dataset(
    kind: str,
    root: str | Path,
    split: str | None = None,
    *,
    exclude: str | Path | Iterable[str] | None = None,
    limit: int | None = None,
    **opts: Any,
) -> list[StudyRecord]:
    """Records of one split of a dataset.

    kind: ctrate | radchestct | merlin | inspect | manifest. root: the dataset folder (the manifest file for
    `manifest`). split: the kind's split name (None: its default, e.g. CT-RATE `valid`, Rad-ChestCT `all`).
    exclude: keys or glob patterns to leave out (a list, a comma-separated string, or a text file of names).
    limit: keep the first `limit` records (smoke tests). opts: the loader's own options (e.g. CT-RATE `mode`,
    `dev_fraction`, `no_chest`); an unknown option is an error listing the valid ones.
    """
    spec = dataset_kind(kind)
    allowed = spec.options()
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise DatasetError(f"{spec.name}: unknown option(s) {unknown}; valid: {', '.join(allowed)}")
    records = spec.loader(Path(root), split if split is not None else spec.default_split, **opts)
    records = exclude_records(records, exclude)
    require_unique_keys(records, f"{root} ({spec.name})")
    if limit is not None:
        if limit < 0:
            raise DatasetError(f"limit must be >= 0, got {limit}")
        records = records[:limit]
    return records
