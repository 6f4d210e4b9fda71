"""The one reader of snippet-pairs files (`pairs.jsonl`, written by `radfinder.data.mining`), for training and
evaluation alike.

A line is a JSON object with at least ``key`` (the training volume), ``snippet`` and ``depth_cell``. Mining also
writes (see `radfinder.data.mining`):

- ``spec_hash``: the preprocessing spec the depth cells were computed for. A cell index only means something on the
  grid of that spec, so `read_pairs(..., spec_hash=h)` refuses a file mined for another spec (lines without the
  field, e.g. written by hand, are accepted and counted as ``unchecked``);
- ``depth_mm``: the true depth of the referenced image, in mm along the cell axis from the start edge of cell 0
  (the one meaning of ``depth_mm`` in pairs and metrics; world z is ``world_z_mm``);
- ``report_id``, ``field``, ``start``, ``end``: where the reference sits in its report. Lines sharing them and the key
  come from one reference that cites several images (one line per distinct cell): `PairRow.reference` groups them,
  so evaluation can score such a snippet once against the nearest of its true cells.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .records import DatasetError

__all__ = ["PairRow", "PairsFile", "read_pairs"]


@dataclass(frozen=True)
class PairRow:
    key: str
    snippet: str
    depth_cell: int
    depth_mm: float | None = None  # mm along the cell axis from the start edge of cell 0 (None: not recorded)
    spec_hash: str | None = None
    split: str | None = None
    reference: str = ""  # lines of one reference (several cited images) share it; unique per line otherwise
    line: int = 0


@dataclass
class PairsFile:
    """Rows kept plus what was set aside: `counts` has ``read`` (non-empty lines), ``kept``, ``other_keys`` (a volume
    outside the `keys` asked for: another split or dataset), ``empty_snippet`` and ``unchecked`` (no spec hash)."""

    path: Path
    rows: list[PairRow]
    spec_hash: str | None  # the spec hash the file's lines carry (None when none carries one)
    counts: Counter = field(default_factory=Counter)
    other_keys_by_split: Counter = field(default_factory=Counter)  # the ``other_keys`` lines by their ``split``


def _row(obj: dict, path: Path, n: int) -> PairRow:
    try:
        key, text, cell = str(obj["key"]), str(obj["snippet"]), int(obj["depth_cell"])
        depth = obj.get("depth_mm")
        depth = None if depth is None else float(depth)
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}:{n}: need a JSON object with key, snippet, depth_cell ({exc!r})") from exc
    if cell < 0:
        raise DatasetError(f"{path}:{n}: depth_cell must be >= 0, got {cell}")
    if "start" in obj and "end" in obj:
        reference = f"{key}|{obj.get('report_id', '')}|{obj.get('field', '')}|{obj['start']}|{obj['end']}"
    else:
        reference = f"{key}|line{n}"
    spec = obj.get("spec_hash")
    return PairRow(key, text.strip(), cell, depth, None if spec is None else str(spec),
                   None if obj.get("split") is None else str(obj["split"]), reference, n)


def read_pairs(path: str | Path, keys: Iterable[str] | None = None, *, spec_hash: str | None = None,
               what: str = "") -> PairsFile:
    """Read a pairs.jsonl file, keeping lines of `keys` (all when None) with a non-empty snippet.

    spec_hash: the preprocessing spec hash of the grid the pairs will be used on (the feature cache's or the model's);
    a line mined for another spec raises `DatasetError` naming both hashes. `what` names that grid in the message.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"snippet-pairs file not found: {path}")
    wanted = set(keys) if keys is not None else None
    rows: list[PairRow] = []
    counts: Counter = Counter()
    by_split: Counter = Counter()
    seen_specs: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{n}: not a JSON line ({exc})") from exc
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}:{n}: need a JSON object with key, snippet, depth_cell")
        row = _row(obj, path, n)
        counts["read"] += 1
        if row.spec_hash is None:
            counts["unchecked"] += 1
        else:
            seen_specs.add(row.spec_hash)
            if spec_hash is not None and row.spec_hash != spec_hash:
                raise DatasetError(
                    f"{path}:{n}: pairs were mined for preprocessing spec {row.spec_hash}, but "
                    f"{what or 'the grid they are used on'} has spec {spec_hash}: their depth cells index another "
                    "grid; mine the pairs again with this spec (radfinder mine --spec ...)"
                )
        if wanted is not None and row.key not in wanted:
            counts["other_keys"] += 1
            by_split[row.split] += 1
            continue
        if not row.snippet:
            counts["empty_snippet"] += 1
            continue
        rows.append(row)
    counts["kept"] = len(rows)
    if len(seen_specs) > 1:
        specs = ", ".join(sorted(seen_specs))
        raise DatasetError(f"{path}: lines were mined for several preprocessing specs ({specs})")
    return PairsFile(path, rows, next(iter(seen_specs), None), counts, by_split)
