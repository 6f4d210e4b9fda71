"""The end-to-end demo on the built-in synthetic cohort (`radfinder demo`, `make demo`)."""

from .config import DEMO_SPEC, DemoSettings
from .pipeline import STAGE_NAMES, run_demo

__all__ = ["DEMO_SPEC", "STAGE_NAMES", "DemoSettings", "run_demo"]
