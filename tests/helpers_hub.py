"""A Hugging Face hub cache built by hand, laid out as huggingface_hub writes it, for tests without network:

    <cache>/models--ORG--NAME/blobs/<blob id>                  file contents, named by their hash
    <cache>/models--ORG--NAME/snapshots/<commit>/<path>        relative symlinks into blobs/
    <cache>/models--ORG--NAME/refs/<branch>                    the commit the branch points at

Large-file (LFS) blobs are named by the sha256 of their contents, regular git files by their git blob sha1.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".pt")


def blob_id(data: bytes, lfs: bool) -> str:
    if lfs:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_snapshot(cache: Path, repo_id: str, files: Path, ref: str | None = "main", commit: str | None = None) -> str:
    """Put every file under `files` into the cache as one commit of `repo_id`; `ref` then points at it."""
    storage = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    paths = sorted(p for p in Path(files).rglob("*") if p.is_file())
    if commit is None:
        h = hashlib.sha1(repo_id.encode())
        for p in paths:
            h.update(p.relative_to(files).as_posix().encode() + p.read_bytes())
        commit = h.hexdigest()
    snap = storage / "snapshots" / commit
    for p in paths:
        data = p.read_bytes()
        blob = storage / "blobs" / blob_id(data, p.suffix in LFS_SUFFIXES)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snap / p.relative_to(files)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    if ref is not None:
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    return commit


def blob_of(cache: Path, repo_id: str, commit: str, name: str) -> Path:
    """The blob file a snapshot entry points at (to damage it in a test)."""
    link = Path(cache) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit / name
    return link.resolve()
