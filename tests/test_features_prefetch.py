"""The GPU-path helpers on CPU (the CUDA tests run only where a device exists): prefetching loader, overlapped
window encoding, torch.compile switch, FLOP counting and matmul throughput."""

from __future__ import annotations

import threading
import time

import nibabel as nib
import numpy as np
import pytest
import torch

from radfinder.features import FeatureStore, extract_features
from radfinder.features.extract import ExtractItem, encode_windows
from radfinder.features.prefetch import encode_windows_overlapped, prefetch
from radfinder.models import build_window_encoder, resolve_model_config
from radfinder.models.accel import autocast, forward_flops, fused_attention, matmul_tflops, maybe_compile
from radfinder.models.histogram import HistogramWindowEncoder
from radfinder.preprocess import resolve_spec


def _slow_square(x: int) -> int:
    time.sleep(0.01 * (5 - x % 5))  # later items finish first: order must still hold
    if x == 3:
        raise ValueError("bad item 3")
    return x * x


@pytest.mark.parametrize(("depth", "workers"), [(0, 1), (1, 1), (3, 2)])
def test_prefetch_keeps_order_and_defers_errors(depth, workers):
    got = []
    for item, pending in prefetch(range(8), _slow_square, depth=depth, workers=workers):
        try:
            got.append((item, pending.get()))
        except ValueError as exc:
            got.append((item, str(exc)))
    assert got == [(i, i * i) if i != 3 else (3, "bad item 3") for i in range(8)]


def test_prefetch_runs_ahead_in_a_background_thread():
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def work(x):
        with lock:
            seen.append((x, threading.current_thread().name))
        return x

    it = prefetch(range(4), work, depth=2)
    first, pending = next(it)
    assert first == 0 and pending.get() == 0
    deadline = time.monotonic() + 60  # the background thread gets there on its own; a loaded machine only delays it
    while not {x for x, _ in seen} >= {0, 1, 2} and time.monotonic() < deadline:
        time.sleep(0.01)
    assert {x for x, _ in seen} >= {0, 1, 2}  # two items ahead of the consumer, which has not asked for them
    assert all(name.startswith("rf-prefetch") for _, name in seen)
    assert [x for x, _ in it] == [1, 2, 3]


def test_overlapped_encoding_equals_plain_loop_on_cpu():
    torch.manual_seed(0)
    enc = build_window_encoder(resolve_model_config("tiny").window_encoder).eval()
    windows = np.random.default_rng(0).random((5, 1, *enc.window_size), dtype=np.float32).astype(np.float16)
    ref = encode_windows(enc, windows, batch_size=2, device=torch.device("cpu"))
    got = encode_windows_overlapped(enc, windows, batch_size=2, device="cpu")
    for a, b in zip(ref, got, strict=True):
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="no windows"):
        encode_windows_overlapped(enc, windows[:0], batch_size=2, device="cpu")


def _scan(path, seed):
    rng = np.random.default_rng(seed)
    arr = rng.integers(-1000, 1500, (90, 80, 40)).astype(np.int16)
    nib.save(nib.Nifti1Image(arr, np.diag([1.5, 1.5, 4.0, 1.0])), str(path))
    return path


def test_extraction_with_prefetch_writes_the_same_cache(tmp_path):
    items = [ExtractItem(f"s{i}", str(_scan(tmp_path / f"s{i}.nii.gz", i))) for i in range(3)]
    items.append(ExtractItem("missing", str(tmp_path / "missing.nii.gz")))
    enc = HistogramWindowEncoder()
    stores = {}
    for depth in (0, 2):
        desc = {"name": "hist", "hash": "h"}
        store = FeatureStore(tmp_path / f"cache{depth}", resolve_spec("radfinder"), desc, enc.feature_dim)
        summary = extract_features(items, enc, store, batch_size=3, shard=(0, 1), show_progress=False,
                                   prefetch_depth=depth)  # fmt: skip
        assert sorted(summary.written) == ["s0", "s1", "s2"] and list(summary.failed) == ["missing"]
        again = extract_features(items, enc, store, batch_size=3, shard=(0, 1), show_progress=False,
                                 prefetch_depth=depth)  # fmt: skip
        assert sorted(again.skipped) == ["s0", "s1", "s2"] and not again.written
        stores[depth] = store
    for key in ("s0", "s1", "s2"):
        a, b = stores[0].read(key), stores[2].read(key)
        for name in ("cls", "patch_average", "axis2", "affine"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_maybe_compile_switch_and_same_outputs():
    torch.manual_seed(0)
    enc = build_window_encoder(resolve_model_config("tiny").window_encoder).eval()
    assert maybe_compile(enc, False) is enc
    compiled = maybe_compile(enc, True, backend="eager")
    assert compiled is not enc and {id(p) for p in compiled.parameters()} == {id(p) for p in enc.parameters()}
    x = torch.rand(2, 1, *enc.window_size)
    with torch.inference_mode():
        a, b = enc(x), compiled(x)
    torch.testing.assert_close(a.axis2, b.axis2)


def test_train_compile_flag_reaches_the_training_step(tmp_path, monkeypatch):
    # Tracing the whole training step takes minutes on CPU; the compiled module itself is checked above. Here: the
    # config flag (`--set compile=true`) is what decides whether the step goes through torch.compile.
    from radfinder.train import load_train_config
    from radfinder.train import trainer as trainer_mod
    from radfinder.train.toy import make_toy_cohort, toy_train_config

    cohort = make_toy_cohort(tmp_path / "toy", 12, seed=5)
    calls = []
    monkeypatch.setattr(trainer_mod, "maybe_compile", lambda module, enabled: calls.append(enabled) or module)
    for flag in (False, True):
        cfg = toy_train_config(cohort).model_copy(update={"compile": flag})
        tr = trainer_mod.Trainer(cfg, tmp_path / f"run{flag}", show_progress=False)
        assert tr.wrapped is tr.step_module
    assert calls == [False, True]
    assert load_train_config(None, ["compile=true"]).compile is True


def test_flop_counter_and_matmul_rate_on_cpu():
    lin = torch.nn.Linear(64, 32)
    x = torch.rand(10, 64)
    assert forward_flops(lambda: lin(x)) == 2 * 10 * 64 * 32
    r = matmul_tflops("cpu", n=128, seconds=0.05)
    assert r["dtype"] == "float32" and r["n"] == 128 and r["tflops"] > 0
    with fused_attention("cpu"), autocast("cpu"):  # both no-ops on CPU
        assert not torch.is_autocast_enabled()


@pytest.mark.cuda
def test_cuda_overlapped_encoding_fused_attention_and_bf16():
    torch.manual_seed(0)
    dev = torch.device("cuda")
    enc = build_window_encoder(resolve_model_config("tiny").window_encoder).eval().to(dev)
    windows = np.random.default_rng(0).random((9, 1, *enc.window_size), dtype=np.float32).astype(np.float16)
    ref = encode_windows(enc, windows, batch_size=4, device=dev)
    with fused_attention(dev):  # fails if SDPA would fall back to the unfused kernel
        got = encode_windows_overlapped(enc, windows, batch_size=4, device=dev)
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=0)  # same kernels, same batches: bitwise equal
    r = matmul_tflops(dev, n=2048, seconds=0.2)
    assert r["dtype"] == "bfloat16" and r["tflops"] > 1
