"""Running models fast on an accelerator: fused attention, optional `torch.compile`, and the measurements the
benchmarks report (dense matmul throughput of the device, FLOPs of a forward pass).

Attention in every transformer here goes through `F.scaled_dot_product_attention`. On CUDA under bf16 autocast
PyTorch then picks a fused kernel (FlashAttention, memory-efficient or cuDNN) by itself; `fused_attention()`
forbids the unfused "math" fallback, so a shape or dtype that would silently lose the fused kernel fails loudly
instead (used by the benchmark; a no-op on CPU, where only the math and flash-CPU kernels exist).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn


@contextlib.contextmanager
def fused_attention(device: torch.device | str) -> Iterator[None]:
    """Inside, SDPA on CUDA may only use fused kernels (flash, memory-efficient, cuDNN)."""
    if torch.device(device).type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    if hasattr(SDPBackend, "CUDNN_ATTENTION"):
        backends.append(SDPBackend.CUDNN_ATTENTION)
    with sdpa_kernel(backends):
        yield


def autocast(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (weights stay fp32, matmuls and attention run in bf16); nothing on CPU."""
    dev = torch.device(device)
    if dev.type == "cuda" and enabled:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def maybe_compile(module: nn.Module, enabled: bool, *, backend: str = "inductor", mode: str | None = None):
    """`torch.compile(module)` when `enabled` (the returned module shares parameters with `module`), else `module`.

    Compilation happens lazily on the first call and again for every new input shape, so it pays off for long
    runs with fixed shapes (training steps, feature extraction with full batches), not for a few calls.
    """
    if not enabled:
        return module
    return torch.compile(module, backend=backend, mode=mode, dynamic=False)


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device | str, *, n: int | None = None, seconds: float = 1.0) -> dict:
    """Dense matmul throughput measured now: bf16 n x n x n on CUDA (default n 8192), fp32 on CPU (n 1024).

    Returns {"tflops", "dtype", "n", "iters"}; the best of a few timed rounds after a warm-up, so it is the
    device's achievable dense rate in this process, the denominator of an "achieved fraction".
    """
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    n = n or (8192 if cuda else 1024)
    dtype = torch.bfloat16 if cuda else torch.float32
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    flops = 2.0 * n**3
    a @ b  # warm-up (cuBLAS heuristics, thread pools)
    synchronize(dev)
    t0 = time.perf_counter()
    a @ b
    synchronize(dev)
    one = max(time.perf_counter() - t0, 1e-6)
    iters = max(1, min(200, int(seconds / 3 / one)))
    best = float("inf")
    for _ in range(3):
        synchronize(dev)
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        synchronize(dev)
        best = min(best, (time.perf_counter() - t0) / iters)
    return {"tflops": flops / best / 1e12, "dtype": str(dtype).replace("torch.", ""), "n": n, "iters": iters}


def forward_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call of `fn` (matmuls, convolutions, attention), counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())
