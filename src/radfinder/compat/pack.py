"""A reference pack (directory of test vectors + manifest.json) and the comparison primitives of the verifier.

Nothing about a particular pack is hard-coded: sizes come from its config and weight shapes, case lists from the
tensors present, tolerances from its manifest (with the SPEC's general rules as fallback).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError


@dataclass
class Tolerance:
    atol: float
    rtol: float = 0.0
    # "allclose": |d| <= atol + rtol*|ref| elementwise; "either": |d| <= max(atol, rtol*|ref|) (losses, SPEC 13.5)
    mode: str = "allclose"

    def __str__(self) -> str:
        if self.atol == 0 and self.rtol == 0:
            return "exact"
        joiner = " or " if self.mode == "either" else " + "
        return f"atol {self.atol:g}" + (f"{joiner}rtol {self.rtol:g}" if self.rtol else "")


@dataclass
class Check:
    name: str
    max_abs: float | None
    tol: str
    ok: bool
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "max_abs_diff": self.max_abs, "tolerance": self.tol, "ok": self.ok,
                "note": self.note}


class TensorFile:
    """A safetensors file whose reads are recorded, so the verifier can prove every stored tensor was checked."""

    def __init__(self, path: Path):
        from safetensors.torch import load_file

        self.path = path
        self.name = path.name
        try:
            self._data = load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from exc
        self.used: set[str] = set()

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._data:
            raise KeyError(f"{self.name} has no tensor {key!r}")
        self.used.add(key)
        return self._data[key]

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str, default=None):
        return self[key] if key in self._data else default

    def keys(self) -> list[str]:
        return list(self._data)

    def unused(self) -> list[str]:
        return [k for k in self._data if k not in self.used]


def _parse_tolerance(text: str | None, default: Tolerance) -> Tolerance:
    if not text:
        return default
    le = re.search(r"<=\s*([0-9.]+e-?[0-9]+|[0-9.]+)", text)
    accept = re.search(r"accept\s+atol\s*([0-9.]+e-?[0-9]+|[0-9.]+)", text)
    atol = re.search(r"atol\s*([0-9.]+e-?[0-9]+|[0-9.]+)", text)
    rtol = re.search(r"rtol\s*([0-9.]+e-?[0-9]+|[0-9.]+)", text)
    # "accept atol X" overrides; "atol 0 ... anything <= X is fine" means X
    value = accept or (le if atol is None or float(atol.group(1)) == 0 else atol) or atol
    if value is None and "exact" in text:
        return Tolerance(0.0, 0.0, default.mode)
    return Tolerance(
        float(value.group(1)) if value else default.atol,
        float(rtol.group(1)) if rtol else default.rtol,
        default.mode,
    )


class ReferencePack:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest = self.root / "manifest.json"
        if not manifest.is_file():
            raise CheckpointError(f"{self.root}: not a reference pack (manifest.json missing)")
        self.manifest: dict[str, Any] = json.loads(manifest.read_text())
        self._files: dict[str, TensorFile] = {}
        self._model = None
        tol = self.manifest.get("tolerances") or {}
        self.tol_exact_tables = _parse_tolerance(tol.get("rope_tables_and_fold"), Tolerance(1e-6))
        self.tol_model = _parse_tolerance(tol.get("model_outputs_float32"), Tolerance(1e-5, 1e-5))
        # Losses: atol from the manifest, or rtol 2e-7, whichever is larger (SPEC 13.5).
        self.tol_loss = _parse_tolerance(tol.get("losses"), Tolerance(1e-6, 2e-7, "either"))
        if self.tol_loss.rtol == 0:
            self.tol_loss.rtol = 2e-7
        self.tol_exact = Tolerance(0.0)
        self.tol_preprocess = _parse_tolerance(tol.get("preprocessing_pixel_values_float16"), Tolerance(1e-3))

    # -------------------------------------------------------------- files
    def vector_files(self) -> list[str]:
        names = set(self.manifest.get("files", {})) | {p.name for p in self.root.glob("tv_*.safetensors")}
        return sorted(n for n in names if n.startswith("tv_") and n.endswith(".safetensors"))

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    def file(self, name: str) -> TensorFile:
        if name not in self._files:
            path = self.root / name
            if not path.is_file():
                raise CheckpointError(f"{path}: listed in the pack but missing")
            self._files[name] = TensorFile(path)
        return self._files[name]

    def loaded_files(self) -> dict[str, TensorFile]:
        return self._files

    def file_info(self, name: str) -> dict[str, Any]:
        return self.manifest.get("files", {}).get(name, {})

    def tensor_ref(self, ref: str) -> torch.Tensor:
        """'file.safetensors:key' or "file['key']" -> the tensor."""
        m = re.match(r"\s*(tv_\w+)(?:\.safetensors)?\s*(?::|\[')\s*([\w.\-]+)", ref)
        if not m:
            raise CheckpointError(f"cannot parse tensor reference {ref!r} in the manifest")
        return self.file(m.group(1) + ".safetensors")[m.group(2)]

    # -------------------------------------------------------------- model
    def weights_and_config(self) -> tuple[Path, dict[str, Any]]:
        """The pack's model weights and its official config.json (or one assembled from the manifest)."""
        candidates = sorted(self.root.glob("model_*.safetensors"))
        if not candidates:
            raise CheckpointError(f"{self.root}: no model_*.safetensors weights in the pack")
        weights = candidates[0]
        tag = weights.stem[len("model_") :]
        cfg_path = self.root / f"hf_config_{tag}.json"
        if cfg_path.is_file():
            return weights, json.loads(cfg_path.read_text())
        rc = self.manifest.get(f"{tag}_model_config")
        if rc is None:
            raise CheckpointError(f"{self.root}: neither hf_config_{tag}.json nor manifest {tag}_model_config")
        return weights, {"radfinder_model_config": rc, "model_settings": None,
                         "do_snippet_alignment": self.manifest.get("do_snippet_alignment")}

    def model(self):
        """The pack's model, loaded the official way (config + weights), float32, eval mode."""
        if self._model is None:
            from ..models.official import config_from_official, load_official_state_dict
            from ..models.pretrained import read_safetensors
            from ..models.radfinder import RadFinderModel

            weights, hf_cfg = self.weights_and_config()
            sd = read_safetensors(weights)
            cfg = config_from_official(hf_cfg, {k: tuple(v.shape) for k, v in sd.items()})
            model = RadFinderModel(cfg, text_weights=False).eval()
            self.load_report = load_official_state_dict(model, sd, strict=False)
            self.state_dict = sd
            self._model = model.float()
        return self._model

    def preprocess_spec(self):
        from ..models.pretrained import spec_from_official

        return spec_from_official(self.weights_and_config()[1])


def _diff(got: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None):
    got = got.detach().to("cpu", torch.float64)
    ref = ref.detach().to("cpu", torch.float64)
    if got.shape != ref.shape:
        raise ValueError(f"shape {tuple(got.shape)} != reference {tuple(ref.shape)}")
    if mask is not None:
        mask = mask.to("cpu", torch.bool)
        while mask.dim() < got.dim():
            mask = mask.unsqueeze(-1)
        mask = mask.expand_as(got)
        got, ref = got[mask], ref[mask]
    return got, ref


def compare(
    name: str, got, ref: torch.Tensor, tol: Tolerance, mask: torch.Tensor | None = None, note: str = ""
) -> Check:
    """Compare `got` with `ref` (at mask==True positions if a mask is given; the mask covers leading dims)."""
    if not isinstance(got, torch.Tensor):
        got = torch.as_tensor(got)
    try:
        g, r = _diff(got, ref, mask)
    except ValueError as exc:
        return Check(name, None, str(tol), False, str(exc))
    if g.numel() == 0:
        return Check(name, 0.0, str(tol), True, note or "no valid positions")
    if not torch.isfinite(g).all() and not torch.equal(torch.isfinite(g), torch.isfinite(r)):
        return Check(name, math.inf, str(tol), False, "non-finite values")
    finite = torch.isfinite(r)
    d = (g - r).abs()
    d = torch.where(finite, d, torch.zeros_like(d))
    if not torch.equal(g[~finite], r[~finite]):
        return Check(name, math.inf, str(tol), False, "non-finite values differ")
    if tol.mode == "either":
        ok = bool((d <= torch.clamp(tol.rtol * r.abs(), min=tol.atol)).all())
    else:
        ok = bool((d <= tol.atol + tol.rtol * r.abs()).all())
    return Check(name, float(d.max()), str(tol), ok, note)


def compare_exact(name: str, got, ref: torch.Tensor, note: str = "") -> Check:
    got = torch.as_tensor(got).detach().cpu()
    ref = ref.detach().cpu()
    if tuple(got.shape) != tuple(ref.shape):
        return Check(name, None, "exact", False, f"shape {tuple(got.shape)} != reference {tuple(ref.shape)}")
    same = torch.equal(got.to(torch.float64), ref.to(torch.float64))
    diff = float((got.to(torch.float64) - ref.to(torch.float64)).abs().max()) if got.numel() else 0.0
    return Check(name, diff, "exact", same, note)
