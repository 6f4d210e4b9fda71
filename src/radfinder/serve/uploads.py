"""Uploaded scans: size/type checks, safe unpacking of zipped DICOM, decoding into a `Volume` held in memory.

Nothing is written to the library: the upload goes to a private temporary folder that is deleted as soon as the
volume is read (also when reading fails). Zip members are never extracted under their own names (no path from
the archive reaches the file system), their number and total size are capped, and only regular files are read.
"""

from __future__ import annotations

import gzip
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import RadfinderError
from ..io import load_volume
from ..io.volume import Volume

ZIP_MAX_MEMBERS = 4000
ZIP_RATIO = 8  # total uncompressed size may be at most this many times the upload limit


class UploadError(RadfinderError):
    """An upload the server refuses; the message is shown to the user as is."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 512 * 1024 * 1024
    max_members: int = ZIP_MAX_MEMBERS  # files in a zipped series
    unpack_ratio: int = ZIP_RATIO  # a zip may unpack to at most this many times max_bytes


def upload_kind(filename: str, head: bytes) -> str:
    """"nifti", "nifti-gz" or "zip" from the name AND the first bytes; anything else is refused."""
    name = (filename or "").lower()
    if name.endswith(".nii.gz"):
        if head[:2] != b"\x1f\x8b":
            raise UploadError(f"{filename}: named .nii.gz but not gzip data")
        return "nifti-gz"
    if name.endswith(".nii"):
        if len(head) < 348 or int.from_bytes(head[:4], "little") not in (348, 540) and int.from_bytes(
            head[:4], "big"
        ) not in (348, 540):
            raise UploadError(f"{filename}: named .nii but has no NIfTI header")
        return "nifti"
    if name.endswith(".zip"):
        if head[:4] != b"PK\x03\x04":
            raise UploadError(f"{filename}: named .zip but not a zip archive")
        return "zip"
    raise UploadError(f"{filename or 'upload'}: unsupported file type; upload a NIfTI (.nii, .nii.gz) or a zipped "
                      "DICOM series (.zip)", status=415)  # fmt: skip


def _unzip(path: Path, dest: Path, limits: UploadLimits) -> Path:
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if not members:
                raise UploadError("the zip archive is empty")
            if len(members) > limits.max_members:
                raise UploadError(f"the zip archive holds {len(members)} files; at most {limits.max_members} allowed")
            cap = limits.unpack_ratio * limits.max_bytes
            total = sum(m.file_size for m in members)
            if total > cap:
                raise UploadError("the zip archive unpacks to more than the upload limit allows", status=413)
            out = dest / "series"
            out.mkdir()
            written = 0
            for n, m in enumerate(members):
                if (m.external_attr >> 16) & 0o170000 == 0o120000:  # symbolic link
                    continue
                with zf.open(m) as src, (out / f"{n:05d}.dcm").open("wb") as dst:
                    while block := src.read(1 << 20):
                        written += len(block)
                        if written > cap:
                            raise UploadError("the zip archive unpacks to more than the upload limit allows", 413)
                        dst.write(block)
            return out
    except zipfile.BadZipFile as exc:
        raise UploadError(f"not a readable zip archive ({exc})") from exc


def read_upload(filename: str, path: Path, limits: UploadLimits) -> Volume:
    """Decode the uploaded file at `path` (inside a temporary folder) into a `Volume`."""
    with path.open("rb") as fh:
        head = fh.read(352)
    kind = upload_kind(filename, head)
    if kind == "nifti-gz":
        try:
            with gzip.open(path, "rb") as fh:
                inner = fh.read(352)
        except (OSError, EOFError) as exc:
            raise UploadError(f"{filename}: damaged gzip data ({exc})") from exc
        upload_kind(filename[:-3], inner)
    with tempfile.TemporaryDirectory(prefix="radfinder-upload-") as tmp:
        src = path
        if kind == "zip":
            src = _unzip(path, Path(tmp), limits)
        elif path.suffix == "" or not path.name.lower().endswith((".nii", ".nii.gz")):
            src = Path(tmp) / ("scan.nii.gz" if kind == "nifti-gz" else "scan.nii")
            src.symlink_to(path.resolve())
        try:
            return load_volume(src)
        except RadfinderError as exc:
            raise UploadError(f"{filename}: {exc}".replace(str(src), "upload")) from exc
        except Exception as exc:  # a malformed file must answer with a message, not a server error
            raise UploadError(f"{filename}: cannot read the scan ({type(exc).__name__}: {exc})") from exc
