"""Run outputs written by rank 0: `log.jsonl` (one line per optimizer step), TensorBoard events, progress bar."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any


def truncate_log(path: Path, keep_through_step: int) -> None:
    """Drop lines logged after `keep_through_step` (a killed run may have logged past its last checkpoint)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= keep_through_step:
                kept.append(line)
        except json.JSONDecodeError:
            break  # a torn last line from the kill
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(k + "\n" for k in kept))
    tmp.replace(path)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class RunLogger:
    """No-op on ranks other than 0 (enabled=False)."""

    def __init__(self, out_dir: Path, *, enabled: bool, tensorboard: bool, tb_every: int, progress: bool,
                 start_step: int, total_steps: int):
        self.enabled = enabled
        self.path = out_dir / "log.jsonl"
        self.tb_every = tb_every
        self.writer = None
        self.bar = None
        if not enabled:
            return
        truncate_log(self.path, start_step)
        self.fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events of steps after the checkpoint from a killed run
            self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", file=sys.stderr,
                            dynamic_ncols=True, mininterval=0.5)

    def step(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self.fh.flush()
        step = int(record["step"])
        if self.writer is not None and (step % self.tb_every == 0 or any(k.startswith("eval/") for k in record)):
            for k, v in record.items():
                if isinstance(v, int | float) and k not in ("step",) and math.isfinite(float(v)):
                    tag = k if "/" in k else f"train/{k}"
                    self.writer.add_scalar(tag, float(v), step)
            self.writer.flush()
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", refresh=False)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if not self.enabled:
            return
        self.fh.close()
        if self.writer is not None:
            self.writer.close()
        if self.bar is not None:
            self.bar.close()
