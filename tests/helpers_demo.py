"""Demo pipeline tests without the real stages: each named stage only records that it ran."""

from __future__ import annotations


def fake_stages(monkeypatch, names: list[str]) -> list[str]:
    """Replace the demo's stages by `names`; returns the list every stage run appends its name to."""
    from radfinder.demo import pipeline

    calls: list[str] = []

    def stage(name):
        def run(out, settings, log):
            calls.append(name)
            return {"stage": name}

        return run

    monkeypatch.setattr(pipeline, "STAGES", [(n, stage(n)) for n in names])
    monkeypatch.setattr(pipeline, "STAGE_NAMES", names)
    return calls
