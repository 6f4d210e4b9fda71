"""The localization protocol (issue 11 point 7): candidates and baselines only inside the scanned extent, a snippet
citing several images scored once against the nearest of its true cells, the truth in mm from pairs' ``depth_mm``,
"within N mm" inclusive and said so. Expected numbers are worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from radfinder.data.pairs import PairRow
from radfinder.eval.embed import EmbeddedVolumes
from radfinder.eval.localization import localization_metrics
from radfinder.eval.tasks import run_localization, run_localization_full
from radfinder.preprocess.cells import cells_in_scan
from test_evaluate_tasks import DIM, TableModel


def test_snippet_with_several_true_cells_is_scored_once_against_the_nearest():
    scores = [np.array([0.1, 0.9, 0.2, 0.1, 0.1]), np.array([0.1, 0.9, 0.2, 0.1, 0.1])]
    # snippet 0 cites images in cells 1 and 4: pred 1 is exact; snippet 1 cites cells 0 and 4: pred 1 is 1 cell off
    r = localization_metrics(scores, [[1, 4], [0, 4]], ["a", "b"])
    np.testing.assert_allclose(r.errors_mm["model"], [0.0, 12.0])
    assert r.n_snippets == 2 and r.metrics["model"]["acc_exact"] == 0.5
    # middle cell 2: nearest true cells 1 (12 mm) and 0 or 4 (24 mm)
    np.testing.assert_allclose(r.errors_mm["middle"], [12.0, 24.0])
    # uniform draw over 5 cells; distances to the nearest true cell: [1,0,1,1,0] and [0,1,2,1,0] cells
    assert r.metrics["random_expected"]["mae_mm"] == pytest.approx((12 * 3 / 5 + 12 * 4 / 5) / 2)
    assert r.metrics["random_expected"]["acc_exact"] == pytest.approx((2 / 5 + 2 / 5) / 2)


def test_within_is_inclusive_and_says_so():
    # cell 1's centre is 18 mm; true depth 30 mm -> error exactly 12 mm, which counts as within 12 mm
    r = localization_metrics([np.array([0.0, 1.0, 0.0, 0.0])], [2], true_depth_mm=[30.0])
    assert r.errors_mm["model"][0] == pytest.approx(12.0)
    assert r.metrics["model"]["acc_within_12mm"] == 1.0
    d = r.to_dict()
    assert "inclusive" in d["within_rule"] and "<=" in d["within_rule"]
    assert d["truth"] == "depth_mm"


def _one_scan(n_cells: int, inside: np.ndarray | None):
    rng = np.random.default_rng(0)
    depth = rng.standard_normal((n_cells, DIM)).astype(np.float32)
    emb = EmbeddedVolumes(["s_1"], np.zeros((1, DIM), np.float32), np.zeros((1, DIM), np.float32), [depth],
                          [np.arange(n_cells) * 12.0], [inside])
    return emb, depth


def test_candidates_and_baselines_never_use_padding():
    # 10 cells of which 0..3 are padding (a scan shorter than its window): candidates 4..9, middle 4 + 6 // 2 = 7
    inside = cells_in_scan(10, 4, (16, 40))
    np.testing.assert_array_equal(inside, [False] * 4 + [True] * 6)
    emb, depth = _one_scan(10, inside)
    target = depth[7] + 0.2 * np.random.default_rng(1).standard_normal(DIM).astype(np.float32)
    depth[0] = target  # a padding cell that matches the snippet exactly, better than the true cell does
    model = TableModel({"the lesion": target})
    pairs = [PairRow("s_1", "the lesion", 7), PairRow("s_1", "in the padding", 1), PairRow("gone_1", "x", 3)]
    full = run_localization_full(model, emb, pairs, cell_mm=12.0)
    res = full.localization
    assert res.pred_cells.tolist() == [7]
    assert res.metrics["middle"]["mae_mm"] == 0.0  # middle of the scanned cells, not of the padded grid (cell 5)
    # uniform over cells 4..9 against true cell 7: distances 3,2,1,0,1,2 cells
    assert res.metrics["random_expected"]["mae_mm"] == pytest.approx(12.0 * 9 / 6)
    counts = full.localization_counts
    assert counts["dropped_cell_outside_scan"] == 1 and counts["dropped_missing_scan"] == 1
    assert counts["snippets"] == 1 and counts["lines"] == 3
    prob = full.localization_probs[0]
    assert prob[:4].sum() == 0.0 and prob.sum() == pytest.approx(1.0)


def test_lines_of_one_reference_are_one_snippet_and_the_per_line_figure_is_kept_apart():
    emb, depth = _one_scan(12, np.ones(12, bool))
    model = TableModel({"nodules": depth[8].copy()})
    ref = "s_1|r1|findings|10|30"  # what data.pairs builds for two lines of one mined reference
    pairs = [PairRow("s_1", "nodules", 4, reference=ref), PairRow("s_1", "nodules", 8, reference=ref)]
    full = run_localization_full(model, emb, pairs, cell_mm=12.0)
    assert full.localization.n_snippets == 1
    assert full.localization.metrics["model"]["acc_exact"] == 1.0  # cell 8 is one of the cited images
    per_line = full.localization_per_line
    assert per_line.n_snippets == 2
    np.testing.assert_allclose(np.sort(per_line.errors_mm["model"]), [0.0, 48.0])
    res, used, _ = run_localization(model, emb, pairs, cell_mm=12.0)
    assert len(used) == 1 and res.metrics == full.localization.metrics


def test_truth_in_mm_comes_from_the_pairs_depth_mm():
    emb, depth = _one_scan(12, np.ones(12, bool))
    model = TableModel({"the mass": depth[8].copy()})
    # cell 8 spans [96, 108) mm from the start edge of cell 0; the image is at 100 mm -> error |102 - 100| = 2 mm
    full = run_localization_full(model, emb, [PairRow("s_1", "the mass", 8, depth_mm=100.0)], cell_mm=12.0)
    assert full.localization.truth == "depth_mm"
    np.testing.assert_allclose(full.localization.errors_mm["model"], [2.0])
    # the middle cell (6, centre 78 mm) is 22 mm away
    np.testing.assert_allclose(full.localization.errors_mm["middle"], [22.0])


def test_evaluate_counts_dropped_pairs_in_metrics_json_and_refuses_another_spec(tmp_path):
    import json

    from radfinder.data.manifest import load_manifest
    from radfinder.data.records import DatasetError
    from radfinder.eval.evaluate import evaluate
    from radfinder.features.store import FeatureStore, state_dict_hash
    from radfinder.train.setup import build_model
    from radfinder.train.toy import make_toy_cohort, toy_train_config

    cohort = make_toy_cohort(tmp_path / "toy", 6, seed=2)
    model = build_model(toy_train_config(cohort).model).eval()
    toy = FeatureStore.open(cohort["features"])
    store = FeatureStore(tmp_path / "features", toy.spec, {"hash": state_dict_hash(model.backbone_image)}, 12)
    for key in toy.keys():
        store.write(toy.read(key))
    records = load_manifest(cohort["manifest"])
    rows = [json.loads(x) for x in open(cohort["pairs"]).read().splitlines()]
    spec = rows[0]["spec_hash"]
    rows += [{"key": "toy_9999", "snippet": "no such scan", "depth_cell": 0, "split": "train", "spec_hash": spec},
             {"key": "toy_0000", "snippet": "past the end", "depth_cell": 10_000, "split": "train", "spec_hash": spec},
             {"key": "valid_0001", "snippet": "another split", "depth_cell": 0, "split": "valid", "spec_hash": spec}]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = evaluate(model, records, ["localization"], tmp_path / "eval", features=store.root, pairs=pairs,
                       n_boot=0, n_grounding=0)
    loc = metrics["localization"]
    assert loc["pairs"]["dropped_missing_scan"] == 1 and loc["pairs"]["dropped_cell_outside_scan"] == 1
    assert loc["pairs"]["other_splits"] == 1 and loc["pairs"]["lines"] == len(rows) - 1
    assert loc["n_snippets"] == cohort["n_pairs"] == loc["pairs"]["snippets"]
    assert "once per cited image" in loc["per_cited_image"]["scoring"]
    assert json.loads((tmp_path / "eval/metrics.json").read_text())["localization"]["pairs"] == loc["pairs"]

    rows[0] = {**rows[0], "spec_hash": "0" * 16}
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError, match="mined for preprocessing spec 0000000000000000"):
        evaluate(model, records, ["localization"], tmp_path / "eval2", features=store.root, pairs=pairs, n_boot=0,
                 n_grounding=0)
