"""The web app: a JSON API over a `Library` and the page that uses it (FastAPI; run by `radfinder serve`).

Routes (every error answers {"error": message} with a 4xx status):
  GET  /                                   the page (HTML/JS/CSS from package resources: nothing from a CDN)
  GET  /static/{name}                      only the page's own assets, by exact name
  GET  /api/info                           library summary
  GET  /api/search?q=TEXT&k=10[&over=image|report][&filter=Lung nodule>0.5]   {"results": [...], "ranking": ...}
  GET  /api/study/{id}                     report, mined references with slices, findings, depth cells
  GET  /api/study/{id}/heat?q=TEXT         the sentence's score per 12 mm depth cell
  GET  /api/study/{id}/slice/{i}?window=lung|mediastinum|bone    PNG
  GET  /api/study/{id}/thumbnail           PNG
  POST /api/upload (multipart: file, q)    classify (and localize q) an uploaded NIfTI / zipped DICOM series
  GET  /api/upload/{token}/slice/{i}       PNG of an uploaded scan (kept in memory only, a few at a time)

Studies are addressed by their library row id only; no route takes a path, so only files registered in the
library are ever read. Slices are rendered on the server (`radfinder.library.slices`): the browser never needs
the volume (hundreds of MB for a CT), the page stays plain JS with no viewer build, and the window and
orientation logic is the same tested Python the rest of the package uses.
"""

from __future__ import annotations

import secrets
import tempfile
import threading
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..api import classify, encode_volume, localize, prompt_embeddings
from ..errors import CheckpointError, RadfinderError
from ..io import load_volume
from ..library.search import Library, search_answer
from ..library.slices import WINDOWS, SliceLayout, render_slice
from ..library.store import LibraryError
from .uploads import UploadError, UploadLimits, read_upload

STATIC = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
_NO_CACHE = {"Cache-Control": "no-store"}


def _asset(name: str) -> bytes:
    return resources.files("radfinder").joinpath(f"resources/web/{name}").read_bytes()


class _LRU:
    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


def create_app(library: Library, *, limits: UploadLimits | None = None, volume_cache: int = 4) -> FastAPI:
    """The FastAPI app serving `library`."""
    limits = limits or UploadLimits()
    app = FastAPI(title="radfinder library", docs_url=None, redoc_url=None, openapi_url=None)
    volumes = _LRU(volume_cache)
    uploads = _LRU(2)  # decoded scans can be hundreds of MB each
    model_lock = threading.Lock()
    prompts: dict[str, Any] = {}

    @app.exception_handler(RadfinderError)
    async def _radfinder_error(_: Request, exc: RadfinderError):
        status = getattr(exc, "status", 400)
        if isinstance(exc, LibraryError) and str(exc).startswith("no study"):
            status = 404
        if isinstance(exc, CheckpointError):
            status = 409
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in exc.errors()]
        return JSONResponse({"error": "; ".join(parts) or "bad request"}, status_code=400)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.method == "POST" and length and length.isdigit() and int(length) > limits.max_bytes + 65536:
            mb = limits.max_bytes / 2**20
            return JSONResponse({"error": f"upload too large (limit {mb:.0f} MB)"}, status_code=413)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def index() -> Response:
        return Response(_asset("index.html"), media_type="text/html", headers=_NO_CACHE)

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            return JSONResponse({"error": "not found"}, status_code=404)
        return Response(_asset(name), media_type=STATIC[name], headers=_NO_CACHE)

    @app.get("/api/info")
    def info() -> dict:
        out = library.info()
        out["windows"] = list(WINDOWS)
        out.pop("library", None)
        out.pop("checkpoint", None)  # no server paths in answers
        out["failures"] = len(out.get("failures") or {})
        return out

    @app.get("/api/search")
    def search(q: str, k: int = 10, over: str = "image", filter: list[str] = Query(default=[])) -> dict:  # noqa: A002
        return search_answer(library.search(q, k=k, filters=filter, over=over))  # = `search --json`

    def _study_volume(study_id: int):
        row = library.study(study_id)
        vol = volumes.get(study_id)
        if vol is None:
            opts = dict(row.load_opts)
            if row.series is not None:
                opts.setdefault("series", row.series)
            vol = load_volume(row.path, **opts)
            volumes.put(study_id, vol)
        return row, vol

    @app.get("/api/study/{study_id}")
    def study(study_id: int) -> dict:
        row = library.study(study_id)
        out = row.summary()
        out.pop("path", None)
        layout = SliceLayout.of(row.source_shape, np.asarray(row.source_affine))
        out["slice_z_mm"] = list(layout.z_mm)
        out["calibrated"] = bool(library.meta.get("calibrated"))  # what the finding probabilities are
        return out

    @app.get("/api/study/{study_id}/heat")
    def heat(study_id: int, q: str) -> dict:
        return library.heat(study_id, q)

    @app.get("/api/study/{study_id}/slice/{index}")
    def study_slice(study_id: int, index: int, window: str = "lung") -> Response:
        _, vol = _study_volume(study_id)
        layout = SliceLayout.of(vol.array.shape, vol.affine)
        return Response(render_slice(vol.array, layout, index, window), media_type="image/png")

    @app.get("/api/study/{study_id}/thumbnail")
    def study_thumbnail(study_id: int) -> Response:
        png = library.store.thumbnail(study_id)
        if png is None:
            raise LibraryError(f"no study with id {study_id}")
        return Response(png, media_type="image/png")

    @app.post("/api/upload")
    def upload(file: UploadFile = File(...), q: str = Form("")) -> dict:
        with tempfile.TemporaryDirectory(prefix="radfinder-upload-") as tmp:
            dst = Path(tmp) / "upload.bin"
            size = 0
            with dst.open("wb") as fh:
                while block := file.file.read(1 << 20):
                    size += len(block)
                    if size > limits.max_bytes:
                        raise UploadError(f"upload too large (limit {limits.max_bytes / 2**20:.0f} MB)", 413)
                    fh.write(block)
            if size == 0:
                raise UploadError("the uploaded file is empty")
            vol = read_upload(file.filename or "", dst, limits)
        model = library.model
        with model_lock:
            if "p" not in prompts:
                prompts["p"] = prompt_embeddings(model)
            try:
                enc = encode_volume(model, vol)
            except RadfinderError as exc:
                raise UploadError(f"{file.filename}: {exc}") from exc
            scores = classify(model, enc, prompts=prompts["p"])
            loc = localize(model, enc, q)[0] if q.strip() else None
        layout = SliceLayout.of(vol.array.shape, vol.affine)
        token = secrets.token_hex(12)
        uploads.put(token, vol)
        out: dict[str, Any] = {
            "token": token, "filename": file.filename, "shape": list(vol.array.shape), "n_slices": layout.n_slices,
            "slice_z_mm": list(layout.z_mm), "findings": {s.finding: s.probability for s in scores}, "heat": None,
            "calibrated": bool(scores and scores[0].calibrated),
        }  # fmt: skip
        if loc is not None:
            valid = enc.depth_valid
            cell_mm = float(model.preprocess_spec.depth_cell_mm)
            out["heat"] = {"query": q, "best_cell": loc.cell, "best_slice": layout.nearest_slice(loc.world_z_mm),
                           "depth_mm": (loc.cell + 0.5) * cell_mm, "world_z_mm": loc.world_z_mm, "cells": [
                               {"cell": c, "z_mm": float(enc.depth_z_mm[c]), "valid": bool(valid[c]),
                                "slice": layout.nearest_slice(float(enc.depth_z_mm[c])),
                                "probability": float(loc.probabilities[c])} for c in range(len(valid))]}  # fmt: skip
        return out

    @app.get("/api/upload/{token}/slice/{index}")
    def upload_slice(token: str, index: int, window: str = "lung") -> Response:
        vol = uploads.get(token)
        if vol is None:
            return JSONResponse({"error": "unknown or expired upload"}, status_code=404)
        layout = SliceLayout.of(vol.array.shape, vol.affine)
        return Response(render_slice(vol.array, layout, index, window), media_type="image/png")

    return app
