"""Linear probe on frozen window features: how much of each finding the cached features carry at all.

A diagnostic for a window encoder, not one of the paper's protocols: each scan becomes the mean and the maximum of
its windows' features (by default every feature type: `cls`, `patch_average` and the `axis2` depth tokens),
standardised with the TRAIN scans' statistics, and one L2-regularised logistic regression per finding is fitted on
the train scans and scored (AUROC, with a percentile-bootstrap CI over the test scans) on the held-out ones. A
contrastive model trained on the same features rarely does better than this probe, so it tells whether a weak
zero-shot figure comes from the features or from the training.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..features import FeatureStore
from .binary import auroc
from .bootstrap import DEFAULT_N_BOOT, bootstrap_counts, percentile_ci, weighted_auroc

FEATURE_KINDS = ("cls", "patch_average", "axis2")


def scan_vectors(store: FeatureStore, keys: Sequence[str], kinds: Sequence[str] = FEATURE_KINDS) -> np.ndarray:
    """(n_scans, 2 * len(kinds) * feature_dim): per feature type, the mean and the max over each scan's windows
    (over its windows' depth tokens for `axis2`)."""
    rows = []
    for key in keys:
        rec = store.read(key)
        parts = []
        for kind in kinds:
            x = np.asarray(getattr(rec, kind), dtype=np.float64).reshape(-1, store.feature_dim)
            parts += [x.mean(0), x.max(0)]
        rows.append(np.concatenate(parts))
    return np.stack(rows)


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    names: Sequence[str],
    *,
    c: float = 0.1,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-finding logistic regression (inverse regularisation `c`) fitted on train, AUROC on test (with a 95%
    percentile-bootstrap CI over the test scans when `n_boot` > 0) and the test positives per finding.

    Labels are 0/1 (anything else, e.g. -1 for unknown, is left out of that finding); a finding without both
    classes in train and in test is listed under "skipped"."""
    from sklearn.linear_model import LogisticRegression

    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    tr, te = (train_x - mean) / std, (test_x - mean) / std
    per: dict[str, float] = {}
    ci: dict[str, tuple[float, float]] = {}
    positives: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for j, name in enumerate(names):
        ktr, kte = np.isin(train_y[:, j], (0, 1)), np.isin(test_y[:, j], (0, 1))
        ytr, yte = train_y[ktr, j].astype(int), test_y[kte, j].astype(int)
        if len(set(ytr)) < 2 or len(set(yte)) < 2:
            skipped[name] = "one class only in train or test"
            continue
        clf = LogisticRegression(C=c, max_iter=5000).fit(tr[ktr], ytr)
        scores = clf.decision_function(te[kte])
        per[name] = auroc(scores, yte)
        positives[name] = int(yte.sum())
        if n_boot > 0:
            boot = np.concatenate([weighted_auroc(scores, yte, w) for w in bootstrap_counts(len(yte), n_boot, seed)])
            ci[name] = percentile_ci(boot[np.isfinite(boot)])
    return {
        "macro_auroc": float(np.mean(list(per.values()))) if per else None,
        "per_finding_auroc": per,
        "per_finding_ci": ci,
        "test_positives": positives,
        "min_auroc": float(min(per.values())) if per else None,
        "skipped": skipped,
        "n_train": int(len(train_x)),
        "n_test": int(len(test_x)),
        "C": c,
    }


def encoder_for_probe(name: str, spacing_mm: Sequence[float] | None = None):
    """A frozen window encoder by name: a weight-free one ("histogram", "filterbank", "histogram+filterbank"; the
    filter bank's scales need the spec's `spacing_mm`), a shipped encoder ("pretrained-synthetic"), or a
    `radfinder pretrain-encoder` output folder (`<run>/encoder`). The weight-free encoders stay unstandardised
    here: the probe standardises the scan vectors itself, on the train split."""
    from ..models.config import WindowEncoderConfig
    from ..models.radfinder import build_window_encoder
    from ..models.shipped import window_encoder_config
    from ..models.weight_free import WEIGHT_FREE_ENCODERS, weight_free_config

    if name in WEIGHT_FREE_ENCODERS:
        cfg = WindowEncoderConfig.model_validate(weight_free_config(name, spacing_mm=spacing_mm))
    else:
        cfg = WindowEncoderConfig.model_validate(window_encoder_config(name))
    return build_window_encoder(cfg).eval()


def probe_cohort(
    cohort: str | Path,
    encoder: str,
    *,
    features: str | Path | None = None,
    spec: str = "demo",
    c: float = 0.1,
    n_boot: int = DEFAULT_N_BOOT,
    device: str = "auto",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Linear probe of `encoder` on a probe cohort (`radfinder synth OUT --stream probe`): features of each study's
    first volume are extracted once into `features` (default `<cohort>/features-<encoder name>`), the probe is
    fitted on the cohort's train split and scored on its valid split against the truth labels.

    A concatenation of weight-free encoders ("histogram+filterbank") reads its parts' caches side by side: a
    concat encoder's features are its parts' features concatenated, so the scan vectors are too (`features`
    then names the folder holding the parts' caches)."""
    from ..models.weight_free import WEIGHT_FREE_ENCODERS
    from ..text.findings import CTRATE_FINDINGS

    cohort = Path(cohort)
    studies = [json.loads(x) for x in (cohort / "truth.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    parts = encoder.split("+") if encoder in WEIGHT_FREE_ENCODERS else [encoder]
    split = {s: [st for st in studies if st["split"] == s] for s in ("train", "valid")}
    x: dict[str, list[np.ndarray]] = {"train": [], "valid": []}
    roots, extraction = [], []
    for part in parts:
        root = None
        if features is not None:
            root = Path(features) if len(parts) == 1 else Path(features) / f"features-{part}"
        store, keys, summary = _extract_cohort(cohort, studies, part, root, spec, device, show_progress)
        for s, sts in split.items():
            x[s].append(scan_vectors(store, [keys[st["study"]] for st in sts]))
        roots.append(str(store.root))
        extraction.append(summary)
    xs = {s: np.concatenate(v, axis=1) for s, v in x.items()}
    y = {s: np.array([[st["labels"][f] for f in CTRATE_FINDINGS] for st in sts]) for s, sts in split.items()}
    res = linear_probe(xs["train"], y["train"], xs["valid"], y["valid"], CTRATE_FINDINGS, c=c, n_boot=n_boot)
    res.update({"encoder": encoder, "cohort": str(cohort), "features": roots[0] if len(roots) == 1 else roots,
                "extraction": extraction[0] if len(extraction) == 1 else extraction})  # fmt: skip
    return res


def _extract_cohort(cohort: Path, studies: list[dict], encoder: str, root: Path | None, spec: str, device: str,
                    show_progress: bool):  # fmt: skip
    """(store, study -> feature key, extraction summary) of `encoder` on each study's first volume."""
    from ..device import resolve_device
    from ..features import ExtractItem, FeatureStore, extract_features, state_dict_hash
    from ..preprocess import PreprocessedCache
    from ..preprocess.spec import resolve_spec

    spec_ = resolve_spec(spec)
    enc = encoder_for_probe(encoder, spacing_mm=spec_.spacing)
    dev = resolve_device(device)
    enc.to(dev)
    tag = Path(encoder).name if Path(encoder).exists() else encoder
    root = root or cohort / f"features-{tag}"
    store = FeatureStore(root, spec_, {"name": tag, "hash": state_dict_hash(enc)}, enc.feature_dim)
    items = {st["study"]: ExtractItem(st["volumes"][0]["name"].removesuffix(".nii.gz"),
                                      str(cohort / st["volumes"][0]["path"])) for st in studies}  # fmt: skip
    # preprocessed volumes are kept beside the cohort, so a second encoder's probe does not preprocess again
    pre = PreprocessedCache(cohort / f"preprocessed-{store.spec.hash()}", store.spec)
    summary = extract_features(list(items.values()), enc, store, batch_size=16, device=dev, shard=(0, 1),
                               show_progress=show_progress,
                               preprocessed_fn=lambda it: pre.get_or_compute(it.path))  # fmt: skip
    if summary.failed:
        raise RuntimeError(f"feature extraction failed: {summary.failed}")
    return store, {k: it.key for k, it in items.items()}, summary.as_dict()
