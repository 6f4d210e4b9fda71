"""A tiny synthetic cohort shared by the tests/test_data_*.py modules: generated once per test session.

Seed 12 with 4 studies gives both splits, a patient with two studies and a study with two volumes."""

from __future__ import annotations

from pathlib import Path

COHORT_SEED = 12
COHORT_STUDIES = 4
_CACHE: dict[str, Path] = {}


def synth_cohort(tmp_path_factory) -> Path:
    if "cohort" not in _CACHE:
        from radfinder.data.synth import make_cohort

        out = tmp_path_factory.getbasetemp() / "data_cohort"
        make_cohort(out, COHORT_STUDIES, COHORT_SEED, workers=1, show_progress=False)
        _CACHE["cohort"] = out
    return _CACHE["cohort"]


def mirror(tmp_path_factory, kind: str) -> Path:
    """A mirror of the shared cohort in `kind`'s layout (written once per session; treat as read-only)."""
    if kind not in _CACHE:
        from radfinder.data.synth import mirrors

        cohort = synth_cohort(tmp_path_factory)
        out = tmp_path_factory.getbasetemp() / f"mirror_{kind}"
        if kind == "radchestct":
            mirrors.write_radchestct_mirror(cohort, out, spacing_mm=4.0)
        elif kind == "merlin":
            mirrors.write_merlin_mirror(cohort, out, xlsx=_has_openpyxl())
        elif kind == "inspect":
            mirrors.write_inspect_mirror(cohort, out)
        else:
            raise ValueError(kind)
        _CACHE[kind] = out
    return _CACHE[kind]


def truth(cohort: Path) -> list[dict]:
    from radfinder.data.synth.mirrors import read_truth

    return read_truth(cohort)


def _has_openpyxl() -> bool:
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        return False
    return True
