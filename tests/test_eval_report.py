"""metrics.json and the HTML report written from synthetic arrays; grounding-figure geometry."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from radfinder.eval.classification import evaluate_scores
from radfinder.eval.grounding import plot_grounding_example, to_ras_grid
from radfinder.eval.localization import localization_metrics
from radfinder.eval.pool_retrieval import pool_retrieval
from radfinder.eval.report import (
    GroundingExample,
    build_metrics,
    collect_metadata,
    write_metrics_json,
    write_report,
)
from radfinder.eval.retrieval import bidirectional_retrieval


def _no_nan(token):
    raise AssertionError(f"non-JSON number {token}")


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(64, 8))
    txt = img + rng.normal(size=(64, 8))
    y = (rng.random((64, 3)) < 0.4).astype(int)
    y[:, 2] = 0  # skipped finding
    cls = evaluate_scores(y + rng.normal(size=(64, 3)), y, ["A", "B", "C"], n_boot=200)
    loc = localization_metrics([rng.normal(size=10) for _ in range(20)], rng.integers(0, 10, 20))
    return {
        "retrieval": bidirectional_retrieval(txt, img, ks=(1, 5, 10), n_boot=200),
        "pool_retrieval": {"full": pool_retrieval(txt, img, pool_sizes=(32,), n_repeats=3)},
        "classification": {"task one": cls},
        "localization": loc,
    }


def test_write_report_json_html_and_images(tmp_path, results):
    vol = np.zeros((20, 24, 16), dtype=np.int16)
    vol[5:15, 6:18, 4:12] = 300
    aff = np.diag([-2.0, -2.0, 3.0, 1.0])
    probs = np.full(4, 0.25)
    ex = GroundingExample(vol, aff, probs, snippet="Nodule <b>", scan_id="s1", true_cell=2)
    meta = collect_metadata(checkpoint="ckpt.pt", data="synthetic", spec_hash="h", n=64)
    paths = write_report(tmp_path / "rep", metadata=meta, grounding=[ex], **results)

    metrics = json.loads(paths.metrics_json.read_text(), parse_constant=_no_nan)
    assert metrics["metadata"]["checkpoint"] == "ckpt.pt" and metrics["metadata"]["n"] == 64
    assert "git_sha" in metrics["metadata"]
    assert set(metrics) == {"metadata", "retrieval", "pool_retrieval", "classification", "localization"}
    assert metrics["retrieval"]["text_to_volume"]["recall"]["R@1"] == results["retrieval"]["text_to_volume"].recall[1]
    assert metrics["classification"]["task one"]["skipped"].keys() == {"C"}
    assert metrics["localization"]["random_expected"]["median_mm"] is None

    page = paths.html.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == len(paths.figures) == 6
    for s in srcs:
        f = paths.out_dir / s
        assert f.is_file() and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Nodule <b>" not in page  # texts are escaped (the snippet itself lives in the figure)
    assert "task one" in page and "Snippet localization" in page


def test_embedded_report_is_single_file(tmp_path, results):
    paths = write_report(tmp_path, metadata={"data": "x"}, retrieval=results["retrieval"], embed_images=True)
    srcs = re.findall(r'<img src="([^"]+)"', paths.html.read_text())
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_build_metrics_turns_nan_into_null(tmp_path):
    m = build_metrics(metadata={"x": float("nan"), "arr": np.array([1.0, np.inf]), "k": np.int64(3)})
    assert m["metadata"] == {"x": None, "arr": [1.0, None], "k": 3}
    path = write_metrics_json(tmp_path / "m.json", {"a": {"b": np.float32(0.5), "c": float("nan")}})
    assert json.loads(path.read_text(), parse_constant=_no_nan) == {"a": {"b": 0.5, "c": None}}


def test_to_ras_grid_reorients_to_ras():
    vol = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    # array axis 0 -> world -y (posterior), axis 1 -> +z, axis 2 -> -x (left)
    aff = np.array([[0, 0, -1.5, 10], [-2.0, 0, 0, 5], [0, 3.0, 0, -7], [0, 0, 0, 1]])
    ras, spacing, origin = to_ras_grid(vol, aff)
    assert ras.shape == (4, 2, 3)
    np.testing.assert_allclose(spacing, [1.5, 2.0, 3.0])
    np.testing.assert_allclose(origin, [10 - 1.5 * 3, 5 - 2.0, -7])
    # RAS index (x, y, z) holds the voxel whose world position is origin + spacing * index
    for x, y, z in [(0, 0, 0), (3, 1, 2), (1, 0, 1)]:
        i, j, k = (1 - y), z, (3 - x)
        world = aff[:3, :3] @ [i, j, k] + aff[:3, 3]
        np.testing.assert_allclose(world, origin + spacing * [x, y, z])
        assert ras[x, y, z] == vol[i, j, k]


def test_grounding_plot_writes_png(tmp_path):
    vol = np.random.default_rng(0).normal(size=(16, 16, 30))
    out = plot_grounding_example(
        vol,
        np.diag([1.0, 1.0, 2.0, 1.0]),
        [0.1, 0.6, 0.3, 0.0, 0.0],
        tmp_path / "g" / "x.png",
        true_world_z_mm=20.0,
        view="sagittal",
        window=None,
    )
    assert out.is_file() and out.stat().st_size > 1000
