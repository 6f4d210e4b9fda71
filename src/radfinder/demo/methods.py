"""`radfinder demo --methods radfinder,fvlm,scale-vlp`: several training methods on the same cohort, split and
frozen features, scored side by side on the held-out split.

A method here is a demo recipe over the registered objectives (`radfinder.losses.objectives`), not a trainer of its
own: its loss weights, the loss options of its config file, and the evaluation tasks it can be scored on.

- `radfinder`: SigLIP + localization + disease prompts, the demo's main run (`configs/train/demo.yaml`); its row is
  the main run's evaluation, not a second training.
- `scale-vlp`: soft-weighted contrast `swca` + disease prompts (`configs/train/scale-vlp-demo.yaml`), on the demo's
  feature cache; no localization objective, so no localization score.
- `fvlm`: the anatomy-level contrast with false-negative calibration (`configs/train/fvlm-demo.yaml`), on the
  same encoder with spatial tokens and the cohort's TotalSegmentator-format masks (`demo.fvlm`); scored with the
  anatomy-level zero-shot task only, since its global heads are not trained.
- `a+b` combines methods in one run (weights merged, tasks united): `radfinder+fvlm` trains all four objectives.

`DIR/metrics.json` gets `methods.<method>.<task>.<metric>` (task keys as at its top level: `retrieval`,
`zero_shot`, `localization`, plus `anatomy_zero_shot`); the top-level keys stay the main run's, which is RadFinder's
and must come first in `--methods`. `DIR/methods.md` holds the side-by-side table.

Each other method is also compared with a reference on every metric both have, by a paired bootstrap over the
held-out studies (`eval.paired`: both methods scored on the same resampled studies, `n_boot` resamples):
`methods.<method>.delta_vs_<reference>.<task>.<metric>` = {"difference" (method minus reference), "ci95",
"p_not_above_zero", ...}. The reference is RadFinder's main run; fVLM, which shares no task with it, is compared with
`radfinder+fvlm` on the anatomy-level zero-shot task when that combination is in `--methods`. The stage's wall time
is `methods_seconds` (per method and in total) in metrics.json.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config import DEMO_TRAIN, DemoSettings, train_config_dict
from .fvlm import FVLM_WEIGHTS, evaluate_fvlm, fvlm_dirs, fvlm_features, train_fvlm
from .stages import _records, small_model_threads
from .summary import summarize

Log = Callable[[str], None]
MAIN_METHOD = "radfinder"
TASK_KEYS = {"retrieval": "retrieval", "zero-shot": "zero_shot", "localization": "localization"}


@dataclass(frozen=True)
class DemoMethod:
    name: str
    weights: dict[str, float]
    tasks: tuple[str, ...]  # evaluation tasks (radfinder.eval names) + "anatomy_zero_shot"
    losses: dict[str, Any] = field(default_factory=dict)  # further `losses` keys of its config (options, t_init)
    anatomy: bool = False  # needs spatial tokens + anatomy coverage (fVLM)
    snippets: bool = True  # trains on localization snippets

    def loss_section(self) -> dict[str, Any]:
        section = json.loads(json.dumps(DEMO_TRAIN["losses"]))
        section.update(json.loads(json.dumps(self.losses)))
        section["weights"] = dict(self.weights)
        return section


METHODS: dict[str, DemoMethod] = {
    "radfinder": DemoMethod("radfinder", dict(DEMO_TRAIN["losses"]["weights"]),
                            ("retrieval", "zero-shot", "localization")),
    # configs/train/scale-vlp-demo.yaml's losses (a test keeps them equal)
    "scale-vlp": DemoMethod("scale-vlp", {"swca": 1.0, "prompt": 8.0}, ("retrieval", "zero-shot"),
                            losses={"options": {"swca": {"alpha": 0.5, "beta": 0.5, "gamma": 0.5,
                                                         "volume_weight": 0.5, "intra_weight": 0.0}},
                                    "t_init": 2.659},
                            snippets=False),
    "fvlm": DemoMethod("fvlm", dict(FVLM_WEIGHTS), ("anatomy_zero_shot",), anatomy=True, snippets=False),
}  # fmt: skip


def resolve_method(name: str) -> DemoMethod:
    """A registered demo method, or a `+` combination of them (weights merged, the first one's weight kept where
    two name the same objective; tasks united in order)."""
    parts = [p.strip() for p in name.split("+")]
    unknown = [p for p in parts if p not in METHODS]
    if unknown or not parts:
        raise ConfigError(f"unknown method(s) {unknown or [name]}; known: {', '.join(METHODS)} (combine with '+')")
    if len(parts) == 1:
        return METHODS[parts[0]]
    weights: dict[str, float] = {}
    losses: dict[str, Any] = {}
    tasks: list[str] = []
    for m in (METHODS[p] for p in parts):
        for k, v in m.weights.items():
            weights.setdefault(k, v)
        for k, v in m.losses.items():
            if k == "options":
                losses.setdefault("options", {}).update(v)
            else:
                losses.setdefault(k, v)
        tasks += [t for t in m.tasks if t not in tasks]
    ms = [METHODS[p] for p in parts]
    return DemoMethod("+".join(parts), weights, tuple(tasks), losses, anatomy=any(m.anatomy for m in ms),
                      snippets=any(m.snippets for m in ms))  # fmt: skip


def parse_methods(text: str) -> list[str]:
    """`--methods` as a list of method names, checked; RadFinder's main run first."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise ConfigError("--methods names no method")
    for n in names:
        resolve_method(n)
    if len(set(names)) != len(names):
        raise ConfigError(f"--methods names a method twice: {text}")
    if names[0] != MAIN_METHOD:
        raise ConfigError(f"--methods must start with {MAIN_METHOD}: the demo's main run (the top-level keys of "
                          f"metrics.json, the report generation and the library) is RadFinder's; got {text}")
    return names


def _run_dir(out: Path, name: str) -> Path:
    return out / "methods" / name.replace("+", "_")


def _task_metrics(summary: dict[str, Any], tasks: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for task in tasks:
        key = TASK_KEYS.get(task)
        if key is not None:
            out[key] = {k: v for k, v in summary[key].items() if k != "ci"}
    return out


def _evaluate(out: Path, s: DemoSettings, model_dir: Path, features: Path, tasks: tuple[str, ...],
              eval_dir: Path, title: str) -> dict[str, Any]:
    import numpy as np

    from ..eval.evaluate import evaluate
    from ..models.pretrained import from_pretrained

    wanted = [t for t in tasks if t in TASK_KEYS]
    if not wanted:
        return {}
    valid = _records(out, "valid")
    metrics = evaluate(
        from_pretrained(model_dir), valid, wanted, eval_dir, features=features,
        pairs=out / "mining" / "pairs.jsonl", labels=np.stack([r.labels for r in valid]), n_boot=s.n_boot, seed=0,
        title=title, metadata={"checkpoint": str(model_dir), "demo_settings": s.as_dict()},
    )  # fmt: skip
    return _task_metrics(summarize(metrics), tuple(wanted))


def _train_on_demo_features(out: Path, s: DemoSettings, m: DemoMethod, log: Log) -> Path:
    """A method without anatomy objectives, trained like the main run on the demo's own feature cache."""
    from ..train.checkpoint import latest_checkpoint
    from ..train.config import TrainConfig
    from ..train.trainer import train

    run_dir = _run_dir(out, m.name) / "train"
    done = latest_checkpoint(run_dir)
    if done is not None and (run_dir / "result.json").is_file():
        return done / "model"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted run of an earlier call: trained again from the start
    cfg = train_config_dict(s, out, out / "encoder-standardized", len(_records(out, "train")))
    cfg["losses"] = m.loss_section()
    if not m.snippets:
        cfg["data"]["max_snippets_per_scan"] = 0
    with small_model_threads(s.device):
        result = train(TrainConfig.model_validate(cfg), run_dir)
    (run_dir / "result.json").write_text(json.dumps(result.as_dict(), indent=2, default=str) + "\n")
    log(f"  {m.name}: trained {result.steps} steps, final loss {result.final_loss}")
    return latest_checkpoint(run_dir) / "model"


def _cases_path(out: Path, name: str) -> Path:
    """Where a method's evaluation left its scored cases (`eval.paired.CASES_FILE`)."""
    from ..eval.paired import CASES_FILE

    return out / "eval" / CASES_FILE if name == MAIN_METHOD else _run_dir(out, name) / "eval" / CASES_FILE


def method_cases(out: Path, name: str) -> dict[str, Any] | None:
    """A method's scored cases (its evaluation's and, for anatomy methods, the anatomy zero-shot's), or None."""
    from ..eval.paired import load_cases

    cases: dict[str, Any] = {}
    for path in (_cases_path(out, name), _run_dir(out, name) / "anatomy_cases.npz"):
        if path.is_file():
            part = load_cases(path)
            if cases and list(part["keys"]) != list(cases["keys"]):
                raise ConfigError(f"{path}: scored other studies than {name}'s evaluation")
            cases.update(part)
    return cases or None


def reference_of(name: str, names: list[str]) -> str | None:
    """The method `name` is compared with: RadFinder's main run, or for fVLM (no task in common with it) the
    `radfinder+fvlm` combination when it was run; None for the main run itself."""
    if name == MAIN_METHOD:
        return None
    if not set(resolve_method(name).tasks) & set(resolve_method(MAIN_METHOD).tasks):
        combined = f"{MAIN_METHOD}+{name}"
        return combined if combined in names else None
    return MAIN_METHOD


def run_method(out: Path, s: DemoSettings, name: str, main_summary: dict[str, Any], log: Log) -> dict[str, Any]:
    """Train (unless it is the main run) and evaluate one method; its `methods.<name>` entry."""
    m = resolve_method(name)
    if name == MAIN_METHOD:
        return _task_metrics(main_summary, m.tasks)
    title = f"radfinder demo, method {name}: held-out synthetic valid split"
    if not m.anatomy:
        model_dir = _train_on_demo_features(out, s, m, log)
        return _evaluate(out, s, model_dir, out / "features", m.tasks, _run_dir(out, name) / "eval", title)
    fvlm_features(out, s, log)
    _, features = fvlm_dirs(out, s)
    run_name = str(_run_dir(out, name).relative_to(out) / "train")
    info = train_fvlm(out, s, log, weights=m.weights, run_name=run_name)
    log(f"  {name}: trained {info.get('steps')} steps, final loss {info.get('final_loss')}")
    result = {}
    if "anatomy_zero_shot" in m.tasks:
        result["anatomy_zero_shot"] = evaluate_fvlm(out, s, log, model_dir=info["model"],
                                                    cases_out=_run_dir(out, name) / "anatomy_cases.npz",
                                                    )["anatomy_zero_shot"]
    result.update(_evaluate(out, s, Path(info["model"]), features, m.tasks, _run_dir(out, name) / "eval", title))
    return result


COLUMNS = (  # (task, metric, header, format)
    ("retrieval", "R@10", "text-to-volume R@10", "pct"),
    ("retrieval", "median_rank", "median rank", ".1f"),
    ("zero_shot", "macro_auroc", "zero-shot macro AUROC", ".3f"),
    ("anatomy_zero_shot", "macro_auroc", "anatomy zero-shot macro AUROC", ".3f"),
    ("localization", "mae_mm", "localization MAE (mm)", ".1f"),
)


def comparison_markdown(methods: dict[str, dict[str, Any]]) -> str:
    """One row per method, one column per headline metric ("-": the method has no such task)."""

    def cell(res: dict[str, Any], task: str, metric: str, fmt: str) -> str:
        v = (res.get(task) or {}).get(metric)
        if v is None:
            return "-"
        return f"{100 * v:.1f}%" if fmt == "pct" else format(v, fmt)

    head = "| method | " + " | ".join(c[2] for c in COLUMNS) + " |"
    lines = [head, "|" + " --- |" * (len(COLUMNS) + 1)]
    for name, res in methods.items():
        lines.append(f"| {name} | " + " | ".join(cell(res, t, m, p) for t, m, _, p in COLUMNS) + " |")
    return "\n".join(lines)


DELTA_COLUMNS = (  # (task, metric, header, scale, format, unit): the differences shown in methods.md
    ("retrieval", "R@10", "R@10", 100.0, "+.1f", " pts"),
    ("retrieval", "median_rank", "median rank", 1.0, "+.1f", ""),
    ("zero_shot", "macro_auroc", "zero-shot macro AUROC", 1.0, "+.3f", ""),
    ("anatomy_zero_shot", "macro_auroc", "anatomy zero-shot macro AUROC", 1.0, "+.3f", ""),
    ("localization", "mae_mm", "localization MAE", 1.0, "+.1f", " mm"),
)


def delta_markdown(methods: dict[str, dict[str, Any]]) -> str:
    """Each compared method's difference from its reference with the paired 95% CI ("-": no shared metric)."""

    def cell(d: dict[str, Any] | None, scale: float, fmt: str, unit: str) -> str:
        if not d or d.get("difference") is None:
            return "-"
        ci = d.get("ci95")
        text = f"{format(scale * d['difference'], fmt)}{unit}"
        if not ci or ci[0] is None:
            return text
        return f"{text} [{format(scale * ci[0], fmt)}, {format(scale * ci[1], fmt)}]"

    lines = ["| method | reference | " + " | ".join(c[2] for c in DELTA_COLUMNS) + " |",
             "|" + " --- |" * (len(DELTA_COLUMNS) + 2)]  # fmt: skip
    for name, res in methods.items():
        for key, delta in res.items():
            if key.startswith("delta_vs_"):
                row = [cell((delta.get(t) or {}).get(m), sc, f, u) for t, m, _, sc, f, u in DELTA_COLUMNS]
                lines.append(f"| {name} | {key.removeprefix('delta_vs_')} | " + " | ".join(row) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def stage_methods(out: Path, s: DemoSettings, log: Log) -> dict[str, Any]:
    import time

    from ..eval.paired import paired_deltas

    t_stage = time.perf_counter()
    names = parse_methods(s.methods)
    path = out / "metrics.json"
    summary = json.loads(path.read_text())
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for name in names:
        log(f"  method {name} ...")
        t0 = time.perf_counter()
        results[name] = run_method(out, s, name, summary, log)
        seconds[name] = round(time.perf_counter() - t0, 1)
    for name in names:
        ref = reference_of(name, names)
        a, b = method_cases(out, name), method_cases(out, ref) if ref else None
        if a is not None and b is not None:
            deltas = paired_deltas(a, b, n_boot=s.n_boot, seed=0)
            if deltas:
                results[name][f"delta_vs_{ref}"] = deltas
    summary["methods"] = results
    summary["methods_seconds"] = {**seconds, "total": round(time.perf_counter() - t_stage, 1)}
    path.write_text(json.dumps(summary, indent=2) + "\n")
    table = comparison_markdown(results)
    deltas_md = delta_markdown(results)
    text = "# Methods on the held-out valid split\n\n" + table + "\n"
    if deltas_md:
        text += ("\n## Difference from the reference (paired bootstrap over the held-out studies)\n\n"
                 f"Method minus reference, 95% CI from {s.n_boot} resamples of the studies, both methods scored on "
                 "the same resamples.\n\n" + deltas_md + "\n")  # fmt: skip
    text += f"\nWall time of the comparison stage: {summary['methods_seconds']['total']:.0f} s.\n"
    (out / "methods.md").write_text(text)
    if len(names) > 1:
        for line in (table + ("\n\n" + deltas_md if deltas_md else "")).splitlines():
            log("  " + line)
    return {"methods": names, "table": str(out / "methods.md"), "seconds": seconds}
