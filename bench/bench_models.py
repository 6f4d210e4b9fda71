"""Window-encoder throughput and peak memory on CPU (`tiny`, `radfinder-vitl`, the ASTRA-sized `resnet3d-152`, the
`histogram` and `filterbank` weight-free encoders, and `light3d`, the shipped pretrained-synthetic encoder), and
feature-cache read speed.

Encoder: each preset's window encoder alone (the part that sees every 128 x 128 x 32 window) is built once in a
fresh subprocess, warmed up with one batch, then timed over a few batches of random windows under
`torch.inference_mode`. Reported: windows per second and peak resident memory (VmHWM) above the resident memory
right after the imports, beside the weights' own size. ViT-L (about 300 M parameters) runs batch 1, twice.

Cache: N synthetic records of a CT-RATE-sized scan (window grid 3 x 3 x 4, ViT-L width 1080, fp16) are written
with `FeatureStore` (zstd-compressed safetensors) and read back; the baseline is `np.load` of the same arrays
saved as an uncompressed .npz. Reported: scans per second and the size on disk.

Device (`--device cuda`, optional `--compile`): the encoders run under bf16 autocast with attention restricted to
the fused SDPA kernels (`models.accel.fused_attention`), bigger batches, and a training step (the `radfinder-vitl`
combiner and heads on a toy feature cache, bf16 autocast, AdamW) is timed too. Every child also measures the
device's dense matmul throughput (bf16 8192^3 on CUDA, fp32 1024^3 on CPU) and counts the FLOPs of its own work
(`torch.utils.flop_counter`), so each line reports the achieved fraction of that throughput measured in the same
process. On CPU the same fractions are printed against fp32 matmul.

Usage: python bench/bench_models.py [--device cuda] [--compile]   (or `make bench`). Prints ratios; asserts
nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# label -> model preset, config overrides, batch, batches. "resnet3d-152" is the ASTRA architecture at random
# init (the same cost as the pretrained weights); "histogram" is the CPU demo's weight-free encoder.
ENCODERS = {
    "tiny": {"preset": "tiny", "batch": 4, "batches": 3},
    "radfinder-vitl": {"preset": "radfinder-vitl", "batch": 1, "batches": 2},
    "resnet3d-152": {
        "preset": "tiny",
        "set": ["window_encoder.kind=resnet3d", "window_encoder.embed_dim=2048"],
        "batch": 2,
        "batches": 2,
    },
    "histogram": {
        "preset": "tiny",
        "set": ["window_encoder.kind=histogram", "window_encoder.embed_dim=80"],
        "batch": 8,
        "batches": 3,
    },
    # the weight-free multi-scale Hessian filter bank (models/filterbank.py; 130 features at the demo spacing)
    "filterbank": {
        "preset": "tiny",
        "set": ["window_encoder.kind=filterbank", "window_encoder.embed_dim=130"],
        "batch": 16,
        "batches": 3,
    },
    # the shipped pretrained-synthetic encoder's architecture (its weights cost the same as these)
    "light3d": {
        "preset": "tiny",
        "set": ["window_encoder.kind=light3d", "window_encoder.embed_dim=128", "window_encoder.feature_dim=192",
                "window_encoder.options={widths: [32, 64, 128], blocks: [0, 2, 3]}"],
        "batch": 16,
        "batches": 3,
    },
}
# On CUDA: the transformer encoders with batches that fill the device (the histogram encoder is a CPU tool).
CUDA_ENCODERS = {
    "tiny": {"preset": "tiny", "batch": 64, "batches": 20},
    "radfinder-vitl": {"preset": "radfinder-vitl", "batch": 16, "batches": 10},
    "resnet3d-152": {**ENCODERS["resnet3d-152"], "batch": 16, "batches": 5},
}
N_RECORDS = 40
GRID, DEPTH_TOKENS, WIDTH = (3, 3, 4), 8, 1080


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def run_encoder(label: str, batch: int, batches: int, device: str = "cpu", compile: bool = False) -> dict:
    import torch

    from radfinder.models import build_window_encoder, resolve_model_config
    from radfinder.models.accel import (
        autocast,
        forward_flops,
        fused_attention,
        matmul_tflops,
        maybe_compile,
        synchronize,
    )

    dev = torch.device(device)
    base = _vm("VmRSS")
    torch.manual_seed(0)
    t0 = time.perf_counter()
    spec = (CUDA_ENCODERS if dev.type == "cuda" else ENCODERS)[label]
    encoder = build_window_encoder(resolve_model_config(spec["preset"], spec.get("set", [])).window_encoder).eval()
    encoder = encoder.to(dev)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in encoder.parameters())
    fwd = maybe_compile(encoder, compile)
    x = torch.rand(batch, 1, *encoder.window_size, device=dev)
    with torch.inference_mode(), autocast(dev), fused_attention(dev):
        flops = forward_flops(lambda: encoder(x)) / batch  # also the eager warm-up
        t0 = time.perf_counter()
        fwd(x)  # warm-up (and compilation)
        synchronize(dev)
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(batches):
            feats = fwd(x)
        synchronize(dev)
        seconds = time.perf_counter() - t0
    assert feats.cls.shape == (batch, encoder.feature_dim)
    peak = matmul_tflops(dev)
    wps = batch * batches / seconds
    out = {
        "encoder": label,
        "device": _device_name(dev),
        "compile": compile,
        "parameters": n_params,
        "weights_mb": n_params * 4 / 2**20,
        "build_s": build_s,
        "warmup_s": warm_s,
        "batch": batch,
        "windows": batch * batches,
        "seconds": seconds,
        "windows_per_s": wps,
        "gflop_per_window": flops / 1e9,
        "achieved_tflops": wps * flops / 1e12,
        "matmul_tflops": peak["tflops"],
        "matmul_dtype": peak["dtype"],
        "fraction_of_matmul": wps * flops / 1e12 / peak["tflops"],
        "peak_mb_above_imports": _vm("VmHWM") - base,
        "threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def _device_name(dev) -> str:
    import platform

    import torch

    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.processor() or 'unknown'})"


def run_train(device: str, compile: bool, steps: int = 5) -> dict:
    """Training steps of the `radfinder-vitl` combiner and heads on a toy feature cache (bf16 autocast on CUDA)."""
    import torch

    from radfinder.models.accel import forward_flops, fused_attention, matmul_tflops, synchronize
    from radfinder.train.toy import make_toy_cohort, toy_train_config
    from radfinder.train.trainer import Trainer

    dev = torch.device(device)
    overrides = {"window_encoder": {"depth": 1},  # training from a cache never runs the window encoder
                 "text": {"source": "minilm", "hidden_size": 384, "pooling": "mean", "lora": None, "max_length": 512}}
    micro = 16 if dev.type == "cuda" else 4
    with tempfile.TemporaryDirectory() as tmp:
        cohort = make_toy_cohort(Path(tmp) / "toy", 128, seed=0, feature_dim=1080, text_tower=False)
        cohort["model_overrides"] = overrides
        cfg = toy_train_config(cohort, model={"init": "radfinder-vitl", "overrides": overrides, "text_train": "frozen"},
                               batch={"micro": micro, "accum": 1})
        cfg = cfg.model_copy(update={"device": str(dev), "precision": "auto", "compile": compile})
        tr = Trainer(cfg, Path(tmp) / "run", show_progress=False)
        with fused_attention(dev):
            t0 = time.perf_counter()
            tr.compute_gradients(0)  # warm-up (and compilation)
            tr.apply_update(0)
            synchronize(dev)
            warm_s = time.perf_counter() - t0
            flops = forward_flops(lambda: tr.compute_gradients(1))  # forward + backward of one step
            t0 = time.perf_counter()
            for s in range(2, 2 + steps):
                tr.compute_gradients(s)
                tr.apply_update(s)
            synchronize(dev)
            seconds = time.perf_counter() - t0
        batch = tr.global_batch
    peak = matmul_tflops(dev)
    sps = steps * batch / seconds
    return {
        "device": _device_name(dev),
        "compile": compile,
        "precision": "bf16 autocast" if dev.type == "cuda" else "fp32",
        "batch": batch,
        "steps": steps,
        "warmup_s": warm_s,
        "samples_per_s": sps,
        "gflop_per_sample": flops / batch / 1e9,
        "achieved_tflops": sps * flops / batch / 1e12,
        "matmul_tflops": peak["tflops"],
        "fraction_of_matmul": sps * flops / batch / 1e12 / peak["tflops"],
    }


def _record_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "cls": rng.normal(size=(*GRID, WIDTH)).astype(np.float16),
        "patch_average": rng.normal(size=(*GRID, WIDTH)).astype(np.float16),
        "axis2": rng.normal(size=(*GRID, DEPTH_TOKENS, WIDTH)).astype(np.float16),
        "affine": np.diag([0.75, 0.75, 3.0, 1.0]),
    }


def run_cache(root: str) -> dict:
    from radfinder.features import FeatureRecord, FeatureStore
    from radfinder.preprocess import PreprocessSpec

    root = Path(root)
    rng = np.random.default_rng(0)
    store = FeatureStore(root / "cache", PreprocessSpec(), {"name": "bench", "hash": "bench"}, WIDTH)
    plain = root / "plain"
    plain.mkdir()
    keys = [f"scan{i:04d}" for i in range(N_RECORDS)]
    t0 = time.perf_counter()
    for key in keys:
        arrays = _record_arrays(rng)
        store.write(FeatureRecord(key=key, **arrays))
        np.savez(plain / f"{key}.npz", **arrays)
    write_s = time.perf_counter() - t0
    out = {"records": N_RECORDS, "write_both_s": write_s}
    for name, read in (
        ("store", lambda k: store.read(k).axis2),
        ("npload", lambda k: np.load(plain / f"{k}.npz")["axis2"]),
    ):
        for k in keys[:3]:  # warm the page cache equally for both
            read(k)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for k in keys:
                read(k)
            best = min(best, time.perf_counter() - t0)
        out[f"{name}_scans_per_s"] = N_RECORDS / best
    out["store_mb_per_scan"] = sum(p.stat().st_size for p in (root / "cache").glob("*.rff")) / N_RECORDS / 2**20
    out["npz_mb_per_scan"] = sum(p.stat().st_size for p in plain.glob("*.npz")) / N_RECORDS / 2**20
    return out


def _child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"benchmark child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _print_encoder(label: str, r: dict) -> None:
    mem = f"peak +{r['peak_mb_above_imports']:.0f} MB"
    if "cuda_peak_mb" in r:
        mem = f"CUDA peak {r['cuda_peak_mb']:.0f} MB"
    print(
        f"window encoder {label:<15} {r['parameters'] / 1e6:8.1f} M params  batch {r['batch']}: "
        f"{r['windows_per_s']:8.3f} windows/s ({r['windows']} windows in {r['seconds']:.2f} s, "
        f"{r['threads']} threads); {mem} (weights {r['weights_mb']:.0f} MB); build {r['build_s']:.1f} s; "
        f"{r['gflop_per_window']:.1f} GFLOP/window = {r['achieved_tflops']:.3f} TFLOP/s = "
        f"{r['fraction_of_matmul']:.2f} of the {r['matmul_dtype']} matmul rate measured in the same process "
        f"({r['matmul_tflops']:.3f} TFLOP/s)",
        flush=True,
    )


def main_device(device: str, compile: bool) -> int:
    enc = {}
    for label, cfg in CUDA_ENCODERS.items():
        args = ["encoder", label, str(cfg["batch"]), str(cfg["batches"]), device] + (["--compile"] if compile else [])
        enc[label] = _child(*args)
        _print_encoder(label, enc[label])
    tr = _child("train", device, *(["--compile"] if compile else []))
    print(
        f"training step (radfinder-vitl combiner + heads, {tr['precision']}, batch {tr['batch']}, compile "
        f"{tr['compile']}): {tr['samples_per_s']:.1f} samples/s, {tr['gflop_per_sample']:.2f} GFLOP/sample = "
        f"{tr['achieved_tflops']:.3f} TFLOP/s = {tr['fraction_of_matmul']:.3f} of the matmul rate "
        f"({tr['matmul_tflops']:.1f} TFLOP/s); first step {tr['warmup_s']:.1f} s"
    )
    print(f"device: {enc['tiny']['device']}")
    print(json.dumps({"encoders": enc, "train": tr}))
    return 0


def main() -> int:
    enc = {}
    for label, cfg in ENCODERS.items():
        r = enc[label] = _child("encoder", label, str(cfg["batch"]), str(cfg["batches"]))
        _print_encoder(label, r)
    t, v = enc["tiny"], enc["radfinder-vitl"]
    print(
        f"ratio vitl/tiny: {t['windows_per_s'] / v['windows_per_s']:.0f}x slower per window, "
        f"{v['peak_mb_above_imports'] / t['peak_mb_above_imports']:.1f}x the peak memory "
        f"({v['parameters'] / t['parameters']:.0f}x the parameters)"
    )
    h, r = enc["histogram"], enc["resnet3d-152"]
    print(
        f"ratio resnet3d-152/histogram: {h['windows_per_s'] / r['windows_per_s']:.0f}x slower per window; the demo's "
        f"2,948 windows would take {2948 / r['windows_per_s'] / 60:.0f} min (histogram: "
        f"{2948 / h['windows_per_s']:.0f} s)"
    )
    g = enc["light3d"]
    print(
        f"ratio light3d/histogram: {g['windows_per_s'] / h['windows_per_s']:.2f} (light3d {g['windows_per_s']:.1f} "
        f"windows/s, target >= 40 on 2 idle cores); the demo's 2,948 windows take {2948 / g['windows_per_s']:.0f} s "
        f"(histogram {2948 / h['windows_per_s']:.0f} s)"
    )
    fb = enc["filterbank"]
    print(
        f"ratio filterbank/histogram: {fb['windows_per_s'] / h['windows_per_s']:.2f} (filterbank "
        f"{fb['windows_per_s']:.1f} windows/s, target >= 40 on 2 idle cores); the demo's 2,948 windows take "
        f"{2948 / fb['windows_per_s']:.0f} s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        c = _child("cache", tmp)
    print(
        f"feature cache ({N_RECORDS} scans, grid {GRID}, width {WIDTH}, fp16): FeatureStore.read "
        f"{c['store_scans_per_s']:.0f} scans/s vs np.load(.npz) {c['npload_scans_per_s']:.0f} scans/s "
        f"(ratio {c['store_scans_per_s'] / c['npload_scans_per_s']:.2f}); on disk {c['store_mb_per_scan']:.2f} MB "
        f"vs {c['npz_mb_per_scan']:.2f} MB per scan (ratio {c['store_mb_per_scan'] / c['npz_mb_per_scan']:.2f})"
    )
    print(json.dumps({"encoders": enc, "cache": c}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "encoder":
        dev = sys.argv[5] if len(sys.argv) > 5 and not sys.argv[5].startswith("--") else "cpu"
        print(json.dumps(run_encoder(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), dev, "--compile" in sys.argv)))
    elif len(sys.argv) > 1 and sys.argv[1] == "train":
        print(json.dumps(run_train(sys.argv[2], "--compile" in sys.argv)))
    elif len(sys.argv) > 1 and sys.argv[1] == "cache":
        print(json.dumps(run_cache(sys.argv[2])))
    else:
        ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        ap.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
        ap.add_argument("--compile", action="store_true", help="torch.compile the encoders and the training step")
        args = ap.parse_args()
        if args.device == "cpu" and not args.compile:
            sys.exit(main())
        sys.exit(main_device(args.device, args.compile))
