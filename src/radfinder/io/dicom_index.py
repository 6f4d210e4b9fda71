"""Per-instance DICOM headers: where every image sits in patient space, without decoding any pixels.

`index_dicom_study(folder)` reads the headers of every DICOM file under a folder (recursively) and answers
"series 4, image 38" style questions through `StudyIndex.lookup`. The same header records drive series
selection and stacking in `dicom_read`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import VolumeReadError

# Only these tags are parsed when indexing: it keeps a 300-file series at header-read speed.
_HEADER_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "InstanceNumber",
    "SeriesDescription", "Modality", "ImageType", "Rows", "Columns", "PixelSpacing", "ImagePositionPatient",
    "ImageOrientationPatient", "SliceThickness", "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept",
    "NumberOfFrames", "AcquisitionNumber", "TemporalPositionIdentifier", "BitsAllocated", "SamplesPerPixel",
]  # fmt: skip
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_FLIP = np.array([-1.0, -1.0, 1.0])  # LPS <-> RAS


@dataclass(frozen=True)
class InstanceGeometry:
    """One DICOM image: identity, file and placement in RAS+ millimetres.

    pixel_spacing is (row spacing, column spacing) as in DICOM PixelSpacing: the distance between rows, then
    between columns. row_cosines is the RAS direction in which the column index grows along a row (the first
    ImageOrientationPatient triplet, converted from LPS); col_cosines the direction in which the row index grows.
    position is the centre of the first transmitted pixel (ImagePositionPatient) in RAS. Geometry fields are
    None for images without a patient-space position (e.g. CR, secondary captures).
    """

    series_number: int | None
    instance_number: int | None
    sop_instance_uid: str
    series_instance_uid: str
    path: Path
    rows: int | None
    columns: int | None
    pixel_spacing: tuple[float, float] | None
    position: tuple[float, float, float] | None
    row_cosines: tuple[float, float, float] | None
    col_cosines: tuple[float, float, float] | None
    slice_thickness: float | None
    study_instance_uid: str = ""
    series_description: str = ""
    modality: str = ""
    image_type: tuple[str, ...] = ()
    number_of_frames: int = 1
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    acquisition_number: int | None = None
    temporal_position: int | None = None
    spacing_between_slices: float | None = None

    @property
    def has_geometry(self) -> bool:
        return None not in (self.position, self.row_cosines, self.col_cosines, self.pixel_spacing)

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal (RAS), row_cosines x col_cosines. The LPS<->RAS flip has determinant +1, so this is
        the DICOM (LPS) normal mapped to RAS."""
        self._need_geometry()
        n = np.cross(self.row_cosines, self.col_cosines)
        return n / np.linalg.norm(n)

    def plane_affine(self) -> np.ndarray:
        """4x4 mapping (column, row, n, 1) to RAS mm, where n is millimetres along the slice normal.

        So ``plane_affine() @ (c, r, 0, 1)`` is the centre of pixel (row r, column c) of this image, and a world
        point maps back with the inverse (its third coordinate is the distance from the image plane).
        """
        self._need_geometry()
        row_sp, col_sp = self.pixel_spacing
        aff = np.eye(4)
        aff[:3, 0] = np.array(self.row_cosines) * col_sp
        aff[:3, 1] = np.array(self.col_cosines) * row_sp
        aff[:3, 2] = self.normal
        aff[:3, 3] = self.position
        return aff

    def describe(self) -> str:
        return f"series {self.series_number}, image {self.instance_number} ({self.path.name})"

    def _need_geometry(self) -> None:
        if not self.has_geometry:
            raise ValueError(f"{self.path}: no ImagePositionPatient/ImageOrientationPatient/PixelSpacing")


def _floats(value, n: int, path: Path, name: str) -> tuple[float, ...] | None:
    if value is None or value == "":
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise VolumeReadError(path, f"{name} is not numeric: {value!r}") from exc
    if len(out) != n:
        raise VolumeReadError(path, f"{name} has {len(out)} values, expected {n}: {value!r}")
    return out


def _int(value) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _float(value, default: float | None) -> float | None:
    try:
        return default if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return default


def is_dicom_file(path: Path) -> bool:
    """Whether `path` starts like a DICOM Part 10 file (128-byte preamble then 'DICM')."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_header(path: str | Path, *, force: bool = False) -> InstanceGeometry | None:
    """Header record of one DICOM file, or None for a DICOM file that is not an image (DICOMDIR, SR, ...).

    force: parse even without the 'DICM' preamble (used for a single file the caller named explicitly).
    Raises VolumeReadError naming the file when it cannot be parsed or its geometry tags are malformed.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS, force=force)
    except InvalidDicomError as exc:
        raise VolumeReadError(path, f"not a DICOM file ({exc})") from exc
    except Exception as exc:  # pydicom raises many types on damaged headers; all mean the same to a caller
        raise VolumeReadError(path, f"cannot parse DICOM header ({type(exc).__name__}: {exc})") from exc
    sop_class = str(ds.get("SOPClassUID", getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")))
    if not sop_class and "SOPInstanceUID" not in ds:
        # pydicom reads a wrecked header as an (almost) empty dataset, with a warning; treat it as damage rather
        # than as "not an image", or a series would silently lose a slice.
        raise VolumeReadError(path, "damaged DICOM header: neither SOPClassUID nor SOPInstanceUID could be read")
    if sop_class == _DICOMDIR_CLASS or "Rows" not in ds:
        return None
    spacing = _floats(ds.get("PixelSpacing"), 2, path, "PixelSpacing")
    pos = _floats(ds.get("ImagePositionPatient"), 3, path, "ImagePositionPatient")
    iop = _floats(ds.get("ImageOrientationPatient"), 6, path, "ImageOrientationPatient")
    row = col = None
    if iop is not None:
        r, c = np.array(iop[:3]), np.array(iop[3:])
        nr, nc = np.linalg.norm(r), np.linalg.norm(c)
        if nr < 0.5 or nc < 0.5 or abs(r @ c) > 1e-3 * nr * nc:
            raise VolumeReadError(path, f"ImageOrientationPatient is not two orthogonal directions: {list(iop)}")
        row = tuple(float(v) for v in r / np.linalg.norm(r) * _FLIP)
        col = tuple(float(v) for v in c / np.linalg.norm(c) * _FLIP)
    image_type = ds.get("ImageType") or ()
    image_type = (image_type,) if isinstance(image_type, str) else tuple(str(v) for v in image_type)
    return InstanceGeometry(
        series_number=_int(ds.get("SeriesNumber")),
        instance_number=_int(ds.get("InstanceNumber")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        path=path,
        rows=_int(ds.get("Rows")),
        columns=_int(ds.get("Columns")),
        pixel_spacing=spacing,
        position=None if pos is None else tuple(float(v) for v in np.array(pos) * _FLIP),
        row_cosines=row,
        col_cosines=col,
        slice_thickness=_float(ds.get("SliceThickness"), None),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_description=str(ds.get("SeriesDescription", "") or ""),
        modality=str(ds.get("Modality", "") or ""),
        image_type=image_type,
        number_of_frames=_int(ds.get("NumberOfFrames")) or 1,
        rescale_slope=_float(ds.get("RescaleSlope"), 1.0),
        rescale_intercept=_float(ds.get("RescaleIntercept"), 0.0),
        acquisition_number=_int(ds.get("AcquisitionNumber")),
        temporal_position=_int(ds.get("TemporalPositionIdentifier")),
        spacing_between_slices=_float(ds.get("SpacingBetweenSlices"), None),
    )


def _walk(folder: Path, recursive: bool) -> Iterator[Path]:
    if not recursive:
        yield from sorted(p for p in folder.iterdir() if p.is_file())
        return
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def scan_headers(folder: str | Path, *, recursive: bool = True) -> list[InstanceGeometry]:
    """Header records of every DICOM image file under `folder`.

    Files without the DICOM preamble (READMEs, JSON sidecars, preamble-less DICOM) and non-image DICOM files
    (DICOMDIR) are skipped; a file that has the preamble but cannot be parsed is an error, since silently
    dropping it would leave a hole in a series.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VolumeReadError(folder, "not a folder")
    files = [p for p in _walk(folder, recursive) if is_dicom_file(p)]
    with ThreadPoolExecutor(_workers()) as pool:
        records = list(pool.map(read_header, files))
    return [r for r in records if r is not None]


@dataclass
class SeriesInfo:
    """All instances sharing one SeriesInstanceUID."""

    uid: str
    instances: list[InstanceGeometry]

    @property
    def number(self) -> int | None:
        nums = {i.series_number for i in self.instances}
        return nums.pop() if len(nums) == 1 else None

    @property
    def description(self) -> str:
        return self.instances[0].series_description

    @property
    def modality(self) -> str:
        return self.instances[0].modality

    @property
    def folder(self) -> Path:
        return Path(os.path.commonpath([str(i.path.parent) for i in self.instances]))

    def summary(self) -> dict:
        thick = {i.slice_thickness for i in self.instances if i.slice_thickness is not None}
        return {
            "number": self.number,
            "uid": self.uid,
            "description": self.description,
            "modality": self.modality,
            "n_instances": len(self.instances),
            "slice_thickness": thick.pop() if len(thick) == 1 else (sorted(thick) or None),
            "folder": str(self.folder),
        }

    def label(self) -> str:
        num = "no number" if self.number is None else f"number {self.number}"
        desc = f" {self.description!r}" if self.description else ""
        return f"series {num}{desc} ({self.modality or '?'}, {len(self.instances)} images, uid {self.uid})"


def group_series(instances: Iterable[InstanceGeometry]) -> list[SeriesInfo]:
    """Group by SeriesInstanceUID; ordered by series number (missing last), then UID, for stable listings."""
    groups: dict[str, list[InstanceGeometry]] = {}
    for inst in instances:
        groups.setdefault(inst.series_instance_uid, []).append(inst)
    series = [SeriesInfo(uid, insts) for uid, insts in groups.items()]
    series.sort(key=lambda s: (s.number is None, s.number if s.number is not None else 0, s.uid))
    return series


@dataclass
class StudyIndex:
    """Headers of every image under a study folder, for placing references like "series 4, image 38"."""

    root: Path
    instances: list[InstanceGeometry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_key: dict[tuple[int | None, int | None], list[InstanceGeometry]] = {}
        for inst in self.instances:
            self._by_key.setdefault((inst.series_number, inst.instance_number), []).append(inst)

    def series_numbers(self) -> list[int]:
        """Distinct SeriesNumbers present (series without one are left out), ascending."""
        return sorted({i.series_number for i in self.instances if i.series_number is not None})

    def series(self) -> list[SeriesInfo]:
        return group_series(self.instances)

    def lookup_all(self, series_number: int, instance_number: int) -> list[InstanceGeometry]:
        return list(self._by_key.get((int(series_number), int(instance_number)), []))

    def lookup(self, series_number: int, instance_number: int) -> InstanceGeometry:
        """The image with this SeriesNumber and InstanceNumber.

        KeyError when there is none (the message lists the series and instance range available) or when two
        different images match (two series sharing a number: use `lookup_all` and choose).
        """
        found = self.lookup_all(series_number, instance_number)
        if len(found) == 1:
            return found[0]
        if not found:
            have = [i.instance_number for i in self.instances if i.series_number == series_number]
            have = sorted(n for n in have if n is not None)
            where = (
                f"series {series_number} has images {have[0]}..{have[-1]}"
                if have
                else (f"no series {series_number}; series present: {self.series_numbers()}")
            )
            raise KeyError(f"{self.root}: no image {instance_number} in series {series_number} ({where})")
        files = ", ".join(str(i.path) for i in found)
        raise KeyError(f"{self.root}: series {series_number} image {instance_number} is ambiguous: {files}")


def index_dicom_study(folder: str | Path) -> StudyIndex:
    """Read the headers (no pixels) of all DICOM images under `folder`, recursively, into a `StudyIndex`.

    Raises VolumeReadError when the folder holds no DICOM image or a DICOM file is damaged.
    """
    folder = Path(folder)
    instances = scan_headers(folder, recursive=True)
    if not instances:
        raise VolumeReadError(folder, "no DICOM images found (looked recursively for files with a DICM header)")
    return StudyIndex(folder, instances)
