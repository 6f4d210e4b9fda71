"""`radfinder pretrain-encoder` under torchrun: two CPU processes (gloo) share the window cache and the steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


@pytest.mark.timeout(900)
def test_two_processes_pretrain_and_export_once(tmp_path):
    out = tmp_path / "run"
    over = ["data.cohort.studies=2", "data.cohort.workers=1", "encoder.widths=[8,16,32]", "encoder.blocks=[0,1,1]",
            "encoder.feature_dim=24", "schedule.batch=2", "schedule.epochs=1", "optim.warmup_steps=1",
            "checkpoint.every_steps=2", "threads=1"]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           "-m", "radfinder", "pretrain-encoder", "--config", "configs/pretrain/synthetic.yaml", "--out", str(out),
           "--json", *[x for o in over for x in ("--set", o)]]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=850, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # printed by rank 0 only
    windows = result["windows"]
    assert result["steps"] == max(1, windows // (2 * 2))  # one epoch of global batches of 2 x 2 windows
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, result["steps"] + 1))
    assert (out / "encoder" / "encoder.safetensors").is_file()
    parts = sorted(p.name for p in (out / "windows" / "parts").iterdir())
    assert all(".tmp" not in p for p in parts) and len(parts) == 2 * len(json.loads(
        (out / "windows" / "cache.json").read_text())["keys"])  # fmt: skip
