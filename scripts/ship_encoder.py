"""Turn a `radfinder pretrain-encoder` run into the package's shipped encoder weights plus their card.

    .venv/bin/python scripts/ship_encoder.py RUN [RUN2 ...] [--command CMD ...] [--probe PROBE.json ...]

Copies the last RUN's encoder/encoder.safetensors into src/radfinder/resources/encoders/NAME/ and writes card.json
beside it: the commands and resolved configs of the runs (phases: a continued pre-training starts from the previous
phase's encoder), the git commit, the cohort (stream, seed, size), hardware, wall time per stage (from the files
each stage left), the sha256 of the weights, the preprocessing spec and the probe tables
(`scripts/probe_features.py --cohort ... --json` outputs, one per encoder compared).
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
    ap.add_argument("runs", type=Path, nargs="+", help="the pre-training run(s), in order (a continued pre-training "
                    "names its predecessor's encoder in encoder.init); the last one's encoder is shipped")
    ap.add_argument("--probe", type=Path, action="append", default=[], help="probe JSON (repeatable)")
    ap.add_argument("--name", default="pretrained-synthetic")
    ap.add_argument("--note", default="", help="anything a reader of the card must know about the run")
    ap.add_argument("--command", action="append", default=[], help="the command that made each run, in order")
    a = ap.parse_args()
    phases = [_phase(run, cmd) for run, cmd in zip(a.runs, a.command + [""] * len(a.runs), strict=False)]
    last = a.runs[-1]
    enc = json.loads((last / "encoder" / "encoder.json").read_text())
    first_cfg = phases[0]["config"]
    source = Path(first_cfg["data"]["source"]) if first_cfg["data"].get("source") else a.runs[0] / "cohort"
    cohort = json.loads((source / "cohort.json").read_text()) if (source / "cohort.json").is_file() else {}
    git = ["git", "-C", str(REPO), "rev-parse", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
    dest = REPO / "src" / "radfinder" / "resources" / "encoders" / a.name
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(last / "encoder" / "encoder.safetensors", dest / "encoder.safetensors")
    probes = [json.loads(p.read_text()) for p in a.probe]
    card = {
        "name": a.name,
        "format": enc["format"],
        "description": "light3d window encoder pre-trained on dense organ and lesion mask targets of a synthetic "
        "chest-CT cohort of its own random stream (no report, label or phantom of any demo or evaluation study)",
        "command": " && ".join(ph["command"] for ph in phases),
        "config": phases[-1]["config"],
        "phases": phases,
        "commit": commit,
        "cohort": {"stream": cohort.get("stream"), "seed": cohort.get("seed"), "studies": cohort.get("n_studies"),
                   "volumes": cohort.get("n_volumes"), "windows": enc.get("windows"), "res": cohort.get("res"),
                   "label_counts": cohort.get("label_counts")},  # fmt: skip
        "hardware": {"device": "cpu", "cpu": _cpu(), "cores": os.cpu_count(), "torch": enc.get("torch"),
                     "platform": enc.get("platform"), "note": "shared with other jobs while it ran"},  # fmt: skip
        "wall_time_s": round(sum(sum(ph["wall_time_stages_s"].values()) for ph in phases), 1),
        "window_encoder": enc["window_encoder"],
        "preprocess": enc["preprocess"],
        "spec_hash": enc["spec_hash"],
        "sha256": sha256_of(dest / "encoder.safetensors"),
        "bytes": (dest / "encoder.safetensors").stat().st_size,
        "probe": [{k: p.get(k) for k in PROBE_KEYS} for p in probes],
        "note": a.note,
    }
    (dest / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    print(f"shipped {dest / 'encoder.safetensors'} ({card['bytes'] / 1e6:.2f} MB, sha256 {card['sha256'][:16]}...)")


def _phase(run: Path, command: str) -> dict:
    """One pre-training run: command, resolved config, steps and losses, and stage wall times taken from the files
    each stage left (a run restarted after its window cache still counts each stage once)."""
    enc = json.loads((run / "encoder" / "encoder.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    mtime = lambda p: p.stat().st_mtime  # noqa: E731
    stages = {"train": mtime(run / "encoder" / "encoder.json") - mtime(run / "config.yaml")}
    if (run / "cohort" / "cohort.json").is_file():  # this run rendered its cohort and cached its windows
        vols = sorted((run / "cohort" / "volumes").glob("*.nii.gz"), key=mtime)
        parts = sorted((run / "windows" / "parts").glob("*.npy"), key=mtime)
        stages["cohort"] = mtime(run / "cohort" / "cohort.json") - mtime(vols[0])
        stages["windows"] = mtime(parts[-1]) - mtime(run / "cohort" / "cohort.json")
    return {
        "command": command or f"radfinder pretrain-encoder --config <config> --out {run.name}",
        "config": cfg,
        "steps": enc.get("steps"),
        "windows": enc.get("windows"),
        "first_loss": log[0]["loss"] if log else None,
        "last_loss": log[-1]["loss"] if log else None,
        "final_losses": enc.get("final"),
        "wall_time_stages_s": {k: round(v, 1) for k, v in stages.items()},
    }


if __name__ == "__main__":
    main()
