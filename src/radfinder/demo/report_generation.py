"""The demo's report-generation stage: the bank fitted on the TRAIN split (saved beside the trained checkpoint as
`generator_bank.json`), reports generated for the held-out valid split, the three generators scored
(`report_generation.<generator>.<metric>` in DIR/metrics.json) and two generated reports beside their references
in DIR/report_generation_examples.md."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import DemoSettings
from .stages import small_model_threads

GENERATORS = ("model", "nearest_report", "most_common_report")
METRICS = ("ce_macro_f1", "rouge_l", "bleu1", "bleu4", "bertscore_f1")


def examples_markdown(result: dict[str, Any]) -> str:
    lines = ["# Generated reports beside their references (held-out valid split)", "",
             "Generator `model` (bank and thresholds fitted on the train split); the first and a middle study of the "
             "split, not picked by score.", ""]  # fmt: skip
    for ex in result["examples"]:
        lines += [f"## {ex['key']}", "", "**Reference**", "", ex["reference"].replace("\n", "\n\n"), "",
                  "**Generated (`model`)**", "", ex["model"].replace("\n", "\n\n"), "",
                  "**`nearest_report`**", "", ex["nearest_report"].replace("\n", "\n\n"), ""]  # fmt: skip
    return "\n".join(lines)


def table_lines(rg: dict[str, Any]) -> list[str]:
    title = "report generation (valid)"
    head = f"{title:<25} | " + " | ".join(f"{m:>12}" for m in METRICS)
    out = [head, "-" * len(head)]
    for g in GENERATORS:
        out.append(f"{g:<25} | " + " | ".join(f"{rg[g].get(m, float('nan')):>12.3f}" for m in METRICS))
    return out


def stage_report_generation(out: Path, s: DemoSettings, log: Callable[[str], None]) -> dict[str, Any]:
    if not s.report_generation:
        return {"skipped": "report_generation is off"}

    from ..data.ctrate import load_ctrate
    from ..eval.report_generation_task import run_report_generation
    from ..models.pretrained import from_pretrained
    from ..preprocess.cache import atomic_write_bytes

    model = from_pretrained(out / "model")
    with small_model_threads(s.device):
        train = load_ctrate(out / "cohort", split="train", mode="first_all")
        valid = load_ctrate(out / "cohort", split="valid", mode="first_all")
        res = run_report_generation(model, train, valid, features=out / "features",
                                    bank_out=out / "model" / "generator_bank.json", n_boot=s.n_boot)
    metrics_path = out / "metrics.json"
    summary = json.loads(metrics_path.read_text())
    summary["report_generation"] = {k: v for k, v in res.items() if k != "examples"}
    atomic_write_bytes(metrics_path, (json.dumps(summary, indent=2) + "\n").encode())
    atomic_write_bytes(out / "report_generation_examples.md", examples_markdown(res).encode())
    for line in table_lines(res):
        log("  " + line)
    return {g: {m: res[g].get(m) for m in METRICS} for g in GENERATORS} | {"n_test": res["n_test"]}
