"""The report-generation evaluation task: fit the generator on the TRAIN split, write reports for the held-out
split, and score three generators against the held-out reports with `report_generation_metrics`:

- `model`: the offline generator of `radfinder.eval.generation` (bank and thresholds fitted on the train split only);
- `nearest_report`: the report of the training study whose volume (retrieval) embedding is nearest by cosine;
- `most_common_report`: the training report whose rule-labeler label vector is the most frequent one.

Candidates and references are "findings\\nimpressions" with slice references left in the references as written.
Returns `{generator: {metric: value}}` plus `n_train`, `n_test`, two generated examples and a paired bootstrap
of `model` minus `nearest_report` (ROUGE-L and CE macro F1, resampling the held-out reports; `paired_bootstrap`);
the demo stores it as `report_generation.<generator>.<metric>` in its metrics.json.

Registered as the evaluation task `report-generation` (`radfinder evaluate --task report-generation --train-split
train`): the generator is fitted on the records the caller passes as `options["train_records"]`, never on the
evaluated split; not part of `--task all`, since it needs that second split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..text.findings import CTRATE_FINDINGS
from ..text.labeler import RuleLabeler
from .bootstrap import DEFAULT_N_BOOT
from .generation.fit import embed_records, fit_generator_bank, generate_for_records, report_labels
from .registry import EvalTask, TaskContext, register_task
from .report_generation import BertScorer, most_common_report, nearest_report, report_generation_metrics

GENERATORS = ("model", "nearest_report", "most_common_report")


def _unique_reports(records: Sequence[Any]) -> list[Any]:
    seen, out = set(), []
    for r in records:
        if r.has_report and r.report_id not in seen:
            seen.add(r.report_id)
            out.append(r)
    return out


def macro_f1(pred: np.ndarray, ref: np.ndarray) -> float:
    """Clinical-efficacy macro F1 from label arrays (N, F) as `clinical_efficacy` computes it: references -1 left
    out per finding, a generated -1 counts as negative, findings without a positive reference skipped."""
    f1 = []
    for k in range(ref.shape[1]):
        keep = ref[:, k] >= 0
        y, p = ref[keep, k] == 1, pred[keep, k] == 1
        if y.any():
            f1.append(2 * (y & p).sum() / (2 * (y & p).sum() + (~y & p).sum() + (y & ~p).sum()))
    return float(np.mean(f1)) if f1 else float("nan")


def paired_bootstrap(cand_a: Sequence[str], cand_b: Sequence[str], refs: Sequence[str], *,
                     n_boot: int = DEFAULT_N_BOOT,
                     seed: int = 0) -> dict[str, Any]:
    """a minus b on ROUGE-L (mean of per-report F) and CE macro F1, with percentile 95% CIs over `n_boot`
    resamples of the reports (the same resample for a and b)."""
    from rouge_score import rouge_scorer

    sc = rouge_scorer.RougeScorer(["rougeL"])
    ra = np.array([sc.score(r, c)["rougeL"].fmeasure for c, r in zip(cand_a, refs, strict=True)])
    rb = np.array([sc.score(r, c)["rougeL"].fmeasure for c, r in zip(cand_b, refs, strict=True)])
    lab = RuleLabeler()

    def labels(texts):
        return np.array([[lab.label(t).labels[f] for f in CTRATE_FINDINGS] for t in texts])

    la, lb, lr = labels(cand_a), labels(cand_b), labels(refs)
    rng = np.random.default_rng(seed)
    dr, dc = [], []
    for _ in range(n_boot):
        i = rng.integers(0, len(refs), len(refs))
        dr.append(ra[i].mean() - rb[i].mean())
        dc.append(macro_f1(la[i], lr[i]) - macro_f1(lb[i], lr[i]))
    out: dict[str, Any] = {"n_boot": n_boot, "seed": seed}
    for name, point, d in (("rouge_l", ra.mean() - rb.mean(), dr),
                           ("ce_macro_f1", macro_f1(la, lr) - macro_f1(lb, lr), dc)):  # fmt: skip
        d = np.asarray(d, dtype=np.float64)
        d = d[np.isfinite(d)]
        ci = [float(v) for v in np.percentile(d, [2.5, 97.5])] if len(d) else [float("nan")] * 2
        out[name] = {"difference": float(point), "ci95": ci, "p_not_above_zero": float((d <= 0).mean()) if len(d)
                     else float("nan")}  # fmt: skip
    return out


def report_text(record) -> str:
    return f"{record.findings.strip()}\n{record.impressions.strip()}"


def run_report_generation(
    model,
    train_records: Sequence[Any],
    test_records: Sequence[Any],
    *,
    features: str | Path | None = None,
    bertscore: bool = True,
    bert_scorer: BertScorer | None = None,
    n_examples: int = 2,
    n_boot: int = DEFAULT_N_BOOT,
    bank_out: str | Path | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """See the module doc. `bank_out`: also save the fitted bank there (JSON)."""
    train = _unique_reports(train_records)
    test = _unique_reports(test_records)
    train_emb = embed_records(model, train, features, show_progress)
    test_emb = embed_records(model, test, features, show_progress)
    train_labels = report_labels(train)
    bank = fit_generator_bank(model, train, labels=train_labels, emb=train_emb)
    if bank_out is not None:
        bank.save(bank_out)
    generated = generate_for_records(model, bank, test, emb=test_emb)
    refs = [report_text(r) for r in test]
    train_texts = [report_text(r) for r in train]
    cands = {
        "model": [g.text for g in generated],
        "nearest_report": nearest_report(test_emb.retrieval, train_emb.retrieval, train_texts),
        "most_common_report": [most_common_report(train_texts, train_labels)] * len(test),
    }
    scorer = bert_scorer if bert_scorer is not None or not bertscore else BertScorer()
    out: dict[str, Any] = {g: report_generation_metrics(cands[g], refs, bert_scorer=scorer, bertscore=bertscore)
                           for g in GENERATORS}  # fmt: skip
    out["paired_bootstrap"] = {"model_minus_nearest_report": paired_bootstrap(
        cands["model"], cands["nearest_report"], refs, n_boot=n_boot)}
    step = max(1, len(test) // max(1, n_examples))
    out["examples"] = [
        {"key": test[i].key, "reference": refs[i], "model": cands["model"][i],
         "nearest_report": cands["nearest_report"][i], "present": generated[i].present}
        for i in range(0, len(test), step)[:n_examples]
    ]  # fmt: skip
    out["n_train"], out["n_test"] = len(train), len(test)
    out["protocol"] = ("bank and thresholds fitted on the train split (report-derived labels); generated for the "
                       "held-out split; references: its reports (findings + impressions)")
    return out


def _task(ctx: TaskContext) -> dict[str, Any] | None:
    train = ctx.options.get("train_records")
    if not train:
        ctx.results.skipped["report-generation"] = ("needs the training split's reports to fit the generator "
                                                    "(radfinder evaluate --train-split train)")
        return None
    return run_report_generation(ctx.model, train, ctx.records, features=ctx.options.get("features_path"),
                                 n_boot=ctx.n_boot, bank_out=ctx.options.get("bank_out"))


register_task(EvalTask("report-generation", _task, aliases=("report_generation", "generation"),
                       description="findings + impression generated for each report of the split; BLEU, ROUGE-L, "
                                   "BERTScore and clinical efficacy of the model generator and two baselines"))
