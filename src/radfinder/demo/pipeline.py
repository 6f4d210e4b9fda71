"""`run_demo(out, settings)`: the whole RadFinder pipeline on the built-in synthetic cohort, stage by stage.

Stages (each resumable: a finished stage leaves ``DIR/stages/<name>.json`` and is skipped on a re-run; delete
that file, or pass ``redo``, to run it again, which also re-runs every later stage):
cohort -> preprocess -> mining -> encoder -> features -> train -> evaluate -> report_generation -> library ->
methods (the `--methods` comparison, `demo.methods`; RadFinder alone by default, which trains nothing more).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config import COMPARISON_ONLY, EVALUATION_ONLY, DemoSettings
from .methods import parse_methods, stage_methods
from .report_generation import stage_report_generation
from .stages import (
    ENCODERS,
    Log,
    stage_cohort,
    stage_encoder,
    stage_evaluate,
    stage_features,
    stage_library,
    stage_mining,
    stage_preprocess,
    stage_train,
)
from .summary import format_table

STAGES: list[tuple[str, Callable[[Path, DemoSettings, Log], dict[str, Any]]]] = [
    ("cohort", stage_cohort),
    ("preprocess", stage_preprocess),
    ("mining", stage_mining),
    ("encoder", stage_encoder),
    ("features", stage_features),
    ("train", stage_train),
    ("evaluate", stage_evaluate),
    ("report_generation", stage_report_generation),
    ("library", stage_library),
    ("methods", stage_methods),
]
STAGE_NAMES = [name for name, _ in STAGES]


def run_demo(
    out: str | Path,
    settings: DemoSettings | None = None,
    *,
    redo: Sequence[str] = (),
    stop_after: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or resume) the demo in `out`; returns {"stages": {name: info}, "seconds": total, "summary": ...}."""
    s = settings or DemoSettings()
    if s.encoder not in ENCODERS:  # checked before minutes of cohort generation, not after
        raise ConfigError(f"encoder must be one of {', '.join(ENCODERS)}, got {s.encoder!r}")
    parse_methods(s.methods)
    from ..models.text_topk import top_layers

    if s.text_train not in ("frozen", "lora", "all") and top_layers(s.text_train) is None:
        raise ConfigError(f"text_train must be frozen, top<k> (e.g. top2), lora or all, got {s.text_train!r}")
    out = Path(out)
    marks = out / "stages"
    marks.mkdir(parents=True, exist_ok=True)
    unknown = [r for r in redo if r not in STAGE_NAMES]
    if unknown or (stop_after and stop_after not in STAGE_NAMES):
        raise ConfigError(f"unknown stage(s) {unknown or [stop_after]}; stages: {', '.join(STAGE_NAMES)}")
    settings_path = out / "settings.json"
    previous = json.loads(settings_path.read_text()) if settings_path.is_file() else None
    redo = list(redo)
    if previous is not None:
        changed = sorted(k for k in s.as_dict() if previous.get(k) != s.as_dict().get(k))
        if any(k in s.identity() for k in changed):
            wrong = [k for k in changed if k in s.identity()]
            raise ConfigError(f"{out} holds a demo run with other settings ({', '.join(wrong)}); use another folder")
        if any(k in EVALUATION_ONLY for k in changed):
            redo.append("evaluate")  # e.g. another --n-boot: the evaluation only, nothing before it
        if any(k in COMPARISON_ONLY for k in changed):
            redo.append("methods")  # other --methods: the comparison only (finished method runs are reused)
    settings_path.write_text(json.dumps(s.as_dict(), indent=2) + "\n")
    first_redo = min((STAGE_NAMES.index(r) for r in redo), default=len(STAGE_NAMES))
    t_all = time.perf_counter()
    infos: dict[str, Any] = {}
    for i, (name, fn) in enumerate(STAGES):
        mark = marks / f"{name}.json"
        if i >= first_redo:
            mark.unlink(missing_ok=True)
        if mark.is_file():
            info = json.loads(mark.read_text())
            log(f"[{i + 1}/{len(STAGES)}] {name:<10} done earlier ({info['seconds']:.1f} s), skipped")
        else:
            log(f"[{i + 1}/{len(STAGES)}] {name:<10} running ...")
            t0 = time.perf_counter()
            result = fn(out, s, log)
            info = {"seconds": round(time.perf_counter() - t0, 1), "result": result}
            mark.write_text(json.dumps(info, indent=2, default=str) + "\n")
            # later stages were built on this stage's previous outputs: a run that stops here (--stop-after)
            # must not leave their marks behind, or the next run would skip them and report stale results
            for later, _ in STAGES[i + 1 :]:
                (marks / f"{later}.json").unlink(missing_ok=True)
            log(f"[{i + 1}/{len(STAGES)}] {name:<10} {info['seconds']:.1f} s")
        infos[name] = info
        if name == stop_after:
            break
    total = sum(v["seconds"] for v in infos.values())
    summary = None
    if (out / "metrics.json").is_file() and "evaluate" in infos:
        summary = json.loads((out / "metrics.json").read_text())
        log("")
        log(format_table(summary))
        log("")
        log(f"stage time {total:.0f} s in total (this call {time.perf_counter() - t_all:.0f} s)")
        log(f"metrics: {out / 'metrics.json'}")
        log(f"report:  {summary.get('report')}")
        serve = ((infos.get("library") or {}).get("result") or {}).get("serve")
        if serve:
            log(f"browse:  {serve}   (then open http://127.0.0.1:8000/)")
    return {"stages": infos, "seconds": round(total, 1), "summary": summary}
