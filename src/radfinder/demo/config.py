"""The demo's choices in one place: cohort size, preprocessing spec, model, encoder pre-training, training run.

Preprocessing: the synthetic cohort is rendered at about 2 mm in-plane, so the demo spec resamples to
2 x 2 x 3 mm (not RadFinder's 0.75 mm, which would only interpolate) and pads instead of cropping
(`crop="none"`): a 128 x 128 x 32 window then covers 256 x 256 x 96 mm, a chest fits in about 2 x 2 x 4 windows,
and depth cells stay 12 mm like RadFinder's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..preprocess.spec import PreprocessSpec

DEMO_SPEC = PreprocessSpec(name="demo", spacing=(2.0, 2.0, 3.0), crop="none")


@dataclass
class DemoSettings:
    """Sizes of one demo run (the defaults fit 2 CPU cores in about 15 minutes)."""

    studies: int = 200
    seed: int = 0
    valid_fraction: float = 0.3
    workers: int | None = None
    model: str = "tiny"
    # "histogram" (regional HU histograms, standardised on train: see radfinder.models.histogram),
    # "astra" (the pretrained ASTRA 3D ResNet-152 from the radfinder[astra] extra; ~1 s a window on 2 CPU
    # cores, so meant for a GPU), "pretrained" (the tiny ViT after a short supervised pre-training on train)
    # or "random"
    encoder: str = "histogram"
    device: str = "auto"  # where window features are extracted ("auto": CUDA when present)
    pretrain_epochs: float = 2.0
    train_epochs: float = 40.0
    micro_batch: int = 32
    accum: int = 1
    text_train: str = "frozen"
    n_boot: int = 10_000  # = eval.bootstrap.DEFAULT_N_BOOT (a test holds them equal; importing eval costs 0.5 s)
    max_steps: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def train_config_dict(settings: DemoSettings, out: Path, init: Path) -> dict[str, Any]:
    """The training config (as a dict for `TrainConfig`); `configs/train/demo.yaml` is used as the base when it
    exists, with the demo's own data paths, model and sizes written over it."""
    base: dict[str, Any] = {}
    yaml_path = Path(__file__).resolve().parents[3] / "configs" / "train" / "demo.yaml"
    if yaml_path.is_file():
        import yaml

        base = yaml.safe_load(yaml_path.read_text()) or {}
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
    cfg = dict(base)
    cfg["seed"] = settings.seed
    cfg["device"] = "cpu"
    cfg["model"] = {"init": str(init), "text_train": settings.text_train}
    data = dict(cfg.get("data") or {})
    data.update({"datasets": [dataset], "source": "features", "max_snippets_per_scan": 4})
    data.pop("samples_per_epoch", None)
    cfg["data"] = data
    cfg["batch"] = {"micro": settings.micro_batch, "accum": settings.accum}
    sched = {"epochs": settings.train_epochs}
    if settings.max_steps is not None:
        sched["max_steps"] = settings.max_steps
    cfg["schedule"] = sched
    optim = dict(cfg.get("optim") or {})
    optim.setdefault("lr", 1e-3)
    optim.setdefault("warmup_epochs", 2.0)
    cfg["optim"] = optim
    cfg["logging"] = {"tensorboard": False, "progress": True, "log_every": 10}
    cfg["checkpoint"] = {"every_steps": 25, "keep_last": 1, "final": True}  # resumable mid-training
    cfg["eval"] = {"at_end": False}
    return cfg
