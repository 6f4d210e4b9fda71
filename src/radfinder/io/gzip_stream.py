"""Gzip streams for the volume readers: ISA-L's igzip (the `isal` package) when it is installed, about 2.5x the
standard library's zlib on CT data, else the standard library. Both check the trailer's CRC-32 and length, and both
paths raise the same `VolumeReadError` messages, so the choice of decoder never changes an array or an error.

Reading a .nii.gz is bound by decompression (a 512 x 512 x 300 int16 CT is ~150 MB of deflate output): the
decoder is the floor of the whole load.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import IO, BinaryIO

from ..errors import VolumeReadError

try:  # optional fast decoder; identical output (deflate is deterministic), checked in tests
    from isal import igzip as _igzip
    from isal.igzip_lib import IsalError as _IsalError
except ImportError:  # pragma: no cover - exercised by monkeypatching `_igzip` to None in tests
    _igzip = None
    _IsalError = zlib.error

_CHUNK = 1 << 24


def backend() -> str:
    """Name of the decoder in use: "isal" or "zlib"."""
    return "isal" if _igzip is not None else "zlib"


def open_gzip(source: str | Path | BinaryIO) -> IO[bytes]:
    """A binary reader of the decompressed stream of `source` (a path or a file object placed at the gzip data)."""
    opener = _igzip.open if _igzip is not None else gzip.open
    return opener(source if not isinstance(source, Path) else str(source), "rb")


def read_into(fh: IO[bytes], view: memoryview, path: Path, what: str) -> None:
    """Fill `view` (bytes) from the decompressed stream `fh`, then check the gzip trailer (CRC-32, length).

    Raises `VolumeReadError` naming `path`: truncated stream (the file ends before `len(view)` bytes), corrupt
    deflate data, or a failed trailer check. Messages do not depend on the decoder.
    """
    total, filled = len(view), 0
    try:
        while filled < total:
            n = fh.readinto(view[filled : filled + _CHUNK])
            if not n:
                raise EOFError
            filled += n
    except EOFError:
        raise VolumeReadError(path, _truncated(what, total)) from None
    except (OSError, zlib.error, _IsalError) as exc:
        raise VolumeReadError(path, f"cannot read {what}: corrupt gzip data ({_reason(exc)})") from None
    try:
        fh.read(1)  # reaches the end of the member: the decoder checks CRC-32 and length there
    except EOFError:
        # Decoders buffer differently: one may still hand out every data byte here, the other fails above.
        raise VolumeReadError(path, _truncated(what, total)) from None
    except (OSError, zlib.error, _IsalError) as exc:
        raise VolumeReadError(path, f"cannot read {what}: corrupt gzip data ({_reason(exc)})") from None


def _truncated(what: str, total: int) -> str:
    return f"cannot read {what}: the gzip stream ends early (truncated file; the header declares {total} data bytes)"


def _reason(exc: BaseException) -> str:
    """A decoder-independent description of a decoding failure."""
    msg = str(exc)
    if "CRC" in msg:
        return "CRC-32 check failed"
    if "length" in msg.lower() and "incorrect" in msg.lower():
        return "length check failed"
    if "Not a gzipped file" in msg:
        return "data after the gzip stream is not gzip"
    return "invalid deflate stream"
