"""`train(cfg, out_dir, resume)`: the training loop (single process, or one rank of a torchrun job).

The run is a pure function of the config and the data: step s reads the samples at positions
[s*G, (s+1)*G) of the seeded epoch orders (G = micro x accum x world), rank r takes its contiguous shard, and all
randomness is either per-sample seeded or carried in the RNG states saved with every checkpoint. That is what
makes `--resume` bit-exact.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..config import dump_config
from ..device import resolve_device
from ..errors import CheckpointError, ConfigError, RadfinderError
from ..models.accel import maybe_compile
from ..models.text_topk import top_layers
from ..text.vocabulary import resolve_vocabulary
from . import fvlm_fields as _fvlm_fields  # noqa: F401  (registers the fvlm objective's `anatomy` batch field)
from . import swca_fields as _swca_fields  # noqa: F401  (registers the swca objective's `swca_volume` field)
from .batches import CachedFeatures, MicroBatch, make_micro_batch
from .checkpoint import (
    capture_rng,
    check_fingerprint,
    latest_checkpoint,
    load_into,
    read_state,
    restore_rng,
    rng_of_rank,
    save_checkpoint,
)
from .config import TrainConfig
from .data import MixedOrder, build_sources
from .distributed import (
    DistInfo,
    barrier,
    broadcast_from_main,
    cleanup,
    collective_guard,
    init_distributed,
    local_only,
)
from .hooks import EvalContext, EvalHook, eval_mode
from .logs import RunLogger
from .optim import build_optimizer, lr_at, select_trainable, set_lr
from .setup import build_model, fingerprint, loss_setup, prompt_texts
from .step import StepModule, StepStats, compute_step_gradients

FAIL_ENV = "RADFINDER_TRAIN_FAIL"  # test hook: "RANK:STEP" raises on that rank before that step


class TrainingFailed(RadfinderError):
    """An injected or detected failure that ends the run."""


@dataclass
class TrainResult:
    out_dir: Path
    steps: int  # optimizer steps completed in total (including before a resume)
    total_steps: int
    epochs: float
    final_loss: float | None
    last_checkpoint: Path | None
    seconds: float
    samples_per_s: float | None
    eval: dict[str, float] = field(default_factory=dict)
    pairs: dict[str, Any] = field(default_factory=dict)  # snippet pairs read, kept and dropped (see data.json)

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def _precision(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """(parameter dtype, autocast dtype)."""
    p = cfg.precision
    if p == "auto":
        p = "bf16" if device.type == "cuda" else "fp32"
    if p == "bf16":
        if device.type != "cuda":
            raise ConfigError("precision bf16 (autocast) needs CUDA; use fp32 on CPU")
        return torch.float32, torch.bfloat16
    return (torch.float64 if p == "fp64" else torch.float32), None


class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: str | Path, resume: bool = False,
                 hooks: list[EvalHook] | None = None, show_progress: bool | None = None):
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        backend = None if cfg.distributed.backend == "auto" else cfg.distributed.backend
        dev = None if cfg.device == "auto" else cfg.device
        self.owns_group = not dist.is_initialized()
        self.dist: DistInfo = init_distributed(backend=backend, timeout_s=cfg.distributed.timeout_s, device=dev)
        self.device = self.dist.device if cfg.device == "auto" else resolve_device(cfg.device)
        if cfg.device == "auto" and self.dist.world_size == 1:
            self.device = resolve_device("auto")
        self.world, self.rank = self.dist.world_size, self.dist.rank
        self.is_main = self.rank == 0
        self.param_dtype, self.autocast = _precision(cfg, self.device)

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.vocabulary = resolve_vocabulary(cfg.data.vocabulary)
        self.sources = build_sources(cfg.data.datasets, self.vocabulary.findings)
        self.model = build_model(cfg.model).to(self.device, dtype=self.param_dtype)
        self.model.label_vocabulary = self.vocabulary  # saved with every checkpoint (labels.json)
        crit = self.model.criterion
        with torch.no_grad():
            if cfg.losses.t_init is not None:
                crit.t.fill_(cfg.losses.t_init)
            if cfg.losses.b_init is not None:
                crit.b.fill_(cfg.losses.b_init)
        loc = {k: getattr(cfg.losses, k) for k in ("localization_sigma", "localization_tau")
               if getattr(cfg.losses, k) is not None}
        if loc:  # the model's config is the one home of these: what the run trains with is what it saves
            self.model.config = self.model.config.model_copy(update=loc)
        self.trainable_names = select_trainable(self.model, cfg.model.text_train)
        if cfg.model.text_train == "frozen":
            self.model.cache_text_features(True)  # a frozen text tower's features never change: encode once
        elif top_layers(cfg.model.text_train) is not None:  # the frozen bottom layers' outputs: computed once
            self.model.cache_text_lower_layers(top_layers(cfg.model.text_train))
        named = dict(self.model.named_parameters())
        self.trainable = [named[n] for n in self.trainable_names]
        self.optimizer = build_optimizer(self.model, cfg.optim)

        feature_dim = self.model.backbone_image.feature_dim
        if cfg.data.source == "features":
            self.provider = CachedFeatures(self.sources, feature_dim)
            feature_identity = self.provider.identity()
        else:
            from .raw import RawFeatures

            self.provider = RawFeatures(self.sources, self.model, cfg.data.augment, cfg.seed, self.device,
                                        self.autocast)
            feature_identity = self.provider.identity()

        self._check_pairs_spec(feature_identity)
        texts, self.prompt_shape = prompt_texts(cfg.data.prompt_bank, self.vocabulary.findings)
        self.prompt_tokens = self.model.tokenize(texts)
        self.objectives, self.batch_fields, self.settings = loss_setup(
            cfg, self.model, self.sources, self.prompt_shape, self.vocabulary, self.device)

        self.order = MixedOrder([len(s.records) for s in self.sources], [s.section.weight for s in self.sources],
                                cfg.seed, cfg.data.samples_per_epoch)
        self.local_batch = cfg.batch.micro * cfg.batch.accum
        self.global_batch = self.local_batch * self.world
        self.steps_per_epoch = self.order.epoch_size // self.global_batch
        if self.steps_per_epoch < 1:
            raise ConfigError(f"one step takes {self.global_batch} samples (micro {cfg.batch.micro} x accum "
                              f"{cfg.batch.accum} x {self.world} processes) but an epoch has only "
                              f"{self.order.epoch_size}; lower the batch or raise data.samples_per_epoch")
        self.total_steps = max(1, math.ceil(cfg.schedule.epochs * self.steps_per_epoch))
        warm = cfg.optim.warmup_steps
        self.warmup_steps = warm if warm is not None else round(cfg.optim.warmup_epochs * self.steps_per_epoch)
        self.end_step = min(self.total_steps, cfg.schedule.max_steps or self.total_steps)
        self.fingerprint = fingerprint(cfg, self.model, self.sources, feature_identity, self.world)

        step_module = StepModule(self.model, self.autocast)
        self.step_module = step_module
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # the only buffers are constant RoPE periods: synced once at construction, never per forward
            sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                    else {"broadcast_buffers": False})
            with collective_guard("the initial weight broadcast (DDP setup)"):
                self.wrapped = DDP(step_module, device_ids=ids, find_unused_parameters=False, **sync)
        else:
            self.wrapped = step_module
        self.wrapped = maybe_compile(self.wrapped, cfg.compile)  # same parameters; compiled on the first step

        # hooks run on rank 0 only; *when* to evaluate depends on the config alone, so every rank takes part in the
        # same collectives whether or not it holds hooks (an evaluation only rank 0 entered hung the job)
        self.hooks: list[EvalHook] = list(hooks or []) if self.is_main else []
        if cfg.eval.retrieval is not None and hooks is None:
            raise ConfigError(
                "eval.retrieval is configured but no hooks were passed: use "
                "train(cfg, out, hooks=radfinder.eval.hooks.hooks_for(cfg)) (the CLI does this)"
            )
        self.start_step = 0
        self.last_checkpoint: Path | None = None
        self.snippets_dropped = 0  # snippets whose cell fell outside their scan's grid, all ranks, this process's run
        self._dropped_local = 0
        self._epoch_cache: tuple[int, Any] | None = None
        self._prepare_out_dir(resume)
        # distinct dropout masks per rank; restored from the checkpoint when resuming
        if self.start_step == 0:
            torch.manual_seed(cfg.seed + 1000003 * self.rank)
        show = cfg.logging.progress if show_progress is None else show_progress
        self.logger = RunLogger(self.out_dir, enabled=self.is_main, tensorboard=cfg.logging.tensorboard,
                                tb_every=cfg.logging.log_every, progress=show, start_step=self.start_step,
                                total_steps=self.end_step)
        self._report_pairs()

    def _check_pairs_spec(self, feature_identity: list[dict]) -> None:
        """Pairs index depth cells of the grid of the spec they were mined for: refuse them on another grid."""
        for src, ident in zip(self.sources, feature_identity, strict=True):
            want = ident.get("spec_hash")
            if src.pairs_spec_hash is not None and want is not None and src.pairs_spec_hash != want:
                where = "the feature cache" if self.cfg.data.source == "features" else "the model's preprocessing"
                raise ConfigError(
                    f"{src.section.pairs}: pairs were mined for preprocessing spec {src.pairs_spec_hash}, but {where} "
                    f"of dataset {src.name!r} uses spec {want}; mine the pairs again with that spec")

    def pairs_summary(self) -> dict[str, Any]:
        """Snippet pairs per dataset (read, kept, dropped and why) plus those dropped during training."""
        return {"datasets": {s.name: dict(s.pair_counts) for s in self.sources if s.section.pairs},
                "dropped_cell_outside_grid": self.snippets_dropped}

    def _report_pairs(self) -> None:
        if not self.is_main:
            return
        summary = self.pairs_summary()
        _atomic_json(self.out_dir / "data.json", {"pairs": summary})
        for name, c in summary["datasets"].items():
            lost = c.get("missing_scan", 0) + c.get("empty_snippet", 0)
            if lost:
                self.logger.message(f"{name}: {lost} of {c['read']} snippet pairs dropped ({c['missing_scan']} "
                                    f"without their scan, {c['empty_snippet']} empty); {c['kept']} used")

    # ------------------------------------------------------------------------------------------ setup helpers
    def _prepare_out_dir(self, resume: bool) -> None:
        latest = latest_checkpoint(self.out_dir)
        if latest is not None and not resume:
            raise CheckpointError(f"{self.out_dir} already holds a training run (checkpoint {latest.name}); "
                                  "pass --resume to continue it or choose another output directory")
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            dump_config(self.cfg, self.out_dir / "config.yaml")
        if latest is None:
            return
        meta, tensors = read_state(latest)
        check_fingerprint(meta["fingerprint"], self.fingerprint, latest)
        load_into(latest, self.model, self.optimizer, tensors, meta)
        rt, rv = rng_of_rank(tensors, meta, self.rank, latest)
        restore_rng(rt, rv)
        self.start_step = int(meta["step"])
        self.last_checkpoint = latest

    # ------------------------------------------------------------------------------------------ data
    def epoch_order(self, epoch: int):
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, self.order.epoch(epoch))
        return self._epoch_cache[1]

    def micro_batches(self, step: int) -> list[MicroBatch]:
        """This rank's micro-batches of global step `step`."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        g0 = pos * self.global_batch
        lo = g0 + self.rank * self.local_batch
        base = epoch * self.order.epoch_size
        out = []
        micro = self.cfg.batch.micro
        for k in range(self.cfg.batch.accum):
            rows = range(lo + k * micro, lo + (k + 1) * micro)
            items = [(int(order[i, 0]), int(order[i, 1]), base + i) for i in rows]
            mb, dropped = make_micro_batch(items, self.sources, self.provider, seed=self.cfg.seed,
                                           n_questions=self.prompt_shape[0], n_variants=self.prompt_shape[1],
                                           max_snippets=self.cfg.data.max_snippets_per_scan,
                                           fields=self.batch_fields, label_names=self.settings.label_names)
            self._dropped_local += dropped
            out.append(mb.to(self.device, self.param_dtype))
        return out

    # ------------------------------------------------------------------------------------------ one step
    def compute_gradients(self, step: int, verify: bool = False) -> StepStats:
        """Zero the gradients and accumulate the (rank-reduced) gradient of step `step`."""
        self.optimizer.zero_grad(set_to_none=True)
        mbs = self.micro_batches(step)
        inputs = {"prompt_tokens": self.prompt_tokens, "prompt_shape": self.prompt_shape}
        return compute_step_gradients(self.step_module, self.wrapped, mbs, inputs, self.settings, self.trainable,
                                      verify=verify)

    def apply_update(self, step: int) -> tuple[float, float]:
        lr = lr_at(step, self.total_steps, self.warmup_steps, self.cfg.optim.lr, self.cfg.optim.min_lr)
        set_lr(self.optimizer, lr)
        clip = self.cfg.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, clip if clip else float("inf"), foreach=False)
        self.optimizer.step()
        return float(norm), lr

    # ------------------------------------------------------------------------------------------ outputs
    def save(self, steps_done: int) -> None:
        mine = capture_rng()
        if self.world > 1:
            every: list[Any] = [None] * self.world
            with collective_guard(f"gathering every rank's RNG state for the checkpoint of step {steps_done}"):
                dist.all_gather_object(every, mine)
        else:
            every = [mine]
        if self.is_main:
            state = {"epoch": steps_done / self.steps_per_epoch, "fingerprint": self.fingerprint,
                     "data_order": {"epoch": steps_done // self.steps_per_epoch,
                                    "step_in_epoch": steps_done % self.steps_per_epoch,
                                    "samples_seen": steps_done * self.global_batch, "seed": self.cfg.seed},
                     "scheduler": {"kind": "warmup_cosine", "step": steps_done, "total_steps": self.total_steps,
                                   "warmup_steps": self.warmup_steps}}
            self.last_checkpoint = save_checkpoint(self.out_dir, steps_done, self.model, self.optimizer, state, every,
                                                   self.cfg.checkpoint.keep_last)
        with collective_guard(f"waiting for rank 0 to write the checkpoint of step {steps_done}"):
            barrier()

    def evaluate(self, steps_done: int) -> dict[str, float]:
        """Run the hooks on rank 0 (alone: no collective inside, see `local_only`) while the other ranks wait;
        every rank returns rank 0's results. Called on every rank at the same steps."""
        out: dict[str, float] = {}
        if self.is_main and self.hooks:
            ctx = EvalContext(self.model, steps_done, steps_done / self.steps_per_epoch, self.device, self.out_dir)
            state = torch.get_rng_state()  # hooks must not shift the training RNG stream
            with eval_mode(self.model), local_only():
                for hook in self.hooks:
                    out.update(hook(ctx))
            torch.set_rng_state(state)
        what = "sharing the evaluation results" if self.is_main else "waiting for rank 0's evaluation"
        with collective_guard(f"{what} after step {steps_done}"):
            return broadcast_from_main(out)

    # ------------------------------------------------------------------------------------------ loop
    def run(self) -> TrainResult:
        cfg = self.cfg
        t_start = time.perf_counter()
        fail = os.environ.get(FAIL_ENV)
        last_loss, last_eval, sps = None, {}, None
        samples, busy = 0, 0.0
        try:
            for step in range(self.start_step, self.end_step):
                if fail and fail == f"{self.rank}:{step}":
                    raise TrainingFailed(f"rank {self.rank}: injected failure at step {step} ({FAIL_ENV})")
                t0 = time.perf_counter()
                with collective_guard(f"the gradient exchange of step {step + 1}"):
                    self._dropped_local = 0
                    stats = self.compute_gradients(step)
                    dropped = self._sum_over_ranks(self._dropped_local)
                self.snippets_dropped += dropped
                gnorm, lr = self.apply_update(step)
                dt = time.perf_counter() - t0
                samples += stats.n_samples
                busy += dt
                done = step + 1
                t_now = float(self.model.criterion.t.detach())
                record = {
                    "step": done, "epoch": round(done / self.steps_per_epoch, 6), "loss": stats.loss,
                    **stats.terms, **stats.extras,
                    "lr": lr, "t": t_now, "b": float(self.model.criterion.b.detach()),
                    "logit_scale": math.exp(t_now), "grad_norm": gnorm,
                    "samples_per_s": stats.n_samples / dt if dt > 0 else None, "negatives": stats.negatives,
                    "snippets": stats.n_snippets, "labelled": stats.n_labelled, "snippets_dropped": dropped,
                }
                every = cfg.eval.every_steps
                if (every and done % every == 0) or (done == self.end_step and cfg.eval.at_end):
                    last_eval = self.evaluate(done)
                    record.update(last_eval)
                if step == self.start_step and getattr(self.model, "derived_from", None):
                    record["init_source"] = self.model.derived_from  # the released weights this run started from
                self.logger.step(record)
                last_loss = stats.loss
                if done % cfg.checkpoint.every_steps == 0 or (done == self.end_step and cfg.checkpoint.final):
                    self.save(done)
            sps = samples / busy if busy > 0 else None
            if self.is_main:
                _atomic_json(self.out_dir / "data.json", {"pairs": self.pairs_summary()})
        except BaseException as exc:
            if self.world > 1:  # say which rank went first; the others only see a broken collective
                print(f"rank {self.rank}/{self.world}: training failed: {type(exc).__name__}: {exc}", file=sys.stderr,
                      flush=True)
            raise
        finally:
            self.logger.close()
            if self.owns_group:
                cleanup()
        return TrainResult(self.out_dir, self.end_step, self.total_steps, self.end_step / self.steps_per_epoch,
                           last_loss, self.last_checkpoint, time.perf_counter() - t_start, sps, last_eval,
                           self.pairs_summary())

    def _sum_over_ranks(self, n: int) -> int:
        if self.world == 1:
            return int(n)
        t = torch.tensor([int(n)], dtype=torch.int64, device=self.device)
        dist.all_reduce(t)
        return int(t.item())


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False, *, hooks: list[EvalHook] | None = None,
          show_progress: bool | None = None) -> TrainResult:
    """Train per `cfg`, writing logs and checkpoints to `out_dir`; with `resume`, continue its latest checkpoint.

    Under torchrun every process calls this; rank 0 writes the outputs.
    """
    return Trainer(cfg, out_dir, resume=resume, hooks=hooks, show_progress=show_progress).run()
