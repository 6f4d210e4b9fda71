"""The report-generation evaluation task: fit the generator on the TRAIN split, write reports for the held-out
split, and score three generators against the held-out reports with `report_generation_metrics`:

- `model`: the offline generator of `radfinder.eval.generation` (bank and thresholds fitted on the train split only);
- `nearest_report`: the report of the training study whose volume (retrieval) embedding is nearest by cosine;
- `most_common_report`: the training report whose rule-labeler label vector is the most frequent one.

Candidates and references are "findings\\nimpressions" with slice references left in the references as written.
Returns `{generator: {metric: value}}` plus `n_train`, `n_test` and two generated examples; the demo stores it
as `report_generation.<generator>.<metric>` in its metrics.json. A plain function, ready for a task registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .generation.fit import embed_records, fit_generator_bank, generate_for_records, report_labels
from .report_generation import BertScorer, most_common_report, nearest_report, report_generation_metrics

GENERATORS = ("model", "nearest_report", "most_common_report")


def _unique_reports(records: Sequence[Any]) -> list[Any]:
    seen, out = set(), []
    for r in records:
        if r.has_report and r.report_id not in seen:
            seen.add(r.report_id)
            out.append(r)
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
