"""The demo's choices in one place: cohort size, preprocessing spec, model, encoder pre-training, training run.

Preprocessing: the synthetic cohort is rendered at about 2 mm in-plane, so the demo spec resamples to
2 x 2 x 3 mm (not RadFinder's 0.75 mm, which would only interpolate) and pads instead of cropping
(`crop="none"`): a 128 x 128 x 32 window then covers 256 x 256 x 96 mm, a chest fits in about 2 x 2 x 4 windows,
and depth cells stay 12 mm like RadFinder's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..preprocess.spec import PRESETS

DEMO_SPEC = PRESETS["demo"]


# Settings that change how a run executes or reports, not what it computes: a re-run may change them freely
# (n_boot re-runs the evaluation stage only).
EXECUTION_ONLY = ("device", "progress", "workers")
EVALUATION_ONLY = ("n_boot", "report_generation")
# The method comparison (`--methods`) only adds runs beside the main one: a change re-runs that stage alone.
COMPARISON_ONLY = ("methods",)


@dataclass
class DemoSettings:
    """Sizes of one demo run (the defaults fit 2 CPU cores in about 15 minutes)."""

    # patients go to the valid split with probability valid_fraction (0.3), so the valid split's size varies with
    # the seed; 450 studies give every seed 0..9 at least 122 valid scans (`plan_cohort`, counted in
    # tests/test_demo_units.py), enough for retrieval and method comparisons to resolve differences, where 200
    # gave 63 for seed 0
    studies: int = 450
    seed: int = 0
    valid_fraction: float = 0.3
    workers: int | None = None
    model: str = "tiny"
    # "histogram+filterbank" (regional HU histograms and the multi-scale Hessian filter bank side by side, both
    # weight-free and standardised on the train split), "histogram", "filterbank", "pretrained-synthetic" (the
    # shipped light3d encoder, pre-trained on a synthetic cohort of its own stream: see radfinder.models.shipped),
    # "astra" (the pretrained ASTRA 3D ResNet-152 of radfinder[astra]; ~1 s a window on 2 CPU cores, meant for a
    # GPU) and "random" (light3d at its seeded initialisation: a control). The default is the one the linear probe
    # on a probe cohort of its own stream measured best (README, "Demo results"); no demo study chose it.
    encoder: str = "histogram+filterbank"
    device: str = "auto"  # feature extraction and training ("auto": CUDA when present)
    train_epochs: float = 40.0
    micro_batch: int = 32
    accum: int = 1
    # What of the MiniLM text tower trains: "frozen" (its projection heads only; with the report_prompt objective of
    # DEMO_TRAIN the text side still learns to read the reports), "top<k>" (its last k layers, the layers below cached
    # per text), "lora" or "all". Frozen is the default because the others cost far more than the demo's budget:
    # measured per step on the demo batch (docs/text_tower.md), frozen 0.2 s, top1 5.7 s, top2 11 s, lora 30 s,
    # all 32 s of CPU.
    text_train: str = "frozen"
    n_boot: int = 10_000  # = eval.bootstrap.DEFAULT_N_BOOT (a test holds them equal; importing eval costs 0.5 s)
    max_steps: int | None = None
    progress: bool = True  # progress bars on the long stages
    report_generation: bool = True  # the report-generation stage (bank on train, generated valid reports, metrics)
    methods: str = "radfinder"  # comma-separated methods compared on the held-out split (demo.methods)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def identity(self) -> dict[str, Any]:
        """What a run's outputs depend on (a folder holds one identity; see `run_demo`)."""
        return {k: v for k, v in self.as_dict().items() if k not in EXECUTION_ONLY + EVALUATION_ONLY + COMPARISON_ONLY}


# LoRA adapters of the demo's MiniLM when `text_train` is "lora" (as the `small` preset has them).
DEMO_TEXT_LORA: dict[str, Any] = {"r": 8, "alpha": 16.0, "targets": ["query", "key", "value"]}

# The demo's training recipe (configs/train/demo.yaml is the same run as a config file; a test keeps them equal).
DEMO_TRAIN: dict[str, Any] = {
    "precision": "fp32",
    # report_prompt: the prompt loss on the report embeddings (train reports' rule labels); it lifted the held-out
    # text ceiling 0.76 -> 0.87, R@10 27% -> 40% and zero-shot 0.73 -> 0.78 at no measurable cost (docs/text_tower.md)
    "losses": {"weights": {"siglip": 1.0, "localization": 1.0, "prompt": 8.0, "report_prompt": 8.0}, "b_init": -3.5},
    "optim": {"lr": 1.0e-3, "warmup_epochs": 2.0},
    "logging": {"tensorboard": False, "progress": True, "log_every": 10},
    "checkpoint": {"every_steps": 25, "keep_last": 1, "final": True},  # resumable mid-training
    "eval": {"at_end": False},
}


def train_config_dict(settings: DemoSettings, out: Path, init: Path, n_train: int | None = None) -> dict[str, Any]:
    """The training config (as a dict for `TrainConfig`) of a demo run in `out`, starting from `init`.

    n_train: training scans; the micro-batch shrinks to it when the train split is smaller (a small demo)."""
    cohort = out / "cohort"
    dataset = {
        "kind": "ctrate",
        "root": str(cohort),
        "split": "train",
        "mode": "first_all",
        "features": str(out / "features"),
        "pairs": str(out / "mining" / "pairs.jsonl"),
        "labels_csv": str(out / "mining" / "train_labels.csv"),
        "name": "synthetic",
    }
    cfg = json.loads(json.dumps(DEMO_TRAIN))
    cfg["seed"] = settings.seed
    cfg["device"] = settings.device
    cfg["model"] = {"init": str(init), "text_train": settings.text_train}
    if settings.text_train == "lora":  # the demo's MiniLM has no adapters of its own: the `small` preset's
        cfg["model"]["text_lora"] = dict(DEMO_TEXT_LORA)
    cfg["data"] = {"datasets": [dataset], "source": "features", "max_snippets_per_scan": 4}
    micro = settings.micro_batch if n_train is None else max(2, min(settings.micro_batch, n_train))
    cfg["batch"] = {"micro": micro, "accum": settings.accum}
    sched: dict[str, Any] = {"epochs": settings.train_epochs}
    if settings.max_steps is not None:
        sched["max_steps"] = settings.max_steps
    cfg["schedule"] = sched
    cfg["logging"]["progress"] = settings.progress
    return cfg
