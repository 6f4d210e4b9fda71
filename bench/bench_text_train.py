"""Cost of a real demo training step for each text-tower training mode (frozen, top1, top2, lora, all).

Needs a demo folder that went at least to its features stage (`radfinder demo --out DIR --stop-after features`).
Each case builds the demo's own trainer (its config, cohort, features, batch) with `text_train` set to the mode and
times steps (gradient + update, no checkpoints): the first epoch (its steps encode every report for the first time,
which fills the top-k cache) and then steps of the second epoch (the steady state). Threads: 1 (the demo trains on
one thread) and, for the modes given with --threads2, 2.

Usage: python bench/bench_text_train.py [DIR (default demo-out)] [--modes frozen,top1,top2,lora,all]
       [--threads2 top2,all]
       [--steady 3]
Prints seconds per step and the projected training time of the demo's schedule; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def run_case(out: Path, mode: str, threads: int, steady: int) -> dict:
    import torch

    from radfinder.data.ctrate import load_ctrate
    from radfinder.demo.config import DemoSettings, train_config_dict
    from radfinder.train.config import TrainConfig
    from radfinder.train.trainer import Trainer

    torch.set_num_threads(threads)
    n_train = len(load_ctrate(out / "cohort", split="train", mode="first_all"))
    s = DemoSettings(text_train=mode, progress=False, device="cpu")
    cfg = TrainConfig.model_validate(train_config_dict(s, out, out / "encoder-standardized", n_train))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        tr = Trainer(cfg, Path(tmp) / "run", show_progress=False)
        setup = time.perf_counter() - t0
        per_epoch = tr.steps_per_epoch
        times = []
        for step in range(per_epoch + steady):
            t = time.perf_counter()
            tr.compute_gradients(step)
            tr.apply_update(step)
            times.append(time.perf_counter() - t)
    first, later = times[:per_epoch], times[per_epoch:]
    step_s = sum(later) / len(later)
    total = sum(first) + step_s * max(tr.end_step - per_epoch, 0)
    return {"mode": mode, "threads": threads, "setup_s": round(setup, 1), "steps_per_epoch": per_epoch,
            "total_steps": tr.end_step, "first_epoch_s": round(sum(first), 1), "steady_step_s": round(step_s, 2),
            "projected_train_s": round(total, 0), "trainable": len(tr.trainable_names)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, nargs="?", default=Path("demo-out"))
    ap.add_argument("--modes", default="frozen,top1,top2,lora,all")
    ap.add_argument("--threads2", default="top2")
    ap.add_argument("--steady", type=int, default=3)
    a = ap.parse_args()
    if not (a.out / "features" / "cache.json").is_file():
        print(f"skipped: {a.out} holds no demo features (run `radfinder demo --out {a.out} --stop-after features`)")
        return
    cases = [(m, 1) for m in a.modes.split(",") if m] + [(m, 2) for m in a.threads2.split(",") if m]
    for mode, threads in cases:
        print(json.dumps(run_case(a.out, mode, threads, a.steady)), flush=True)


if __name__ == "__main__":
    main()
