"""Task runners of `radfinder evaluate`: known answers with a model whose embeddings are constructed, and the same
numbers as an independent computation (plain loops, scikit-learn) on the same embeddings."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from radfinder.data.records import StudyRecord
from radfinder.eval import localization_metrics
from radfinder.eval.embed import EmbeddedVolumes
from radfinder.eval.evaluate import resolve_tasks, run_tasks
from radfinder.eval.tasks import (
    SnippetPair,
    read_pairs,
    run_localization,
    run_retrieval,
    run_zero_shot,
)
from radfinder.eval.zero_shot import MEAN7_TEMPLATES
from radfinder.preprocess.spec import PreprocessSpec
from radfinder.text.findings import CTRATE_FINDINGS

DIM = 16


class TableModel:
    """Stands in for RadFinderModel: every text has a fixed embedding looked up in a table (unknown texts get a
    vector seeded by its CRC-32); the snippet head returns the same vectors."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = dict(table)
        self.texts: list[str] = []
        self.config = type("C", (), {"projection_dim": DIM, "localization_tau": 0.1})()
        self.preprocess_spec = PreprocessSpec()

    def eval(self):
        return self

    def tokenize(self, texts):
        ids = []
        for t in texts:
            if t not in self.texts:
                self.texts.append(t)
            ids.append(self.texts.index(t))
        ids_t = torch.tensor(ids)[:, None]
        return {"input_ids": ids_t, "attention_mask": torch.ones_like(ids_t)}

    def _vec(self, text: str) -> np.ndarray:
        if text not in self.table:
            seed = zlib.crc32(text.encode())  # stable across processes, unlike hash()
            self.table[text] = np.random.default_rng(seed).standard_normal(DIM)
        return self.table[text]

    def encode_text(self, input_ids, attention_mask):
        return torch.tensor(np.stack([self._vec(self.texts[int(i)]) for i in input_ids[:, 0]]), dtype=torch.float32)

    encode_snippet = encode_text


def _records(n: int, labels: np.ndarray | None = None) -> list[StudyRecord]:
    out = []
    for i in range(n):
        lab = labels[i] if labels is not None else np.full(18, -1.0, np.float32)
        out.append(StudyRecord(key=f"valid_{i}_a_1", path="", report_id=f"valid_{i}_a", findings=f"finding text {i}",
                               impressions=f"impression {i}", patient=f"valid_{i}", split="valid", dataset="t",
                               labels=np.asarray(lab, np.float32)))
    return out


def test_retrieval_perfect_when_reports_and_volumes_share_embeddings():
    rng = np.random.default_rng(0)
    recs = _records(30)
    vol = rng.standard_normal((30, DIM))
    model = TableModel({r.report_text: vol[i] for i, r in enumerate(recs)})
    emb = EmbeddedVolumes([r.key for r in recs], vol.astype(np.float32), vol.astype(np.float32))
    res = run_retrieval(model, recs, emb, n_boot=0)
    for direction in ("text_to_volume", "volume_to_text"):
        assert res[direction].recall[1] == 1.0
        assert res[direction].median_rank == 1.0
        assert res[direction].chance[10] == pytest.approx(10 / 30)


def _loop_rank(scores: list[float], positive: list[bool]) -> int:
    """Rank of the best positive, ties counted against it: 1 + negatives scoring at least as high."""
    best = max(s for s, p in zip(scores, positive, strict=True) if p)
    return 1 + sum(1 for s, p in zip(scores, positive, strict=True) if not p and s >= best)


def _cos(a, b) -> float:
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def test_retrieval_ranks_by_hand_and_groups_reconstructions():
    rng = np.random.default_rng(1)
    recs = _records(12)
    # a second reconstruction of study 3 shares its report: both volumes are positives of that query
    extra = StudyRecord(key="valid_3_a_2", path="", report_id="valid_3_a", findings=recs[3].findings,
                        impressions=recs[3].impressions, patient="valid_3", split="valid", dataset="t")
    recs.insert(4, extra)
    vol = rng.standard_normal((13, DIM)).astype(np.float32)
    text = {r.report_text: rng.standard_normal(DIM) for r in recs}
    model = TableModel(text)
    emb = EmbeddedVolumes([r.key for r in recs], vol, vol)
    res = run_retrieval(model, recs, emb, n_boot=0)
    reports = list(dict.fromkeys(r.report_id for r in recs))  # one query per report, in record order
    assert len(reports) == 12
    report_text = {r.report_id: r.report_text for r in recs}
    t2v = [_loop_rank([_cos(text[report_text[q]], v) for v in vol], [r.report_id == q for r in recs]) for q in reports]
    v2t = [_loop_rank([_cos(v, text[report_text[q]]) for q in reports], [r.report_id == q for q in reports])
           for v, r in zip(vol, recs, strict=True)]
    np.testing.assert_array_equal(res["text_to_volume"].ranks, t2v)
    np.testing.assert_array_equal(res["volume_to_text"].ranks, v2t)
    for d, ranks in (("text_to_volume", t2v), ("volume_to_text", v2t)):
        for k in (1, 5, 10):
            assert res[d].recall[k] == pytest.approx(np.mean(np.asarray(ranks) <= k))
        assert res[d].median_rank == pytest.approx(np.median(ranks))
    # the grouped query of study 3 has two positives: its rank is that of the better-scoring volume
    q3 = reports.index("valid_3_a")
    s3 = [_cos(text[report_text["valid_3_a"]], v) for v in vol]
    assert t2v[q3] == 1 + sum(s >= max(s3[3], s3[4]) for i, s in enumerate(s3) if i not in (3, 4))


def _mean7_probability_by_hand(image: np.ndarray, pos: list[np.ndarray], neg: list[np.ndarray]) -> float:
    """The CT-RATE mean7 rule written out: normalise each prompt, average, renormalise; softmax over two cosines."""
    def mean_dir(vs):
        m = np.mean([v / np.linalg.norm(v) for v in vs], axis=0)
        return m / np.linalg.norm(m)

    cp, cn = _cos(image, mean_dir(pos)), _cos(image, mean_dir(neg))
    return float(np.exp(cp) / (np.exp(cp) + np.exp(cn)))


def test_zero_shot_matches_scikit_learn_on_hand_computed_scores_and_is_perfect_by_construction():
    rng = np.random.default_rng(2)
    n = 40
    labels = (rng.random((n, 18)) < 0.4).astype(np.float32)
    labels[0], labels[1] = 1, 0  # both classes present everywhere
    # each finding gets a direction; positive prompts point along it, negative prompts opposite
    dirs = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0]
    table = {}
    assert DIM < 18  # several findings share directions: the AUROCs are not all perfect then
    for f_i, name in enumerate(CTRATE_FINDINGS):
        d = dirs[:, f_i % DIM]
        for p, q in MEAN7_TEMPLATES:
            table[p.format(a=name)] = d + 0.3 * rng.standard_normal(DIM)
            table[q.format(a=name)] = -d + 0.3 * rng.standard_normal(DIM)
    model = TableModel(table)
    disease = rng.standard_normal((n, DIM)).astype(np.float32)
    emb = EmbeddedVolumes([f"k{i}" for i in range(n)], disease, disease)
    res = run_zero_shot(model, emb, labels, n_boot=0)
    aurocs = []
    for f_i, name in enumerate(CTRATE_FINDINGS):
        pos = [table[p.format(a=name)] for p, _ in MEAN7_TEMPLATES]
        neg = [table[q.format(a=name)] for _, q in MEAN7_TEMPLATES]
        probs = [_mean7_probability_by_hand(x.astype(np.float64), pos, neg) for x in disease]
        aurocs.append(roc_auc_score(labels[:, f_i], probs))
        assert res.findings[name].auroc == pytest.approx(aurocs[-1], abs=1e-9)
    assert res.macro_auroc == pytest.approx(np.mean(aurocs), abs=1e-9)
    assert 0.2 < res.macro_auroc < 0.8  # random image embeddings: near chance, not a degenerate 0 or 1
    # perfect by construction for the first finding: image embeddings along +d for positives, -d for negatives
    y0 = labels[:, 0]
    disease2 = np.outer(2 * y0 - 1, dirs[:, 0]).astype(np.float32) + 0.01 * rng.standard_normal((n, DIM)).astype(
        np.float32)
    res2 = run_zero_shot(model, EmbeddedVolumes(emb.keys, disease2, disease2), labels, n_boot=0)
    assert res2.findings[CTRATE_FINDINGS[0]].auroc == 1.0


def test_localization_exact_when_snippet_equals_true_cell_and_matches_api():
    rng = np.random.default_rng(4)
    keys = ["a_1", "b_1", "c_1"]
    depth = [rng.standard_normal((n, DIM)).astype(np.float32) for n in (10, 14, 7)]
    pairs = []
    table = {}
    for k, d in zip(keys, depth, strict=True):
        for cell in (1, d.shape[0] - 2):
            text = f"snippet {k} {cell}"
            table[text] = d[cell]
            pairs.append(SnippetPair(k, text, cell))
    pairs.append(SnippetPair("missing_1", "not evaluated", 0))
    pairs.append(SnippetPair("c_1", "outside the scan", 50))
    model = TableModel(table)
    emb = EmbeddedVolumes(keys, np.zeros((3, DIM), np.float32), np.zeros((3, DIM), np.float32), depth,
                          [np.arange(len(d)) * 12.0 for d in depth])
    res, used, probs = run_localization(model, emb, pairs, cell_mm=12.0)
    assert len(used) == 6 and len(probs) == 6
    assert res.metrics["model"]["mae_mm"] == 0.0
    assert res.metrics["model"]["acc_exact"] == 1.0
    assert all(abs(p.sum() - 1) < 1e-5 and p.argmax() == u.depth_cell for p, u in zip(probs, used, strict=True))
    # same numbers as the metric API on the same cosine scores
    scores = []
    for u in used:
        c = depth[keys.index(u.key)]
        s = table[u.snippet]
        scores.append(c @ s / np.linalg.norm(c, axis=1) / np.linalg.norm(s))
    ref = localization_metrics(scores, [u.depth_cell for u in used], [u.key for u in used], cell_mm=12.0)
    assert ref.metrics == res.metrics
    one, used1, _ = run_localization(model, emb, pairs, cell_mm=12.0, one_per_scan=True)
    assert [u.key for u in used1] == keys and one.n_snippets == 3


def test_read_pairs_and_resolve_tasks(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text(json.dumps({"key": "a", "snippet": "nodule", "depth_cell": 3}) + "\n\n"
                 + json.dumps({"key": "b", "snippet": "x", "depth_cell": 1, "depth_mm": 20.5}) + "\n")
    assert [q.key for q in read_pairs(p)] == ["a", "b"]
    assert read_pairs(p, ["b"])[0].depth_mm == 20.5
    assert resolve_tasks(["all"], "ctrate", has_pairs=False) == ["retrieval", "zero-shot"]
    assert resolve_tasks(["all"], "ctrate", has_pairs=True) == ["retrieval", "zero-shot", "localization"]
    assert resolve_tasks(["all"], "radchestct", False) == ["radchestct"]
    assert resolve_tasks(["zero_shot", "retrieval", "retrieval"], "ctrate", False) == ["zero-shot", "retrieval"]
    from radfinder.errors import RadfinderError

    with pytest.raises(RadfinderError):
        resolve_tasks(["segmentation"], "ctrate", False)


def test_run_tasks_rejects_empty_records():
    from radfinder.eval.embed import EvalSetupError

    with pytest.raises(EvalSetupError):
        run_tasks(TableModel({}), [], ["retrieval"])


def test_evaluate_cli_user_errors(tmp_path):
    from radfinder.cli import main

    assert main(["evaluate", str(tmp_path), "--data", str(tmp_path), "--task", "segmentation"]) == 2
    assert main(["evaluate", str(tmp_path), "--data", str(tmp_path / "nope"), "--task", "retrieval"]) == 2


def test_report_generation_refuses_to_fit_on_the_evaluated_split(tmp_path, capsys):
    """The leakage guard, fast: it refuses before any model is loaded (the checkpoint path need not exist), so the
    generator's reports can never be the references it is scored against."""
    from helpers_library import make_manifest
    from radfinder.cli import main

    manifest = make_manifest(tmp_path / "data")
    base = ["evaluate", str(tmp_path / "ckpt"), "--data", str(manifest), "--kind", "manifest", "--task",
            "report-generation", "--out", str(tmp_path / "ev"), "--n-boot", "0", "--device", "cpu"]
    assert main([*base, "--split", "test", "--train-split", "test"]) == 2
    err = capsys.readouterr().err
    assert "error: --train-split test is the evaluated split" in err and not (tmp_path / "ev").exists()


def test_evaluate_summary_lines_show_each_section(capsys):
    """The human summary of `radfinder evaluate` (without --json): one line per section present, numbers as shown."""
    from radfinder.cli.eval_cmds import _print_summary

    _print_summary({
        "retrieval": {"text_to_volume": {"n_queries": 7, "recall": {"R@1": 0.25, "R@10": 0.5},
                                         "chance": {"R@1": 0.125, "R@10": 0.375}, "median_rank": 3.0}},
        "classification": {"zero-shot (mean7)": {"macro_auroc": 0.6543, "n_findings": 18}},
        "pool_retrieval": {"merlin": {"R@10": 0.2}},
        "localization": {"n_snippets": 9, "model": {"mae_mm": 12.34}, "middle": {"mae_mm": 40.0},
                         "random_expected": {"mae_mm": 55.55}},
        "metadata": {"skipped": {"report-generation": "needs --train-split"}},
        "report": {"html": "/x/report.html"},
    })  # fmt: skip
    assert capsys.readouterr().out.splitlines() == [
        "retrieval text->volume (7 queries): R@1 25.0% (chance 12.5%), R@10 50.0% (chance 37.5%), median rank 3.0",
        "zero-shot (mean7): macro AUROC 0.654 over 18 findings",
        "pool retrieval merlin: {'R@10': 0.2}",
        "localization (9 snippets): MAE 12.3 mm (middle 40.0, random 55.5)",
        "skipped report-generation: needs --train-split",
        "report: /x/report.html",
    ]
    _print_summary({"report": {"html": "r.html"}})  # sections absent: no line for them
    assert capsys.readouterr().out.splitlines() == ["report: r.html"]


def test_evaluate_cli_defaults_mirror_the_api():
    """The CLI mirrors the Python API: its defaults for the bootstrap and the seed are `evaluate()`'s."""
    import inspect

    from radfinder.cli.eval_cmds import evaluate_cmd
    from radfinder.eval.evaluate import evaluate

    cli = {k: p.default.default for k, p in inspect.signature(evaluate_cmd).parameters.items()}
    api = inspect.signature(evaluate).parameters
    assert (cli["n_boot"], cli["seed"]) == (api["n_boot"].default, api["seed"].default)
    assert (cli["limit"], cli["task"], cli["kind"], cli["split"]) == (0, ["all"], "ctrate", "")
