""".nii.gz and gzip NRRD through the fast decoder (isal) and the standard-library fallback: identical arrays,
identical errors on truncated and corrupt files. The fallback is forced by removing the fast decoder."""

from __future__ import annotations

import gzip
import zlib

import nibabel as nib
import numpy as np
import pytest

from radfinder.errors import VolumeReadError
from radfinder.io import gzip_stream, load_volume

BACKENDS = ["isal", "zlib"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    if request.param == "zlib":
        monkeypatch.setattr(gzip_stream, "_igzip", None)
    elif gzip_stream._igzip is None:
        pytest.skip("isal not installed")
    assert gzip_stream.backend() == request.param
    return request.param


def _ct(shape=(37, 29, 23), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 3072, shape).astype(np.int16)


def _nifti(path, arr, *, big_endian=False, slope=(1.0, 0.0)):
    img = nib.Nifti1Image(arr, np.diag([-0.7, -0.7, 1.5, 1.0]))
    img.header.set_data_dtype(arr.dtype.newbyteorder(">") if big_endian else arr.dtype)
    img.header.set_slope_inter(*slope)
    if big_endian:
        hdr = img.header.as_byteswapped(">")
        img = nib.Nifti1Image(arr, img.affine, hdr)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.int32])
def test_nifti_gz_equals_nibabel(tmp_path, backend, dtype):
    arr = _ct().astype(dtype)
    path = _nifti(tmp_path / "a.nii.gz", arr)
    vol = load_volume(path)
    ref = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float64))
    np.testing.assert_array_equal(vol.array.astype(np.float64), ref)


def test_nifti_gz_big_endian_and_scaled(tmp_path, backend):
    arr = _ct(seed=1)
    path = _nifti(tmp_path / "b.nii.gz", arr, big_endian=True)
    assert nib.load(str(path)).header.endianness == ">"
    np.testing.assert_array_equal(load_volume(path).array, arr)
    path = _nifti(tmp_path / "s.nii.gz", (arr // 2).astype(np.int16), slope=(2.0, -1024.0))
    np.testing.assert_array_equal(load_volume(path).array, nib.load(str(path)).get_fdata().astype(np.int16))


def test_both_decoders_give_identical_arrays(tmp_path, monkeypatch):
    if gzip_stream._igzip is None:
        pytest.skip("isal not installed")
    path = _nifti(tmp_path / "c.nii.gz", _ct((64, 64, 40), seed=2))
    fast = load_volume(path)
    monkeypatch.setattr(gzip_stream, "_igzip", None)
    slow = load_volume(path)
    assert fast.array.dtype == slow.array.dtype and fast.array.flags.f_contiguous == slow.array.flags.f_contiguous
    np.testing.assert_array_equal(fast.array, slow.array)
    np.testing.assert_array_equal(fast.affine, slow.affine)


def _errors(path, monkeypatch) -> list[str]:
    """The error message of each decoder on `path`."""
    out = []
    for name in BACKENDS:
        with monkeypatch.context() as m:
            if name == "zlib":
                m.setattr(gzip_stream, "_igzip", None)
            elif gzip_stream._igzip is None:
                continue
            with pytest.raises(VolumeReadError) as info:
                load_volume(path)
            assert info.value.path.name == path.name
            out.append(str(info.value))
    return out


def _damaged(tmp_path, name, fn):
    good = _nifti(tmp_path / "good.nii.gz", _ct((48, 48, 30), seed=3))
    raw = good.read_bytes()
    bad = tmp_path / name
    bad.write_bytes(fn(raw))
    return bad


def test_truncated_stream_same_error(tmp_path, monkeypatch):
    bad = _damaged(tmp_path, "t.nii.gz", lambda b: b[: len(b) * 2 // 3])
    msgs = _errors(bad, monkeypatch)
    assert all("truncated file" in m for m in msgs) and len(set(msgs)) == 1, msgs


def test_truncated_content_same_error(tmp_path, monkeypatch):
    raw = gzip.decompress(_nifti(tmp_path / "g.nii.gz", _ct(seed=4)).read_bytes())
    bad = tmp_path / "short.nii.gz"
    bad.write_bytes(gzip.compress(raw[: len(raw) // 2]))  # a complete gzip stream of half the voxels
    msgs = _errors(bad, monkeypatch)
    assert all("ends early (truncated file" in m for m in msgs) and len(set(msgs)) == 1, msgs


def test_missing_trailer_same_error(tmp_path, monkeypatch):
    bad = _damaged(tmp_path, "tr.nii.gz", lambda b: b[:-6])
    msgs = _errors(bad, monkeypatch)
    assert all("truncated" in m for m in msgs) and len(set(msgs)) == 1, msgs


def test_crc_mismatch_same_error(tmp_path, monkeypatch):
    bad = _damaged(tmp_path, "crc.nii.gz", lambda b: b[:-8] + bytes(x ^ 0x5A for x in b[-8:-4]) + b[-4:])
    msgs = _errors(bad, monkeypatch)
    assert all("CRC-32 check failed" in m for m in msgs) and len(set(msgs)) == 1, msgs


def test_corrupt_deflate_same_error(tmp_path, monkeypatch):
    def flip(b: bytes) -> bytes:
        mid = len(b) // 2
        return b[:mid] + bytes(x ^ 0xFF for x in b[mid : mid + 64]) + b[mid + 64 :]

    bad = _damaged(tmp_path, "x.nii.gz", flip)
    msgs = _errors(bad, monkeypatch)
    assert all("corrupt gzip data" in m or "truncated" in m for m in msgs), msgs
    assert len(set(msgs)) == 1, msgs


# --- NRRD -------------------------------------------------------------------------------------------------------


def _nrrd(path, arr, encoding="gzip", endian="little", **extra):
    import nrrd

    header = {"space": "left-posterior-superior", "space directions": np.diag([0.7, 0.7, 1.5]), "encoding": encoding,
              "endian": endian, **extra}  # fmt: skip
    nrrd.write(str(path), arr, header, index_order="F")
    return path


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint16])
@pytest.mark.parametrize("endian", ["little", "big"])
def test_gzip_nrrd_equals_pynrrd(tmp_path, backend, monkeypatch, dtype, endian):
    import nrrd

    arr = _ct(seed=5).astype(dtype)
    path = _nrrd(tmp_path / f"v-{endian}.nrrd", arr, endian=endian)
    ref, _ = nrrd.read(str(path), index_order="F")
    raw = _nrrd(tmp_path / "raw.nrrd", arr, encoding="raw")
    from_raw = load_volume(raw)
    with monkeypatch.context() as m:  # the gzip data must not go through pynrrd's zlib reader
        m.setattr(nrrd, "read", lambda *a, **k: pytest.fail("pynrrd used for gzip data"))
        vol = load_volume(path)
    np.testing.assert_array_equal(vol.array, from_raw.array)
    np.testing.assert_array_equal(vol.affine, from_raw.affine)
    np.testing.assert_array_equal(vol.array.astype(np.float64), np.asarray(ref, np.float64))


def test_gzip_nrrd_damaged_same_error(tmp_path, monkeypatch):
    path = _nrrd(tmp_path / "v.nrrd", _ct((40, 40, 30), seed=6))
    raw = path.read_bytes()
    (tmp_path / "t.nrrd").write_bytes(raw[: len(raw) * 2 // 3])
    msgs = _errors(tmp_path / "t.nrrd", monkeypatch)
    assert all("cannot read NRRD" in m and "truncated" in m for m in msgs) and len(set(msgs)) == 1, msgs


def test_read_into_reports_corrupt_data_for_both_decoders(tmp_path, monkeypatch):
    data = np.arange(100_000, dtype=np.int32).tobytes()
    gz = gzip.compress(data)
    # A deflate stream whose first block header is invalid (BTYPE = 3, reserved).
    bad = gz[:10] + bytes([gz[10] | 0x06]) + gz[11:]
    (tmp_path / "x.gz").write_bytes(bad)
    with pytest.raises(zlib.error):
        gzip.decompress(bad)
    msgs = []
    for name in BACKENDS:
        with monkeypatch.context() as m:
            if name == "zlib":
                m.setattr(gzip_stream, "_igzip", None)
            buf = memoryview(bytearray(len(data)))
            with gzip_stream.open_gzip(tmp_path / "x.gz") as fh, pytest.raises(VolumeReadError) as info:
                gzip_stream.read_into(fh, buf, tmp_path / "x.gz", "test")
            msgs.append(str(info.value))
    assert len(set(msgs)) == 1 and "corrupt gzip data (invalid deflate stream)" in msgs[0], msgs
