"""Small shared helpers for the evaluation layer: array conversion, normalisation, input errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from radfinder.errors import RadfinderError


class EvalInputError(RadfinderError):
    """Arrays handed to an evaluation function have the wrong shape, values or sizes."""


def as_numpy(x: Any, *, dtype: Any = np.float64, name: str = "array") -> np.ndarray:
    """numpy array (copy-free where possible) from a numpy array, a torch tensor or a nested sequence."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise EvalInputError(f"{name}: cannot convert to a numeric array ({exc})") from exc
    return arr


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """Divide by the L2 norm along `axis`; all-zero vectors stay zero (their cosine with anything is 0)."""
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, eps)


def check_finite(x: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(x)):
        raise EvalInputError(f"{name}: contains NaN or infinite values")


def clean_number(v: Any) -> Any:
    """Python int/float from numpy scalars; NaN and infinities become None (JSON has no NaN)."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    return v


def ci_dict(ci: tuple[float, float] | None) -> dict[str, Any] | None:
    if ci is None:
        return None
    return {"low": clean_number(ci[0]), "high": clean_number(ci[1])}
