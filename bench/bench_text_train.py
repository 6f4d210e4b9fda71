"""Cost of a real demo training step for each text-tower training mode (frozen, top1, top2, lora, all).

Needs a demo folder that went at least to its features stage (`radfinder demo --out DIR --stop-after features`).
Each case builds the demo's own trainer (its config, cohort, features, batch) with `text_train` set to the mode and
times steps (gradient + update, no checkpoints) in wall-clock and in CPU time of the process (on a shared machine the
CPU time is the comparable figure; with one thread it is what the wall time would be on an idle core). Step 0 runs
cold (every report, snippet and prompt new) and then again (all cached, as in every epoch after the first: the steady
state). The projection of the demo's schedule is warm x steps + (cold - warm) x steps of the first epoch. Threads: 1
(the demo trains on one thread) and, for the modes given with --threads2, 2 (compare their wall times on an
otherwise idle machine only).

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
        wall, cpu = [], []
        # step 0 cold (every text new), then the same step again: its texts are cached now, as in every epoch
        # after the first, so the repeats are the steady state; (cold - warm) is what one first-epoch step adds
        for _ in range(1 + steady):
            t, c = time.perf_counter(), time.process_time()
            tr.compute_gradients(0)
            tr.apply_update(0)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    warm_cpu, warm_wall = sum(cpu[1:]) / steady, sum(wall[1:]) / steady
    projected = warm_cpu * tr.end_step + (cpu[0] - warm_cpu) * tr.steps_per_epoch
    return {"mode": mode, "threads": threads, "setup_s": round(setup, 1), "total_steps": tr.end_step,
            "steps_per_epoch": tr.steps_per_epoch, "cold_step_cpu_s": round(cpu[0], 2),
            "warm_step_cpu_s": round(warm_cpu, 2), "cold_step_wall_s": round(wall[0], 2),
            "warm_step_wall_s": round(warm_wall, 2), "projected_train_cpu_s": round(projected),
            "trainable": len(tr.trainable_names)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, nargs="?", default=Path("demo-out"))
    ap.add_argument("--modes", default="frozen,top1,top2,lora,all")
    ap.add_argument("--threads2", default="")
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
