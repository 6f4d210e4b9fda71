"""Text-tower ablations on a finished demo folder (docs/text_tower.md): one variant trained and scored on the held-out
valid split, reusing the demo's cohort, mining and features.

  python scripts/text_tower_ablation.py DEMO OUT --text-train top1 --report-prompt 8
      trains the demo's recipe with that text mode and report_prompt weight (0 drops the objective) into OUT and runs
      the demo's evaluation stage there (OUT/metrics.json, with text_ceiling);
  ... --text-only
      trains report_prompt alone (no images, no snippets) and prints only the text ceiling: what the text side can
      learn from the train reports, without the image side's cost.
Prints one JSON line with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

TRAINED_INPUTS = ("cohort", "preprocessed", "mining", "features", "encoder", "encoder-standardized")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--text-train", default="frozen")
    ap.add_argument("--report-prompt", type=float, default=8.0)
    ap.add_argument("--epochs", type=float, default=None)
    ap.add_argument("--text-only", action="store_true")
    ap.add_argument("--n-boot", type=int, default=10_000)
    a = ap.parse_args()

    from radfinder.demo import config as demo_config
    from radfinder.demo.config import DemoSettings

    weights = demo_config.DEMO_TRAIN["losses"]["weights"]
    weights.pop("report_prompt", None)
    if a.report_prompt:
        weights["report_prompt"] = a.report_prompt
    if a.text_only:
        demo_config.DEMO_TRAIN["losses"]["weights"] = {"report_prompt": a.report_prompt or 8.0}
    s = DemoSettings(text_train=a.text_train, progress=False, n_boot=a.n_boot,
                     **({"train_epochs": a.epochs} if a.epochs else {}))
    a.out.mkdir(parents=True, exist_ok=True)
    for name in TRAINED_INPUTS:
        if not (a.out / name).exists():
            (a.out / name).symlink_to((a.demo / name).resolve())
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    if a.text_only:
        print(json.dumps(_text_only(a.out, s)))
        return
    from radfinder.demo.stages import stage_evaluate, stage_train

    info = stage_train(a.out, s, print)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stage_evaluate(a.out, s, print)
    m = json.loads((a.out / "metrics.json").read_text())
    r, z, loc, tc = m["retrieval"], m["zero_shot"], m["localization"], m["text_ceiling"]
    print(json.dumps({"text_train": a.text_train, "report_prompt": a.report_prompt, "steps": info.get("steps"),
                      "train_wall_s": round(train_s), "train_cpu_s": round(train_cpu), "R@10": r.get("R@10"),
                      "chance_R@10": r.get("chance_R@10"), "median_rank": r.get("median_rank"),
                      "n_gallery": r.get("n_gallery"), "zero_shot_macro_auroc": z["macro_auroc"],
                      "localization_mae_mm": loc["mae_mm"], "middle_mae_mm": loc["baseline_middle_mae_mm"],
                      "text_ceiling": tc["zero_shot_macro_auroc"],
                      "text_ceiling_frozen": tc["frozen_zero_shot_macro_auroc"],
                      "negation_cosine": tc["negation_cosine"]}))


def _text_only(out: Path, s) -> dict:
    import numpy as np

    from radfinder.data.ctrate import load_ctrate
    from radfinder.demo.config import train_config_dict
    from radfinder.demo.stages import small_model_threads, text_ceiling_summary
    from radfinder.models.pretrained import from_pretrained
    from radfinder.train.checkpoint import latest_checkpoint
    from radfinder.train.config import TrainConfig
    from radfinder.train.trainer import train

    train_records = load_ctrate(out / "cohort", split="train", mode="first_all")
    d = train_config_dict(s, out, out / "encoder-standardized", len(train_records))
    d["data"]["max_snippets_per_scan"] = 0
    cpu0 = time.process_time()
    with small_model_threads(s.device):
        res = train(TrainConfig.model_validate(d), out / "train-text-only")
    cpu = time.process_time() - cpu0
    valid = load_ctrate(out / "cohort", split="valid", mode="first_all")
    labels = np.stack([r.labels for r in valid])
    c = text_ceiling_summary(from_pretrained(latest_checkpoint(out / "train-text-only") / "model"),
                             from_pretrained(out / "encoder-standardized"), valid, labels, s.n_boot)
    return {"text_train": s.text_train, "steps": res.steps, "train_cpu_s": round(cpu),
            "text_ceiling": c["zero_shot_macro_auroc"], "text_ceiling_ci": c["zero_shot_macro_auroc_ci"],
            "text_ceiling_frozen": c["frozen_zero_shot_macro_auroc"], "negation_cosine": c["negation_cosine"]}


if __name__ == "__main__":
    main()
