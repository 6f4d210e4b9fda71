"""Training throughput and memory on cached features, and the wall time of one demo epoch.

Cases (each in a fresh subprocess, CPU, fp32, one thread per process so runs on a shared machine are comparable):
* tiny:  the `tiny` preset (72-d features, 2-layer combiner) with the bundled MiniLM text tower (frozen).
* vitl:  the official-size combiner and heads (`radfinder-vitl`: 1080-d, 4 layers, 2048-wide heads) with MiniLM as a
         small text tower (frozen). The window encoder is cut to one layer: training from a cache never runs it.
Features are random records (toy cohort, grids of 1-2 x 1-2 x 1-3 windows) written to a temp dir. We report
samples/s over the timed steps (after one warm-up step) and the peak resident memory growth during those steps
per sample of the step, with the ratio vitl / tiny. Then one epoch of configs/train/demo.yaml when its inputs
exist (`radfinder demo --stop-after features`), else a skip message.

Usage: python bench/bench_train.py   (or `make bench`). Prints numbers and ratios; asserts nothing about speed.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = 3
CASES = {
    "tiny": {"feature_dim": 72, "init": "tiny", "overrides": {}, "micro": 8, "accum": 2},
    "vitl": {"feature_dim": 1080, "init": "radfinder-vitl",
             "overrides": {"window_encoder": {"depth": 1},
                           "text": {"source": "minilm", "hidden_size": 384, "pooling": "mean", "lora": None,
                                    "max_length": 512}},
             "micro": 4, "accum": 2},
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(name: str) -> None:
    import torch

    from radfinder.train.toy import make_toy_cohort, toy_train_config
    from radfinder.train.trainer import Trainer

    torch.set_num_threads(1)
    case = CASES[name]
    with tempfile.TemporaryDirectory() as tmp:
        cohort = make_toy_cohort(Path(tmp) / "toy", 64, seed=0, feature_dim=case["feature_dim"], text_tower=False)
        cohort["model_overrides"] = case["overrides"]
        cfg = toy_train_config(cohort, model={"init": case["init"], "overrides": case["overrides"],
                                              "text_train": "frozen"},
                               batch={"micro": case["micro"], "accum": case["accum"]})
        tr = Trainer(cfg, Path(tmp) / "run", show_progress=False)
        tr.compute_gradients(0)
        tr.apply_update(0)
        base = _rss_mb()
        t0 = time.perf_counter()
        for s in range(1, 1 + STEPS):
            tr.compute_gradients(s)
            tr.apply_update(s)
        dt = time.perf_counter() - t0
        batch = tr.global_batch
        trainable = sum(p.numel() for p in tr.trainable)
        print(json.dumps({"case": name, "samples_per_s": STEPS * batch / dt, "step_s": dt / STEPS,
                          "peak_growth_mb_per_sample": max(_rss_mb() - base, 0.0) / batch,
                          "peak_rss_mb": _rss_mb(), "batch": batch, "trainable_params": trainable}))


def demo_epoch() -> None:
    cfg_path = ROOT / "configs" / "train" / "demo.yaml"
    from radfinder.train import load_train_config

    cfg = load_train_config(cfg_path)
    ds = cfg.data.datasets[0]
    if not (Path(ds.features or "") / "cache.json").is_file() or not Path(cfg.model.init).is_dir():
        print(f"demo epoch: skipped, no demo inputs at {Path(ds.root).parent} "
              "(run `radfinder demo --stop-after features` first)")
        return
    import torch

    from radfinder.train import train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = cfg.model_copy(update={"schedule": cfg.schedule.model_copy(update={"epochs": 1.0}),
                                     "eval": cfg.eval.model_copy(update={"at_end": False, "retrieval": None})})
        t0 = time.perf_counter()
        res = train(cfg, Path(tmp) / "run", show_progress=False)
        print(f"demo epoch: {res.steps} steps in {time.perf_counter() - t0:.1f} s wall "
              f"({res.samples_per_s:.1f} samples/s during steps)")


def main() -> None:
    if len(sys.argv) > 1:
        run_case(sys.argv[1]) if sys.argv[1] in CASES else demo_epoch()
        return
    results = {}
    for name in CASES:
        out = subprocess.run([sys.executable, __file__, name], capture_output=True, text=True, cwd=ROOT)
        line = [x for x in out.stdout.splitlines() if x.startswith("{")]
        if out.returncode or not line:
            print(f"{name}: failed\n{out.stderr[-3000:]}")
            continue
        results[name] = json.loads(line[-1])
        r = results[name]
        print(f"{name:5s}: {r['samples_per_s']:7.2f} samples/s ({r['step_s']:.2f} s/step of {r['batch']}), "
              f"peak RSS growth {r['peak_growth_mb_per_sample']:.2f} MB/sample, {r['trainable_params'] / 1e6:.2f} M "
              "trainable")
    if len(results) == 2:
        a, b = results["tiny"], results["vitl"]
        print(f"ratio vitl/tiny: throughput {b['samples_per_s'] / a['samples_per_s']:.3f}x, "
              f"memory per sample {b['peak_growth_mb_per_sample'] / max(a['peak_growth_mb_per_sample'], 1e-9):.2f}x")
    subprocess.run([sys.executable, __file__, "demo"], cwd=ROOT)


if __name__ == "__main__":
    main()
