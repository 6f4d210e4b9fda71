"""File checks for `radfinder.models.hub`: every file of a hub snapshot or a `radfinder download --to` folder is
compared with the hash it is known by before a loader reads it.

A cache blob is named by its content hash (sha256 for LFS files, the git blob sha1 otherwise); a `--to` folder lists
the sha256 of each file in its provenance file. A file that passed is stamped (path, size, mtime under
RADFINDER_CACHE_DIR, default ~/.cache/radfinder) so the next command does not hash gigabytes again, while a file
rewritten since (another size or mtime) is hashed anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

PROVENANCE_FILE = "radfinder-hub.json"  # written by `radfinder download --to` beside the copied files
COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_verified: dict[tuple[str, int, int], str] = {}  # (real path, size, mtime_ns) -> digest already checked


def _stamp_dir() -> Path:
    root = os.environ.get("RADFINDER_CACHE_DIR") or Path.home() / ".cache" / "radfinder"
    return Path(root) / "verified"


def _stamped(real: Path, st: os.stat_result, kind: str, digest: str) -> bool:
    """Whether this exact file (path, size, modification time) was hashed to `digest` before: hashing a 4 GB
    release on every command would cost seconds, and a file rewritten since has another size or mtime."""
    try:
        rec = json.loads((_stamp_dir() / f"{kind}-{digest}.json").read_text())
    except (OSError, ValueError):
        return False
    return rec == {"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stamp(real: Path, st: os.stat_result, kind: str, digest: str) -> None:
    try:
        d = _stamp_dir()
        d.mkdir(parents=True, exist_ok=True)
        rec = {"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        (d / f"{kind}-{digest}.json").write_text(json.dumps(rec))
    except OSError:
        pass  # a read-only home only costs the hash again next time


def _matches(path: Path, kind: str, expected: str) -> bool:
    real = path.resolve()
    st = real.stat()
    if _stamped(real, st, kind, expected):
        return True
    ok = file_digest(path, kind) == expected
    if ok:
        _stamp(real, st, kind, expected)
    return ok


def file_digest(path: Path, kind: str) -> str:
    real = path.resolve()
    st = real.stat()
    key = (f"{kind}:{real}", st.st_size, st.st_mtime_ns)
    if key in _verified:
        return _verified[key]
    if kind == "sha256":
        h = hashlib.sha256()
    else:  # git blob id: sha1 over "blob <size>\0" + content
        h = hashlib.sha1(usedforsecurity=False)
        h.update(f"blob {st.st_size}\0".encode())
    with open(real, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    _verified[key] = h.hexdigest()
    return _verified[key]


def _expected_digest(path: Path) -> tuple[str, str] | None:
    """(kind, digest) a cache file must have: its blob is named by the LFS sha256 or the git blob sha1."""
    if not path.is_symlink():
        return None
    name = Path(os.readlink(path)).name
    if _SHA256.match(name):
        return "sha256", name
    if COMMIT.match(name):
        return "sha1", name
    return None


def verify_folder(folder: Path, source: Any = None) -> list[str]:
    """Check every file of a snapshot or `--to` folder against its recorded hash; raise on the first mismatch.
    Returns the files checked (relative paths). `source` (a `HubSource`) names the weights in the error."""
    listed = None
    prov = folder / PROVENANCE_FILE
    if prov.is_file():
        listed = json.loads(prov.read_text()).get("sha256") or {}
    checked = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != PROVENANCE_FILE):
        rel = path.relative_to(folder).as_posix()
        if listed is not None:
            expected = ("sha256", listed[rel]) if rel in listed else None
        else:
            expected = _expected_digest(path)
        if expected is None:
            continue
        if not _matches(path, *expected):
            origin = f" of {source.pinned}" if source is not None else ""
            raise CheckpointError(
                f"{path}: {expected[0]} mismatch{origin} (expected {expected[1]}): the file is corrupt or was "
                "replaced; delete it and download it again"
            )
        checked.append(rel)
    if listed is not None:
        missing = sorted(set(listed) - set(checked))
        if missing:
            raise CheckpointError(f"{folder}: files listed in {PROVENANCE_FILE} are missing: {', '.join(missing)}")
    return checked
