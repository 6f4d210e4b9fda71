"""Turn a `radfinder pretrain-encoder` run into the package's shipped encoder weights plus their card.

    .venv/bin/python scripts/ship_encoder.py RUN [--probe PROBE.json ...] [--name pretrained-synthetic]

Copies RUN/encoder/encoder.safetensors into src/radfinder/resources/encoders/NAME/ and writes card.json beside it:
the command and resolved config of the run, the git commit, the cohort (stream, seed, size), hardware, wall time
(from the run's first file to its exported encoder), the sha256 of the weights, the preprocessing spec and the probe
tables (`scripts/probe_features.py --cohort ... --json` outputs, one per encoder compared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from radfinder.models.shipped import sha256_of  # noqa: E402

PROBE_KEYS = ("encoder", "cohort", "n_train", "n_test", "C", "macro_auroc", "min_auroc", "per_finding_auroc",
              "per_finding_ci", "test_positives")  # fmt: skip


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--probe", type=Path, action="append", default=[], help="probe JSON (repeatable)")
    ap.add_argument("--name", default="pretrained-synthetic")
    ap.add_argument("--command", default="radfinder pretrain-encoder --config configs/pretrain/synthetic.yaml "
                    "--out RUN", help="the command that made RUN")  # fmt: skip
    a = ap.parse_args()
    run = a.run
    enc = json.loads((run / "encoder" / "encoder.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cohort_json = run / "cohort" / "cohort.json"
    cohort = json.loads(cohort_json.read_text()) if cohort_json.is_file() else {}
    windows = json.loads((run / "windows" / "cache.json").read_text())
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    start = (run / "config.yaml").stat().st_mtime
    end = (run / "encoder" / "encoder.json").stat().st_mtime
    git = ["git", "-C", str(REPO), "rev-parse", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
    dest = REPO / "src" / "radfinder" / "resources" / "encoders" / a.name
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "encoder" / "encoder.safetensors", dest / "encoder.safetensors")
    probes = [json.loads(p.read_text()) for p in a.probe]
    card = {
        "name": a.name,
        "format": enc["format"],
        "description": "light3d window encoder pre-trained on dense organ and lesion mask targets of a synthetic "
        "chest-CT cohort of its own random stream (no report, label or phantom of any demo or evaluation study)",
        "command": a.command,
        "config": cfg,
        "commit": commit,
        "cohort": {"stream": cohort.get("stream"), "seed": cohort.get("seed"), "studies": cohort.get("n_studies"),
                   "volumes": cohort.get("n_volumes"), "windows": enc.get("windows"), "res": cohort.get("res"),
                   "label_counts": cohort.get("label_counts")},  # fmt: skip
        "target_classes": windows["classes"],
        "training": {"steps": enc.get("steps"), "final_losses": enc.get("final"),
                     "first_loss": log[0]["loss"] if log else None,
                     "last_loss": log[-1]["loss"] if log else None},  # fmt: skip
        "hardware": {"device": "cpu", "cpu": _cpu(), "cores": os.cpu_count(), "torch": enc.get("torch"),
                     "platform": enc.get("platform"), "note": "shared with other jobs while it ran"},  # fmt: skip
        "wall_time_s": round(end - start, 1),
        "window_encoder": enc["window_encoder"],
        "preprocess": enc["preprocess"],
        "spec_hash": enc["spec_hash"],
        "sha256": sha256_of(dest / "encoder.safetensors"),
        "bytes": (dest / "encoder.safetensors").stat().st_size,
        "probe": [{k: p.get(k) for k in PROBE_KEYS} for p in probes],
    }
    (dest / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    print(f"shipped {dest / 'encoder.safetensors'} ({card['bytes'] / 1e6:.2f} MB, sha256 {card['sha256'][:16]}...)")


if __name__ == "__main__":
    main()
