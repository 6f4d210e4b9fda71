"""Training checkpoints without pickle: model via `save_pretrained`, training state as safetensors + JSON.

Layout of `<out>/checkpoints/step-00000120/`:
  model/                     save_pretrained output (weights, config, preprocess spec, tokenizer): usable as is
  train_state.safetensors    optimizer tensors, exact LoRA base weights, RNG states of every rank
  train_state.json           step, epoch, data order, scheduler, optimizer hyper-parameters, python RNG,
                             the run fingerprint (what must match to resume)
A checkpoint is written to a temporary directory and renamed into place, then `<out>/checkpoints/latest` (a text
file naming it) is replaced atomically: a run killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..models.lora import lora_modules
from ..models.official import load_official_state_dict
from ..models.pretrained import read_safetensors

STATE_FORMAT = "radfinder-train-state"
STATE_VERSION = 1
LATEST = "latest"


def checkpoint_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def step_name(step: int) -> str:
    return f"step-{step:08d}"


# ------------------------------------------------------------------------------------------------ RNG
def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's RNG states as (tensors, JSON-able values)."""
    tensors = {"torch_cpu": torch.get_rng_state().clone()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = s.clone()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - the global legacy generator is what we save
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    py = random.getstate()
    values = {"numpy": [kind, int(pos), int(has_gauss), float(cached)], "python": [py[0], list(py[1]), py[2]]}
    return tensors, values


def restore_rng(tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = values["numpy"]
    np.random.set_state((kind,  # noqa: NPY002
                         tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, state, gauss = values["python"]
    random.setstate((version, tuple(state), gauss))


# ------------------------------------------------------------------------------------------------ optimizer
def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                        where: Path) -> None:
    groups = meta["param_groups"]
    mine = opt.param_groups
    if len(groups) != len(mine):
        raise CheckpointError(f"{where}: optimizer has {len(groups)} parameter groups, this run {len(mine)}")
    for g_saved, g_now in zip(groups, mine, strict=True):
        if g_saved.get("names") != g_now.get("names"):
            a, b = set(g_saved.get("names") or []), set(g_now.get("names") or [])
            diff = sorted(a ^ b)[:5]
            raise CheckpointError(f"{where}: the trainable parameters differ from this run's (e.g. {diff}); "
                                  "was model.text_train or the model changed?")
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = t
    for idx, vals in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(vals)
    device = next(p for g in mine for p in g["params"]).device
    state = {i: {k: (v.to(device) if isinstance(v, torch.Tensor) and k != "step" else v) for k, v in s.items()}
             for i, s in state.items()}
    opt.load_state_dict({"state": state, "param_groups": groups})


# ------------------------------------------------------------------------------------------------ save / load
def lora_base_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Exact un-merged LoRA base weights: `save_pretrained` stores merged weights, and un-merging them again on
    load is not bit-exact in floating point."""
    out = {}
    names = {id(m): n for n, m in model.named_modules()}
    for m in lora_modules(model):
        w = m.weight.detach()
        if m.merged:
            w = w - m.delta().detach()
        out[f"lora_base.{names[id(m)]}"] = w.cpu().contiguous().clone()
    return out


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    rng: list[tuple[dict[str, torch.Tensor], dict[str, Any]]],
    keep_last: int,
) -> Path:
    """Write checkpoint `step` (rank 0 only; `rng` holds every rank's states) and move `latest` to it."""
    from safetensors.torch import save_file

    root = checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    tmp = root / f".tmp-{step_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_pretrained(tmp / "model")
    tensors, opt_meta = flatten_optimizer(optimizer)
    tensors.update(lora_base_tensors(model))
    rng_values = []
    for r, (rt, rv) in enumerate(rng):
        tensors.update({f"rng.{r}.{k}": v for k, v in rt.items()})
        rng_values.append(rv)
    save_file(tensors, str(tmp / "train_state.safetensors"), metadata={"format": STATE_FORMAT})
    meta = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "step": step, "optimizer": opt_meta,
            "rng": rng_values, **state}
    (tmp / "train_state.json").write_text(json.dumps(meta, indent=1) + "\n")
    if final.exists():  # the same step saved again (e.g. the final save right after a periodic one)
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name + "\n")
    os.replace(pointer, root / LATEST)
    _prune(root, keep_last)
    return final


def _prune(root: Path, keep_last: int) -> None:
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    root = checkpoint_root(out_dir)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "train_state.json").is_file():
        raise CheckpointError(f"{pointer} names {path.name}, which is missing or incomplete")
    return path


def read_state(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    meta_path = path / "train_state.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable ({exc})") from exc
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{meta_path}: not a radfinder training state")
    if int(meta.get("format_version", 0)) > STATE_VERSION:
        raise CheckpointError(f"{meta_path}: written by a newer radfinder")
    return meta, read_safetensors(path / "train_state.safetensors")


def check_fingerprint(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Raise a CheckpointError naming every differing entry (dotted keys) of the run fingerprints."""
    diffs: list[str] = []

    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{prefix}[{i}]")
        elif a != b:
            diffs.append(f"{prefix}: checkpoint {_short(a)} vs now {_short(b)}")

    walk(saved, current, "")
    if diffs:
        shown = "\n  ".join(diffs[:12])
        more = f"\n  ... and {len(diffs) - 12} more" if len(diffs) > 12 else ""
        raise CheckpointError(f"{where} does not match this run's data or config:\n  {shown}{more}")


def _short(v: Any) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 80 else s[:77] + "..."


def load_into(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
              meta: dict[str, Any]) -> None:
    weights = path / "model" / "model.safetensors"
    sd = read_safetensors(weights)
    try:
        load_official_state_dict(model, sd, strict=True)
    except CheckpointError as exc:
        raise CheckpointError(f"{weights}: {exc}") from exc
    names = dict(model.named_modules())
    with torch.no_grad():
        for key, t in tensors.items():
            if key.startswith("lora_base."):
                m = names.get(key[len("lora_base."):])
                if m is None:
                    raise CheckpointError(f"{path}: LoRA layer {key} is not in this model")
                m.weight.copy_(t)
                m.merged = False
                if not m.training:
                    m.merge()
    unflatten_optimizer(optimizer, tensors, meta["optimizer"], path)


def rng_of_rank(tensors: dict[str, torch.Tensor], meta: dict[str, Any], rank: int, where: Path):
    if rank >= len(meta["rng"]):
        raise CheckpointError(f"{where}: saved by {len(meta['rng'])} processes, this run has rank {rank}")
    prefix = f"rng.{rank}."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, meta["rng"][rank]
