"""Report generation's evaluation task on the five-scan library fixture, fast enough for `make test` (the demo
cohort runs are `slow`): the examples it shows are the held-out studies with their own reports as references."""

from __future__ import annotations

import pytest

from helpers_library import REPORTS, make_checkpoint, make_manifest
from radfinder.api import load_model
from radfinder.data.manifest import load_manifest
from radfinder.eval.report_generation_task import GENERATORS, run_report_generation


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("rg")
    model = load_model(make_checkpoint(base / "ckpt"), device="cpu")
    records = load_manifest(make_manifest(base / "data"))
    return model, records[:3], records[3:]


def test_examples_are_the_held_out_studies_with_their_own_reports(setup):
    model, train, test = setup
    assert [r.key for r in test] == ["nodule", "normal"]
    out = run_report_generation(model, train, test, bertscore=False, n_boot=0, n_examples=2)
    assert out["n_train"] == 3 and out["n_test"] == 2
    assert set(GENERATORS) <= set(out)
    ex = out["examples"]
    assert [e["key"] for e in ex] == ["nodule", "normal"]
    train_texts = {REPORTS[r.key].strip() for r in train}
    for e in ex:
        assert e["reference"].strip() == REPORTS[e["key"]]  # findings + (empty) impressions of that study
        assert e["nearest_report"].strip() in train_texts  # retrieved from the train split, never the test one
        assert e["model"] and e["model"] != e["reference"]
