"""Finding the volumes of a dataset, reading one, and splitting the list into shards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, VolumeReadError
from ..io.volume import Volume

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class Source:
    """One volume to preprocess. `name` is its path relative to the input it was found under (prefixed with that
    input's folder name): it orders the dataset and decides the shard, so it must not depend on mount points."""

    path: Path
    name: str


def is_volume_file(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def is_dicom_file(path: Path) -> bool:
    if path.name.lower().endswith(".dcm"):
        return True
    if path.suffix:
        return False
    try:  # DICOM part 10 files without an extension: "DICM" after the 128-byte preamble
        with open(path, "rb") as fh:
            head = fh.read(132)
        return head[128:132] == b"DICM"
    except OSError:
        return False


def _subtree_kind(folder: Path) -> str:
    """ "volumes" if any NIfTI/NRRD/MHA lies below, else "dicom" if any DICOM file does, else "empty"."""
    has_dicom = False
    for p in folder.rglob("*"):
        if p.is_file():
            if is_volume_file(p):
                return "volumes"
            if not has_dicom and is_dicom_file(p):
                has_dicom = True
    return "dicom" if has_dicom else "empty"


def _discover_dir(folder: Path, root: Path, prefix: str) -> list[Source]:
    entries = sorted(folder.iterdir())
    files = [p for p in entries if p.is_file()]
    if any(is_dicom_file(p) for p in files) and not any(is_volume_file(p) for p in files):
        rel = folder.relative_to(root).as_posix()
        return [Source(folder, prefix if rel == "." else f"{prefix}/{rel}")]
    out = [Source(p, f"{prefix}/{p.relative_to(root)}") for p in files if is_volume_file(p)]
    for sub in (p for p in entries if p.is_dir()):
        kind = _subtree_kind(sub)
        if kind == "dicom":  # a study folder (possibly with series subfolders) is one source
            out.append(Source(sub, f"{prefix}/{sub.relative_to(root)}"))
        elif kind == "volumes":
            out.extend(_discover_dir(sub, root, prefix))
    return out


def discover_sources(inputs: list[str | Path]) -> list[Source]:
    """Files, folders of NIfTI/NRRD/MHA files (searched recursively), DICOM series/study folders, or folders of
    DICOM study folders. Sorted by name, duplicates removed."""
    found: dict[Path, Source] = {}
    for item in inputs:
        path = Path(item)
        if path.is_file():
            srcs = [Source(path, path.name)]
        elif path.is_dir():
            srcs = _discover_dir(path, path, path.resolve().name)
        else:
            raise VolumeReadError(path, "input not found")
        for s in srcs:
            found.setdefault(s.path.resolve(), s)
    return sorted(found.values(), key=lambda s: (s.name, str(s.path)))


def read_list_file(path: str | Path) -> list[Path]:
    """One input path per line; blank lines and # comments ignored; relative paths are relative to the list."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"list file not found: {path}")
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            p = Path(line)
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """ "i/n" with 0 <= i < n -> (i, n)."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text}: need 0 <= i < n")
    return i, n


def shard_of(sources: list[Source], shard: tuple[int, int] | None) -> list[Source]:
    """Round-robin over the name-sorted list: shards are disjoint, cover everything and differ in size by at most
    one, provided every machine is given the same inputs."""
    if shard is None:
        return list(sources)
    i, n = shard
    ordered = sorted(sources, key=lambda s: (s.name, str(s.path)))
    return ordered[i::n]


def load_source(path: str | Path, series: str | None = None) -> Volume:
    """Read one source with `radfinder.io.load_volume` (orientation from the header, HU int16 when exact)."""
    from ..io import load_volume

    return load_volume(path, series=series)
