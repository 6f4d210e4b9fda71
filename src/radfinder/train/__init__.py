"""Training: typed config, data mixing, cached re-forwarding step, checkpoints, DDP, evaluation hooks.

`train(cfg, out_dir, resume=False) -> TrainResult` is the entry point (`radfinder train` wraps it).
"""

from .checkpoint import latest_checkpoint
from .config import TrainConfig, load_train_config
from .hooks import EvalContext, EvalHook
from .trainer import Trainer, TrainResult, train

__all__ = [
    "EvalContext",
    "EvalHook",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "latest_checkpoint",
    "load_train_config",
    "train",
]
