"""Per-finding zero-shot calibration: the Platt fit against scipy's optimiser and a known generating model, the
checkpoint file round trip (absent -> uncalibrated), `classify` with and without it, and the fit's wiring (margins
of `api.classify`, labels of the rule labeler on the TRAIN reports)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy.optimize import minimize

from helpers_library import tiny_library
from radfinder.api import calibrate, classify, load_model
from radfinder.errors import CheckpointError
from radfinder.models.calibration import CALIBRATION_FILE, FindingCalibration, fit_platt, read_calibration


def _platt_objective(m, y):
    """Cross-entropy against Platt's smoothed targets, written out independently of the Newton solver."""
    n_pos, n_neg = (y == 1).sum(), (y == 0).sum()
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def f(w):
        z = w[0] * m + w[1]
        return float(np.sum(np.logaddexp(0, z) - t * z))

    return f


@pytest.mark.parametrize("spread", [0.01, 1.0, 30.0])
def test_platt_fit_minimises_the_smoothed_cross_entropy(spread):
    rng = np.random.default_rng(1)
    m = rng.normal(0.02, spread, 400)
    y = (rng.random(400) < 1 / (1 + np.exp(-(m / spread * 2.0 - 1.0)))).astype(float)
    a, b = fit_platt(m, y, l2=0.0)
    f = _platt_objective(m, y)
    ref = minimize(f, x0=[0.0, 0.0], method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000}).x  # fmt: skip
    assert f([a, b]) <= f(ref) + 1e-6
    assert a == pytest.approx(ref[0], rel=1e-3) and b == pytest.approx(ref[1], rel=1e-3, abs=1e-3)


def test_platt_fit_recovers_a_known_scale_and_bias_and_survives_one_class():
    rng = np.random.default_rng(0)
    m = rng.normal(0.0, 0.05, 50_000)
    y = (rng.random(m.size) < 1 / (1 + np.exp(-(40.0 * m - 2.0)))).astype(float)
    y[:500] = -1  # uncertain labels are left out
    a, b = fit_platt(m, y)
    assert a == pytest.approx(40.0, rel=0.05) and b == pytest.approx(-2.0, abs=0.05)
    a0, b0 = fit_platt(m[:100], np.zeros(100))  # no positive report: finite, near the smoothed prior 1/102
    assert np.isfinite([a0, b0]).all() and 1 / (1 + np.exp(-b0)) == pytest.approx(1 / 102, rel=0.05)
    assert abs(a0) < 1e-3


def test_calibration_file_round_trip_and_errors(tmp_path):
    cal = FindingCalibration(("A", "B"), [2.0, -1.0], [0.5, 0.0], {"n": 3})
    cal.save(tmp_path)
    back = read_calibration(tmp_path)
    assert back.findings == ("A", "B") and back.meta == {"n": 3}
    m = np.array([[0.1, 0.2], [-0.3, 0.0]])
    np.testing.assert_allclose(back.probabilities(m), 1 / (1 + np.exp(-(m * [2.0, -1.0] + [0.5, 0.0]))))
    np.testing.assert_allclose(back.probabilities(m[:, ::-1], ["B", "A"]), back.probabilities(m)[:, ::-1])
    assert read_calibration(tmp_path / "none") is None
    with pytest.raises(CheckpointError, match="no entry for C"):
        back.probabilities(m, ["A", "C"])
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CheckpointError, match="not a radfinder finding calibration"):
        read_calibration(tmp_path)


def test_classify_is_calibrated_only_with_a_calibration_file(tmp_path_factory, tmp_path):
    tiny = tiny_library(tmp_path_factory)
    ckpt = shutil.copytree(tiny["ckpt"], tmp_path / "ckpt")
    scan = tiny["manifest"].parent / "nodule.nii.gz"
    raw = classify(load_model(ckpt, device="cpu"), scan)
    assert not any(s.calibrated for s in raw)
    assert all(s.probability == pytest.approx(1 / (1 + np.exp(-s.margin))) for s in raw)
    names = [s.finding for s in raw]
    scale, bias = np.linspace(5, 50, 18), np.linspace(-2, 1, 18)
    FindingCalibration(names, scale, bias).save(ckpt)
    model = load_model(ckpt, device="cpu")
    assert model.calibration is not None
    cal = classify(model, scan)
    assert all(s.calibrated for s in cal)
    for s, r, a, b in zip(cal, raw, scale, bias, strict=True):
        assert s.margin == pytest.approx(r.margin, abs=1e-6)  # the scoring itself is unchanged
        assert s.probability == pytest.approx(1 / (1 + np.exp(-(a * s.margin + b))), rel=1e-6)


def test_calibrate_fits_the_classify_margins_against_the_reports_rule_labels(tmp_path_factory, tmp_path):
    from radfinder.data.registry import load_dataset
    from radfinder.eval.calibration import calibration_inputs
    from radfinder.text.labeler import RuleLabeler

    tiny = tiny_library(tmp_path_factory)
    ckpt = shutil.copytree(tiny["ckpt"], tmp_path / "ckpt")
    model = load_model(ckpt, device="cpu")
    records = load_dataset("manifest", tiny["manifest"], None)
    cal = calibrate(model, records)
    assert (ckpt / CALIBRATION_FILE).is_file() and model.calibration is cal
    assert load_model(ckpt, device="cpu").calibration.findings == cal.findings
    # what the fit saw: the margins classify computes on each scan, the rule labels of each record's own report
    margins, y, names, _ = calibration_inputs(model, records)
    labeler = RuleLabeler()
    for i, r in enumerate(records):
        by_name = {s.finding: s.margin for s in classify(model, r.path)}
        np.testing.assert_allclose(margins[i], [by_name[f] for f in names], atol=1e-5)
        assert list(y[i]) == [labeler.label(r.findings, r.impressions).labels[f] for f in names]
    refit = FindingCalibration.fit(margins, y, names)
    np.testing.assert_allclose(cal.scale, refit.scale)
    assert cal.meta["positives"] == {f: int((y[:, j] == 1).sum()) for j, f in enumerate(names)}
    assert cal.meta["splits"] == ["test"] and cal.meta["n"] == len(records)


def test_cli_calibrate_writes_what_the_api_fits(tmp_path_factory, tmp_path, capsys):
    from radfinder.cli import main
    from radfinder.data.registry import load_dataset

    tiny = tiny_library(tmp_path_factory)
    capsys.readouterr()
    rc = main(["calibrate", str(tiny["ckpt"]), "--data", str(tiny["manifest"]), "--kind", "manifest", "--split",
               "test", "--out", str(tmp_path / "cal"), "--device", "cpu", "--json"])  # fmt: skip
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["calibration"] == str(tmp_path / "cal" / CALIBRATION_FILE)
    got = read_calibration(tmp_path / "cal")
    want = calibrate(load_model(tiny["ckpt"], device="cpu"), load_dataset("manifest", tiny["manifest"], "test"),
                     save=False)  # fmt: skip
    np.testing.assert_allclose(got.scale, want.scale, rtol=1e-6)
    np.testing.assert_allclose(got.bias, want.bias, rtol=1e-6)
    assert not (tiny["ckpt"] / CALIBRATION_FILE).exists()  # --out: the shared checkpoint is left alone
    assert main(["calibrate", str(tmp_path / "nope"), "--data", str(tiny["manifest"])]) == 2
