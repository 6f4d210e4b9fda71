"""Readers for single-file volume formats: NIfTI, NRRD and Rad-ChestCT style NPZ. Each returns a `Volume`
whose affine maps voxel index -> RAS+ mm (see `volume.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import VolumeReadError
from .gzip_stream import open_gzip, read_into
from .volume import Volume

_INT16 = np.iinfo(np.int16)
# deflate cannot expand its input more than about 1032-fold: a .nii.gz claiming more voxel bytes lies about its size
_MAX_DEFLATE_RATIO = 1032

# NRRD anatomical spaces -> sign flips taking that space's axes to RAS.
_NRRD_SPACES = {
    "right-anterior-superior": (1, 1, 1),
    "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1),
    "las": (-1, 1, 1),
    "left-posterior-superior": (-1, -1, 1),
    "lps": (-1, -1, 1),
    "scanner-xyz": None,
    "3d-right-handed": None,
    "3d-left-handed": None,
}

# Rad-ChestCT NPZ: axis 0 runs toward Inferior, axis 1 toward Posterior, axis 2 toward patient Left ("IPL").
NPZ_SPACING_MM = 0.8
NPZ_DIRECTIONS_RAS = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]]).T  # columns: axes 0, 1, 2


def as_hu_array(data: np.ndarray, path: Path) -> np.ndarray:
    """int16 when every value is an integer within int16 range, float32 otherwise (the `Volume` rule)."""
    if data.dtype.kind == "b" or data.dtype.kind in "cOSUV" or data.dtype.fields is not None:
        raise VolumeReadError(path, f"voxel type {data.dtype} is not a scalar intensity (RGB, complex or text?)")
    if data.dtype == np.int16:
        return data
    if data.size == 0:
        raise VolumeReadError(path, f"volume is empty (shape {data.shape})")
    if data.dtype.kind in "iu":
        lo, hi = data.min(), data.max()
        return data.astype(np.int16) if lo >= _INT16.min and hi <= _INT16.max else data.astype(np.float32)
    finite = np.isfinite(data)
    if finite.all():
        lo, hi = data.min(), data.max()
        if lo >= _INT16.min and hi <= _INT16.max and np.array_equal(data, np.round(data)):
            return data.astype(np.int16)
    return data.astype(np.float32)


def _squeeze_to_3d(data: np.ndarray, path: Path, what: str) -> np.ndarray:
    if data.ndim == 2:
        return data[:, :, None]
    if data.ndim > 3:
        extra = data.shape[3:]
        if any(s != 1 for s in extra):
            raise VolumeReadError(path, f"{what} is {data.ndim}D with shape {data.shape} (4D / multi-volume data); "
                                        "only 3D volumes are read")  # fmt: skip
        data = data.reshape(data.shape[:3])
    if data.ndim != 3:
        raise VolumeReadError(path, f"{what} has {data.ndim} dimensions (shape {data.shape}); a 3D volume is needed")
    return data


def load_nifti(path: str | Path) -> Volume:
    """NIfTI-1/2 (.nii, .nii.gz) through nibabel: the affine is nibabel's choice of sform/qform, voxel values have
    scl_slope/scl_inter applied (and stay int16 when the result is exact integers)."""
    import nibabel as nib

    path = Path(path)
    _check_nifti_file(path)
    try:
        nib_log = nib.imageglobals.logger  # nibabel prints header repairs to stderr; a bad header raises here instead
        was_disabled, nib_log.disabled = nib_log.disabled, True
        try:
            img = nib.load(str(path))
        finally:
            nib_log.disabled = was_disabled
        hdr = img.header
        raw = _read_nifti_unscaled(img, path)
        slope, inter = img.dataobj.slope, img.dataobj.inter
    except VolumeReadError:
        raise
    except EOFError as exc:
        raise VolumeReadError(
            path, "truncated NIfTI: the gzip stream ends before its end marker (an interrupted download or copy?)"
        ) from exc
    except Exception as exc:
        raise VolumeReadError(path, f"cannot read NIfTI ({type(exc).__name__}: {exc})") from exc
    raw = _squeeze_to_3d(raw, path, "NIfTI image")
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    if (slope, inter) == (1.0, 0.0):
        data = raw
    elif raw.dtype.kind in "iu" and slope.is_integer() and inter.is_integer():
        data = _scale_integer(raw, int(slope), int(inter))  # exact: keeps integer HU integer
    else:
        data = raw.astype(np.float64) * slope + inter
    sform_code, qform_code = int(hdr["sform_code"]), int(hdr["qform_code"])
    meta = {
        "source": str(path),
        "format": "nifti",
        "sform_code": sform_code,
        "qform_code": qform_code,
        "scl_slope": slope,
        "scl_inter": inter,
    }
    if sform_code == 0 and qform_code == 0:
        meta["warning"] = "no sform/qform: affine is nibabel's fallback (voxel sizes only, orientation unknown)"
    return Volume(as_hu_array(data, path), img.affine, meta)


def _check_nifti_file(path: Path) -> None:
    """Refuse an empty file, and a .gz that is not gzip, with a message that says so (not nibabel's)."""
    size = path.stat().st_size
    if size == 0:
        raise VolumeReadError(path, "empty file (0 bytes)")
    if str(path).lower().endswith(".gz"):
        with path.open("rb") as fh:
            head = fh.read(8)
        if head[:2] != b"\x1f\x8b":
            raise VolumeReadError(
                path, f"not a gzip-compressed NIfTI although the name ends in .gz (the file starts with {head!r})"
            )


def _check_claimed_size(img, path: Path, dtype: np.dtype) -> None:
    """Refuse a header whose voxel count cannot fit in the file, before any array of that size is allocated."""
    shape = tuple(int(n) for n in img.dataobj.shape)
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize + int(img.dataobj.offset)
    size = path.stat().st_size
    compressed = str(path).lower().endswith(".gz")
    room = size * _MAX_DEFLATE_RATIO if compressed else size
    if need > room:
        held = f"{_size(size)} compressed (at most {_size(room)} decompressed)" if compressed else _size(size)
        raise VolumeReadError(
            path, f"header claims {' x '.join(map(str, shape))} {dtype.name} voxels ({_size(need)}) but the file "
            f"holds {held}: a damaged or truncated file; refused before reading"
        )


def _size(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _read_nifti_unscaled(img, path: Path) -> np.ndarray:
    """Stored voxel values. A .nii.gz is streamed straight into the final array (through the fastest gzip decoder
    installed, see `gzip_stream`): nibabel would first build the whole decompressed file as bytes and then copy it,
    doubling peak memory on CT-sized volumes."""
    dtype = np.dtype(img.header.get_data_dtype())
    _check_claimed_size(img, path, dtype)
    if not str(path).lower().endswith(".gz"):
        return np.asarray(img.dataobj.get_unscaled())
    proxy = img.dataobj
    out = np.empty(proxy.shape, dtype=dtype, order="F" if proxy.order == "F" else "C")
    with open_gzip(path) as fh:
        _skip(fh, int(proxy.offset), path, "NIfTI")
        read_into(fh, memoryview(out.reshape(-1, order="A")).cast("B"), path, "NIfTI")
    if not dtype.isnative:
        out = out.byteswap().view(dtype.newbyteorder("="))
    return out


def _skip(fh, n: int, path: Path, what: str) -> None:
    if n and len(fh.read(n)) != n:
        raise VolumeReadError(path, f"cannot read {what}: the gzip stream ends inside the header (truncated file)")


def _scale_integer(raw: np.ndarray, slope: int, inter: int) -> np.ndarray:
    """slope * raw + inter for integer voxels, slab by slab so no full int64 copy is ever held."""
    lo = int(raw.min()) * slope + inter
    hi = int(raw.max()) * slope + inter
    lo, hi = min(lo, hi), max(lo, hi)
    target = np.int16 if lo >= _INT16.min and hi <= _INT16.max else np.float32
    # The usual CT case (int16 stored, integer intercept) is rescaled in place: no second full-size array.
    out = raw if raw.dtype == target and raw.flags.writeable else np.empty(
        raw.shape, dtype=target, order="F" if raw.flags.f_contiguous else "C"
    )
    step = max(1, raw.shape[-1] // 16)
    for k in range(0, raw.shape[-1], step):
        out[..., k : k + step] = raw[..., k : k + step].astype(np.int64) * slope + inter
    return out


def load_nrrd(path: str | Path) -> Volume:
    """NRRD (.nrrd, or .nhdr with detached data) through pynrrd. Geometry from `space`, `space directions`
    and `space origin`; the space (e.g. left-posterior-superior) is converted to RAS."""
    path = Path(path)
    try:
        data, header = _read_nrrd(path)
    except VolumeReadError:
        raise
    except Exception as exc:
        raise VolumeReadError(path, f"cannot read NRRD ({type(exc).__name__}: {exc})") from exc
    space = str(header.get("space", "")).strip().lower()
    if not space:
        raise VolumeReadError(path, "NRRD header has no 'space' field, so the anatomical orientation is unknown")
    if space not in _NRRD_SPACES:
        raise VolumeReadError(path, f"unsupported NRRD space {space!r}")
    flips = _NRRD_SPACES[space]
    if flips is None:
        raise VolumeReadError(path, f"NRRD space {space!r} is not anatomical; patient orientation is unknown")
    directions = header.get("space directions")
    if directions is None:
        raise VolumeReadError(path, "NRRD header has no 'space directions'")
    dirs = np.array([np.full(3, np.nan) if d is None else np.asarray(d, dtype=float) for d in directions])
    spatial = [k for k in range(len(dirs)) if np.all(np.isfinite(dirs[k]))]
    if len(spatial) != 3 or dirs.shape[1] != 3:
        raise VolumeReadError(path, f"NRRD has {len(spatial)} spatial axes ({dirs.shape[1]}D space); need 3")
    other = [k for k in range(data.ndim) if k not in spatial]
    if any(data.shape[k] != 1 for k in other):
        raise VolumeReadError(
            path, f"NRRD is {data.ndim}D with shape {data.shape} (non-spatial axes {other}: 4D / multi-component); "
            "only 3D volumes are read",
        )  # fmt: skip
    data = np.transpose(data, spatial + other).reshape([data.shape[k] for k in spatial])
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=float)
    if origin.shape != (3,) or not np.all(np.isfinite(origin)):
        origin = np.zeros(3)
    flip = np.array(flips, dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = flip[:, None] * dirs[spatial].T
    affine[:3, 3] = flip * origin
    return Volume(as_hu_array(data, path), affine, {"source": str(path), "format": "nrrd", "space": space})


# NRRD sample types (the spellings the NRRD format defines) -> numpy, for the gzip fast path.
_NRRD_TYPES = {
    **dict.fromkeys(("signed char", "int8", "int8_t"), "i1"),
    **dict.fromkeys(("uchar", "unsigned char", "uint8", "uint8_t"), "u1"),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t"), "i2"),
    **dict.fromkeys(("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), "u2"),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t"), "i4"),
    **dict.fromkeys(("uint", "unsigned int", "uint32", "uint32_t"), "u4"),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int",
                     "int64", "int64_t"), "i8"),  # fmt: skip
    **dict.fromkeys(("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"), "u8"),
    "float": "f4",
    "double": "f8",
}


def _read_nrrd(path: Path) -> tuple[np.ndarray, dict]:
    """(data in index order F, header). Gzip-encoded data attached to its header is decompressed straight into the
    final array by `gzip_stream` (pynrrd holds the compressed and the decompressed bytes at once, through zlib);
    every other layout (raw, ASCII, bzip2, detached data, line/byte skips) goes through pynrrd."""
    import nrrd

    with open(path, "rb") as fh:
        header = nrrd.read_header(fh)
        kind = _NRRD_TYPES.get(str(header.get("type", "")).strip().lower())
        fast = (
            str(header.get("encoding", "")).lower() in ("gzip", "gz")
            and kind is not None
            and header.get("endian", "little") in ("little", "big")
            and not any(k in header for k in ("datafile", "data file", "lineskip", "line skip"))
            and int(header.get("byteskip", header.get("byte skip", 0))) >= 0
            and int(header.get("dimension", -1)) == len(header.get("sizes", ()))
        )
        if not fast:
            fh.seek(0)
            return nrrd.read(str(path), index_order="F")
        dtype = np.dtype(kind).newbyteorder("<" if header.get("endian", "little") == "little" else ">")
        sizes = tuple(int(n) for n in header["sizes"])
        out = np.empty(sizes[::-1], dtype=dtype)  # C order over reversed sizes = NRRD's fastest-first layout
        with open_gzip(fh) as gz:
            _skip(gz, int(header.get("byteskip", header.get("byte skip", 0))), path, "NRRD")
            read_into(gz, memoryview(out.reshape(-1)).cast("B"), path, "NRRD")
    if not dtype.isnative:
        out = out.byteswap().view(dtype.newbyteorder("="))
    return out.T, header


def npz_affine(shape: Sequence[int], spacing: Sequence[float] | None = None) -> np.ndarray:
    """The affine given to a Rad-ChestCT NPZ volume of `shape` (Z, Y, X).

    Axes: 0 -> Inferior, 1 -> Posterior, 2 -> patient Left ("IPL"), each `spacing` mm (default 0.8 isotropic).
    The files carry no position, so the origin is chosen to put the volume centre at world (0, 0, 0).
    """
    sp = np.full(3, NPZ_SPACING_MM) if spacing is None else np.asarray(spacing, dtype=float)
    if sp.shape != (3,) or np.any(sp <= 0):
        raise ValueError(f"spacing must be 3 positive numbers, got {spacing!r}")
    affine = np.eye(4)
    affine[:3, :3] = NPZ_DIRECTIONS_RAS * sp
    centre = (np.asarray(shape, dtype=float) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def load_npz(
    path: str | Path,
    *,
    key: str = "ct",
    affine: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
) -> Volume:
    """Rad-ChestCT style NPZ: HU array under `key`, shape (Z, Y, X), kept as stored; affine from `npz_affine`
    unless `affine` (4x4, voxel -> RAS mm) is given."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if key not in npz.files:
                raise VolumeReadError(
                    path, f"no array {key!r} in NPZ (arrays present: {', '.join(npz.files) or 'none'})"
                )
            data = npz[key]
    except VolumeReadError:
        raise
    except Exception as exc:
        raise VolumeReadError(path, f"cannot read NPZ ({type(exc).__name__}: {exc})") from exc
    data = _squeeze_to_3d(data, path, f"NPZ array {key!r}")
    if affine is not None:
        aff = np.asarray(affine, dtype=float)
        if aff.shape != (4, 4):
            raise VolumeReadError(path, f"affine must be 4x4, got {aff.shape}")
    else:
        aff = npz_affine(data.shape, spacing)
    if affine is not None:
        origin = "caller"
    else:
        origin = f"Rad-ChestCT convention (IPL, {'given spacing' if spacing is not None else '0.8 mm'}, centred)"
    meta = {"source": str(path), "format": "npz", "npz_key": key, "affine_from": origin}
    return Volume(as_hu_array(data, path), aff, meta)
