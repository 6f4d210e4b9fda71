"""Shared fixtures. Real third-party data lives beside the checkout in ../shared and is never copied in;
tests that need it skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RADFINDER_SHARED", REPO.parent / "shared"))
REAL_DATA = SHARED / "data" / "real"
COMPAT_DIR = SHARED / "reference" / "radfinder-compat"


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data folder absent: {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def synthetic_texts() -> list[dict]:
    """120 synthetic studies' EN/DE reports with their planned labels and lesions (no volumes; ~30 s once)."""
    from helpers_text import text_cohort

    return text_cohort(120, seed=21)


@pytest.fixture(scope="session")
def compat_dir() -> Path:
    if not (COMPAT_DIR / "manifest.json").is_file():
        pytest.skip(f"compatibility reference pack absent: {COMPAT_DIR}")
    return COMPAT_DIR


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)
