"""`radfinder serve`: the library's web page and JSON API (FastAPI app, run with uvicorn)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import uvicorn

from ..library.search import Library
from .app import create_app
from .uploads import UploadError, UploadLimits


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(library: str | Path, host: str = "127.0.0.1", port: int = 8000, *, device: str = "auto",
          max_upload_mb: int = 512, log_level: str = "info") -> None:
    """Open the library (checkpoint hash checked, model loaded before the first request) and serve it."""
    lib = Library(library, device=device)
    lib.model  # noqa: B018  (load and verify now, not on the first request)
    app = create_app(lib, limits=UploadLimits(max_bytes=int(max_upload_mb) * 2**20))
    uvicorn.run(app, host=host, port=int(port), log_level=log_level, workers=1)


__all__ = ["UploadError", "UploadLimits", "create_app", "is_loopback", "serve"]
