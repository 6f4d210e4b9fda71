"""`pretrain_encoder`: pre-train a window encoder on dense mask targets (`radfinder pretrain-encoder`).

It uses the trainer's infrastructure, not RadFinder's training step: the resolved config in `<out>/config.yaml`,
`log.jsonl` (+ a progress bar), atomic checkpoints with optimizer and RNG state of every rank under
`<out>/checkpoints/` (exact resume with `resume=True`), torchrun/DDP (gloo on CPU, NCCL on GPU), CUDA with bf16
autocast when present. Stages: render the synthetic pre-training cohort (unless `data.source` names data),
cache windows and targets (`radfinder.data.pretrain_windows`, sharded over ranks, resumable), train, and export
the frozen encoder to `<out>/encoder/` (`encoder.safetensors` + `encoder.json`), the folder
`radfinder.models.shipped` loads and `scripts/ship_encoder.py` turns into the package's shipped weights.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ..config import dump_config
from ..data.pretrain_windows import WindowCache, build_window_cache, pretrain_pairs
from ..data.synth import make_cohort
from ..device import resolve_device
from ..errors import CheckpointError
from ..losses.dense_pretrain import DensePretrainHeads, dense_pretrain_loss
from ..models.light3d import Light3DWindowEncoder
from ..models.pretrained import read_safetensors
from ..models.shipped import load_encoder_weights
from ..preprocess.spec import resolve_spec
from . import distributed as D
from .checkpoint import (
    capture_rng,
    check_fingerprint,
    latest_checkpoint,
    read_state,
    restore_rng,
    rng_of_rank,
    save_checkpoint,
    unflatten_optimizer,
)
from .logs import RunLogger
from .optim import lr_at, set_lr
from .plots import PRETRAIN_PANELS, plot_log
from .pretrain_config import PretrainConfig

ENCODER_FORMAT = "radfinder-window-encoder"


class PretrainModule(nn.Module):
    """Encoder + pre-training heads; `save_pretrained` is what training checkpoints store."""

    def __init__(self, encoder: Light3DWindowEncoder, heads: DensePretrainHeads, config: dict[str, Any]):
        super().__init__()
        self.encoder = encoder
        self.heads = heads
        self.config = config

    def forward(self, windows: torch.Tensor, targets: torch.Tensor, pos_weight: float):
        z = self.encoder.forward_map(windows)
        f = self.encoder.features_from_map(z)
        return dense_pretrain_loss(self.heads, z, f.cls, f.patch_average, f.axis2, targets, pos_weight)

    def save_pretrained(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(sd, str(d / "model.safetensors"), metadata={"format": "radfinder-pretrain-module"})
        (d / "config.json").write_text(json.dumps(self.config, indent=1) + "\n")


def _data(cfg: PretrainConfig, out: Path, info: D.DistInfo, spec, map_size) -> WindowCache:
    source = cfg.data.source
    if source is None:
        source = str(out / "cohort")
        if info.rank == 0 and not (out / "cohort" / "truth.jsonl").is_file():
            c = cfg.data.cohort
            make_cohort(out / "cohort", c.studies, c.seed, res=c.res, workers=c.workers, valid_fraction=0.0,
                        overwrite=True, stream="pretrain", show_progress=cfg.logging.progress)  # fmt: skip
        D.barrier()
    pairs = pretrain_pairs(source)
    root = Path(cfg.data.windows) if cfg.data.windows else out / "windows"
    classes = cfg.data.organs + cfg.data.lesions
    build_window_cache(pairs, spec, classes, map_size, root, shard=(info.rank, info.world_size),
                       show_progress=cfg.logging.progress)  # fmt: skip
    D.barrier()
    return WindowCache(root)


def _order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, 7, epoch]).permutation(n)


def _batch_indices(cfg: PretrainConfig, step: int, n: int, rank: int, world: int) -> np.ndarray:
    """Window indices of `rank` at `step`: epochs are seeded permutations, consumed in global batches."""
    b = cfg.schedule.batch
    per_epoch = max(1, n // (b * world))
    epoch, k = divmod(step, per_epoch)
    start = (k * world + rank) * b
    return np.sort(_order(cfg.seed, epoch, n)[start : start + b])


def pretrain_encoder(cfg: PretrainConfig, out: str | Path, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) a pre-training; returns a summary (steps, losses, seconds, paths)."""
    out = Path(out)
    device = resolve_device(cfg.device)
    info = D.init_distributed(device=device)
    device = info.device if info.world_size > 1 else device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, out, resume, info, device)
    finally:
        D.cleanup()


def _run(cfg: PretrainConfig, out: Path, resume: bool, info: D.DistInfo, device: torch.device) -> dict[str, Any]:
    main = info.rank == 0
    spec = resolve_spec(cfg.data.spec)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume and latest_checkpoint(out) is not None:
            raise CheckpointError(f"{out} holds a pre-training run already: pass --resume or use another folder")
        dump_config(cfg, out / "config.yaml")
    D.barrier()
    torch.manual_seed(cfg.seed)
    e = cfg.encoder
    encoder = Light3DWindowEncoder(e.widths, e.blocks, e.feature_dim, tuple(spec.window), e.spatial_grid)
    if e.init:
        encoder.load_state_dict(load_encoder_weights(e.init), strict=True)
    cache = _data(cfg, out, info, spec, encoder.map_size)
    heads = DensePretrainHeads(e.feature_dim, len(cfg.data.organs), len(cfg.data.lesions))
    module = PretrainModule(encoder, heads, {"encoder": encoder_config_from_module(encoder)}).to(device)
    model: nn.Module = module
    if info.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(module, device_ids=ids)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    n = len(cache)
    steps_per_epoch = max(1, n // (cfg.schedule.batch * info.world_size))
    total = max(1, math.ceil(cfg.schedule.epochs * steps_per_epoch))
    stop = min(total, cfg.schedule.max_steps or total)
    fingerprint = {"config": cfg.model_dump(mode="json", exclude={"schedule": {"max_steps"}, "logging": True,
                                                                    "device": True, "threads": True}),
                   "windows": n, "spec_hash": spec.hash(), "world_size": info.world_size}  # fmt: skip
    start = 0
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        meta, tensors = read_state(ckpt)
        check_fingerprint(meta["fingerprint"], fingerprint, ckpt)
        module.load_state_dict(read_safetensors(ckpt / "model" / "model.safetensors"), strict=True)
        unflatten_optimizer(opt, tensors, meta["optimizer"], ckpt)
        restore_rng(*rng_of_rank(tensors, meta, info.rank, ckpt))
        start = int(meta["step"])
    autocast = device.type == "cuda" and cfg.precision in ("auto", "bf16")
    log = RunLogger(out, enabled=main, tensorboard=False, tb_every=10**9, progress=cfg.logging.progress,
                    start_step=start, total_steps=stop)  # fmt: skip
    if main:
        log.message(f"pre-training on {n} windows ({len(cache.keys)} volumes), {stop} steps of "
                    f"{cfg.schedule.batch} x {info.world_size} windows, device {device}")  # fmt: skip
    t0 = time.perf_counter()
    last: dict[str, float] = {}
    model.train()
    for step in range(start, stop):
        idx = _batch_indices(cfg, step, n, info.rank, info.world_size)
        x_np, y_np = cache.batch(idx)
        x = torch.from_numpy(x_np).to(device, non_blocking=True)
        y = torch.from_numpy(y_np).to(device, non_blocking=True)
        lr = lr_at(step, total, cfg.optim.warmup_steps, cfg.optim.lr, cfg.optim.min_lr)
        set_lr(opt, lr)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, parts = model(x, y, cfg.optim.lesion_pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.grad_clip)
        opt.step()
        done = step + 1
        last = {k: float(D.all_reduce_mean(v.detach().float()).cpu()) for k, v in parts.items()}
        last["loss"] = float(D.all_reduce_mean(loss.detach().float()).cpu())
        log.step({"step": done, "lr": lr, "epoch": round(done / steps_per_epoch, 4), **last,
                  "windows_per_s": round(cfg.schedule.batch * info.world_size * (done - start)
                                         / max(time.perf_counter() - t0, 1e-9), 2)})  # fmt: skip
        if done % cfg.checkpoint.every_steps == 0 or done == stop:
            _save(out, done, module, opt, fingerprint, cfg, info)
    log.close()
    seconds = time.perf_counter() - t0
    if main:
        export_encoder(module.encoder, spec, out / "encoder", {"steps": stop, "windows": n, "final": last})
        plot_log(out / "log.jsonl", out / "loss_curve.png", title="window-encoder pre-training", panels=PRETRAIN_PANELS)
    D.barrier()
    return {"steps": stop, "total_steps": total, "windows": n, "volumes": len(cache.keys), "final": last,
            "seconds": round(seconds, 1), "encoder": str(out / "encoder")}  # fmt: skip


def _save(out: Path, step: int, module: PretrainModule, opt, fingerprint, cfg: PretrainConfig, info: D.DistInfo):
    rng = [capture_rng()]
    if info.world_size > 1:
        gathered: list[Any] = [None] * info.world_size
        torch.distributed.all_gather_object(gathered, rng[0])
        rng = gathered
    if info.rank == 0:
        save_checkpoint(out, step, module, opt, {"fingerprint": fingerprint}, rng, cfg.checkpoint.keep_last)
    D.barrier()


def export_encoder(encoder: Light3DWindowEncoder, spec, target: Path, extra: dict[str, Any]) -> None:
    """Write the frozen encoder as `encoder.safetensors` + `encoder.json` (atomic: a folder renamed into place)."""
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sd = {k: v.detach().cpu().float().contiguous() for k, v in encoder.state_dict().items()}
    save_file(sd, str(tmp / "encoder.safetensors"), metadata={"format": ENCODER_FORMAT})
    cfg = encoder_config_from_module(encoder)
    meta = {"format": ENCODER_FORMAT, "window_encoder": cfg, "preprocess": json.loads(spec.canonical_json()),
            "spec_hash": spec.hash(), "torch": torch.__version__, "platform": platform.platform(), **extra}  # fmt: skip
    (tmp / "encoder.json").write_text(json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def encoder_config_from_module(encoder: Light3DWindowEncoder) -> dict[str, Any]:
    """The `WindowEncoderConfig` fields that rebuild `encoder` (see `radfinder.models.config`)."""
    return {"kind": "light3d", "embed_dim": encoder.embed_dim, "feature_dim": encoder.feature_dim,
            "window_size": list(encoder.window_size), "options": dict(encoder.options)}  # fmt: skip
