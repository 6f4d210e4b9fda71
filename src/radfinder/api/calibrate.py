"""`calibrate`: fit the per-finding zero-shot calibration of a trained model on a TRAINING split and save it beside
the checkpoint (`<checkpoint>/calibration.json`, read back by `load_model`; see `radfinder.models.calibration`).

    model = load_model("runs/demo/checkpoints/latest/model")
    calibrate(model, train_records)          # labels: the rule labeler on each record's own report
    classify(model, "scan.nii.gz")           # probabilities now calibrated (FindingScore.calibrated)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import RadfinderError
from ..eval.calibration import fit_calibration
from ..models.calibration import FindingCalibration


def default_calibration_dir(model) -> Path:
    src = str(getattr(model, "source", "") or "")
    if not src or src.startswith("preset:"):
        raise RadfinderError("the model was not loaded from a checkpoint directory: give the output folder")
    return Path(src)


def calibrate(
    model, train_records: Sequence[Any], out: str | Path | None = None, *, features: str | Path | None = None,
    labels=None, save: bool = True, show_progress: bool = False,
) -> FindingCalibration:
    """Fit the calibration on `train_records` (never the split you evaluate on), attach it to `model` and, with
    `save`, write it to `out` (a checkpoint directory; default the one the model was loaded from)."""
    if not train_records:
        raise RadfinderError("no training records to calibrate on")
    cal = fit_calibration(model, train_records, features=features, labels=labels, show_progress=show_progress)
    if save:
        cal.save(Path(out) if out is not None else default_calibration_dir(model))
    model.calibration = cal
    return cal
