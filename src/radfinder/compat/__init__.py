"""Compatibility with the official RadFinder checkpoints: the reference-pack verifier.

Run `python -m radfinder.compat.verify DIR [--json]`; in code, `radfinder.compat.verify.verify(DIR)` returns the
list of `Check`s. (The verifier module is not imported here, so that `-m` runs it cleanly.)"""

from .pack import Check, ReferencePack, Tolerance, compare

__all__ = ["Check", "ReferencePack", "Tolerance", "compare"]
