from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from radfinder.eval.probe import linear_probe, scan_vectors
from radfinder.features import FeatureRecord, FeatureStore
from radfinder.preprocess.spec import PreprocessSpec


def test_probe_finds_a_separable_finding_ignores_noise_and_skips_one_class():
    rng = np.random.default_rng(0)
    n, d = 120, 10
    x = rng.normal(size=(2 * n, d)) + 50  # an offset, as raw encoder features have
    y = np.zeros((2 * n, 3), int)
    y[:, 0] = x[:, 3] > 50  # carried by one feature
    y[:, 1] = rng.random(2 * n) < 0.4  # carried by nothing
    y[:n, 2] = 0  # one class only in train
    y[n:, 2] = rng.random(n) < 0.5
    y[5, 1] = -1  # unknown label: left out
    res = linear_probe(x[:n], y[:n], x[n:], y[n:], ["sep", "noise", "one-class"], c=1.0)
    assert res["per_finding_auroc"]["sep"] > 0.97
    assert 0.3 < res["per_finding_auroc"]["noise"] < 0.7
    assert list(res["skipped"]) == ["one-class"] and res["n_test"] == n
    # same standardisation and model as scikit-learn by hand
    mu, sd = x[:n].mean(0), x[:n].std(0) + 1e-6
    clf = LogisticRegression(C=1.0, max_iter=5000).fit((x[:n] - mu) / sd, y[:n, 0])
    ref = roc_auc_score(y[n:, 0], clf.decision_function((x[n:] - mu) / sd))
    assert abs(res["per_finding_auroc"]["sep"] - ref) < 1e-9


def test_scan_vectors_are_window_mean_and_max(tmp_path):
    store = FeatureStore(tmp_path, PreprocessSpec(), {"name": "t", "hash": "abc"}, feature_dim=4)
    cls = np.arange(2 * 1 * 3 * 4, dtype=np.float32).reshape(2, 1, 3, 4)
    store.write(FeatureRecord("a", cls, cls, np.zeros((2, 1, 3, 8, 4), np.float32), np.eye(4)))
    v = scan_vectors(store, ["a"], kinds=("cls",))
    flat = cls.reshape(-1, 4)
    np.testing.assert_allclose(v[0], np.concatenate([flat.mean(0), flat.max(0)]))
    # every feature type: cls, patch_average, then the depth tokens (zeros here), each as mean and max
    both = scan_vectors(store, ["a"])[0]
    np.testing.assert_allclose(both, np.concatenate([v[0], v[0], np.zeros(8)]))


def test_probe_ci_brackets_the_auroc_and_counts_test_positives():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 5))
    y = (x[:, :1] + rng.normal(scale=1.0, size=(300, 1)) > 0.8).astype(int)
    res = linear_probe(x[:150], y[:150], x[150:], y[150:], ["f"], n_boot=400)
    lo, hi = res["per_finding_ci"]["f"]
    assert lo < res["per_finding_auroc"]["f"] < hi and hi - lo < 0.3
    assert res["test_positives"]["f"] == int(y[150:, 0].sum())


def test_probe_cohort_of_a_concatenation_reads_its_parts_side_by_side(tmp_path):
    import json

    import nibabel as nib

    from radfinder.eval.probe import probe_cohort
    from radfinder.text.findings import CTRATE_FINDINGS

    rng = np.random.default_rng(0)
    (tmp_path / "volumes").mkdir()
    lines = []
    for i in range(8):
        hu = np.full((60, 60, 20), -1000.0)
        hu[5:55, 5:55] = 40.0
        hu[12:48, 12:48] = -850.0 + rng.normal(0, 30, (36, 36, 20))
        positive = i % 2 == 1
        if positive:  # a 10 mm dense nodule in the lung
            hu[28:33, 28:33, 8:11] = 40.0
        name = f"s{i}_1.nii.gz"
        nib.save(nib.Nifti1Image(hu.astype(np.int16), np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / "volumes" / name)
        labels = {f: int(positive) if f == "Lung nodule" else 0 for f in CTRATE_FINDINGS}
        lines.append({"study": f"s{i}", "split": "train" if i < 4 else "valid", "labels": labels,
                      "volumes": [{"name": name, "path": f"volumes/{name}"}]})  # fmt: skip
    (tmp_path / "truth.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    both = probe_cohort(tmp_path, "histogram+filterbank", n_boot=0, show_progress=False, device="cpu")
    assert both["features"] == [str(tmp_path / "features-histogram"), str(tmp_path / "features-filterbank")]
    stores = [FeatureStore.open(p) for p in both["features"]]
    keys = {s: [x["study"] + "_1" for x in lines if x["split"] == s] for s in ("train", "valid")}
    x = {s: np.concatenate([scan_vectors(st, k) for st in stores], axis=1) for s, k in keys.items()}
    y = {s: np.array([[x_["labels"][f] for f in CTRATE_FINDINGS] for x_ in lines if x_["split"] == s])
         for s in keys}  # fmt: skip
    want = linear_probe(x["train"], y["train"], x["valid"], y["valid"], CTRATE_FINDINGS, n_boot=0)
    assert both["per_finding_auroc"] == want["per_finding_auroc"] and "Lung nodule" in want["per_finding_auroc"]
    assert x["train"].shape[1] == 2 * 3 * (80 + 130)  # mean and max of cls, patch_average, axis2 per part
