"""fVLM's anatomy-level zero-shot on real CT whose aorta the preprocessing crop cuts: the cut aorta is scored from
its visible tokens (as fVLM's release scores every study whose organ has voxels) and left out of the `uncut` figure.

Five studies are cut from TotalSegmentator's real chest CT crop (1.5 mm, 120 x 126 x 164) with its aorta mask:
two whose shape the 32 x 32 x 16 windows divide (nothing cropped, so nothing cut), two that the largest-multiple
centre crop trims through the aorta, and one below the aorta (no aorta voxels: not scored at all)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from radfinder.data.anatomy import load_anatomy_groups
from radfinder.data.records import StudyRecord
from radfinder.eval.anatomy_embed import embed_anatomies, prompt_embeddings, run_anatomy_zero_shot
from radfinder.features import ExtractItem, FeatureStore, extract_features
from radfinder.models.config import AnatomyHeadConfig, resolve_model_config
from radfinder.models.histogram import DEFAULT_HU_EDGES
from radfinder.models.radfinder import RadFinderModel
from radfinder.preprocess import PreprocessSpec
from radfinder.text.findings import CTRATE_FINDINGS
from radfinder.train.toy import write_tiny_text_tower

pytestmark = pytest.mark.real_data

SPEC = PreprocessSpec(name="cut-test", spacing=(1.5, 1.5, 1.5), window=(32, 32, 16), depth_tokens_per_window=2)
# (key, voxel box of the source CT, cut by the crop, aorta label): the aorta spans x 36-77, y 34-111, z 0-151
STUDIES = [
    ("uncut_a", (slice(12, 108), slice(16, 112), slice(0, 160)), False, 1),
    ("uncut_b", (slice(8, 104), slice(20, 116), slice(4, 164)), False, 0),
    # 120 x 126 x 164 -> kept x 12:108, y 15:111, z 2:162: the aorta reaches the kept faces y = 110 and z = 2
    ("cut_full", (slice(0, 120), slice(0, 126), slice(0, 164)), True, 1),
    # 110 x 120 x 164 -> kept x 7:103, y 12:108, z 2:162: the aorta crosses y = 107 and z = 2
    ("cut_b", (slice(0, 110), slice(0, 120), slice(0, 164)), True, 0),
    ("no_aorta", (slice(0, 120), slice(0, 126), slice(152, 164)), False, 1),
]
AWC = CTRATE_FINDINGS.index("Arterial wall calcification")


def _kept(shape, window=(32, 32, 16)):
    """The largest-multiple centre crop, written out: per axis the kept range of the source voxels."""
    out = []
    for n, w in zip(shape, window, strict=True):
        keep = max(w, n // w * w)
        start = (n - keep) // 2
        out.append(slice(max(0, start), max(0, start) + min(n, keep)))
    return tuple(out)


@pytest.fixture(scope="module")
def case(real_data, tmp_path_factory):
    torch.set_num_threads(1)
    src = real_data / "totalsegmentator_ct" / "aorta_crop"
    ct = nib.load(str(src / "ct_cropped.nii.gz"))
    vol = np.asarray(ct.dataobj)
    aorta = np.asarray(nib.load(str(src / "aorta.nii.gz")).dataobj).astype(np.uint8)
    root = tmp_path_factory.mktemp("cut")
    (root / "vols").mkdir()
    items, records, masks = [], [], {}
    for key, box, _, label in STUDIES:
        start = np.array([b.start for b in box], np.float64)
        affine = ct.affine.copy()
        affine[:3, 3] = ct.affine[:3, :3] @ start + ct.affine[:3, 3]
        nib.save(nib.Nifti1Image(vol[box], affine), str(root / "vols" / f"{key}.nii.gz"))
        (root / "masks" / key).mkdir(parents=True)  # TotalSegmentator's per-class folder
        nib.save(nib.Nifti1Image(aorta[box], affine), str(root / "masks" / key / "aorta.nii.gz"))
        masks[key] = aorta[box].astype(bool)
        items.append(ExtractItem(key, str(root / "vols" / f"{key}.nii.gz")))
        labels = np.full(len(CTRATE_FINDINGS), 0.0, np.float32)
        labels[AWC] = label
        records.append(StudyRecord(key, items[-1].path, key, "", "", key, "valid", "real", labels=labels))

    torch.manual_seed(0)
    width = 4 * (len(DEFAULT_HU_EDGES) + 1)
    cfg = resolve_model_config("tiny", ["window_encoder.kind=histogram", f"window_encoder.embed_dim={width}"])
    cfg.window_encoder.window_size = SPEC.window
    cfg.window_encoder.options = {"spatial_grid": [4, 4], "depth_tokens": 2}
    prompts = ["Arterial wall calcification.", "Not Arterial wall calcification.", "Emphysema.", "Not Emphysema."]
    text_dir = write_tiny_text_tower(root / "text", prompts)
    cfg.text = type(cfg.text).model_validate({"source": "hf", "path": str(text_dir), "hidden_size": 32,
                                              "pooling": "mean", "max_length": 32})  # fmt: skip
    cfg.anatomy = AnatomyHeadConfig(dim=16, num_heads=2, text_head="linear")
    model = RadFinderModel(cfg).eval()
    enc = model.backbone_image
    store = FeatureStore(root / "feat", SPEC, {"hash": "hist"}, enc.feature_dim, spatial=True)
    summary = extract_features(items, enc, store, show_progress=False, masks=root / "masks",
                               groups=load_anatomy_groups())  # fmt: skip
    assert not summary.failed, summary.failed
    return {"model": model, "store": store, "records": records, "masks": masks}


def test_the_crop_cuts_the_aorta_of_two_studies(case):
    store = case["store"]
    for key, _, cut, _ in STUDIES:
        cov = store.read(key).anatomy
        i = cov.names.index("aorta")
        m = case["masks"][key]
        kept = m[_kept(m.shape)]
        # independent rule: cut = the kept part of the mask reaches a face where the crop removed data
        trimmed = [(ax, end) for ax in range(3) for end in (0, -1)
                   if (_kept(m.shape)[ax].start > 0 if end == 0 else _kept(m.shape)[ax].stop < m.shape[ax])]
        faces = [np.take(kept, 0 if end == 0 else kept.shape[ax] - 1, axis=ax) for ax, end in trimmed]
        assert bool(cov.cut[i]) == any(f.any() for f in faces) == cut, key
        assert int(cov.voxels[i]) == int(kept.sum()), key
        if cut:
            assert 0 < kept.sum() < m.sum()  # part of the aorta is cropped away, the rest is visible


def test_a_cut_aorta_is_embedded_from_its_visible_tokens(case):
    model, store, records = case["model"], case["store"], case["records"]
    emb, present, cut = embed_anatomies(model, records, store)
    a = list(model.anatomy_head.names).index("aorta")
    assert present[:, a].tolist() == [True, True, True, True, False]
    assert cut[:, a].tolist() == [False, False, True, True, False]
    assert not present[:, [i for i in range(len(model.anatomy_head.names)) if i != a]].any()  # only the aorta
    for n, (key, *_rest) in enumerate(STUDIES[:4]):
        rec = store.read(key)
        e = rec.spatial.shape[-1]
        c = rec.anatomy.coverage[..., rec.anatomy.names.index("aorta")].reshape(-1)
        tokens = np.asarray(rec.spatial, np.float32).reshape(-1, e)[c > 0]  # the visible aorta tokens only
        cov = torch.zeros(1, len(model.anatomy_head.names), len(tokens))
        cov[0, a] = torch.from_numpy(c[c > 0])
        with torch.no_grad():
            want = model.encode_anatomy(torch.from_numpy(tokens)[None], cov).embeddings[0, a].numpy()
        np.testing.assert_allclose(emb[n, a], want, rtol=1e-5, atol=1e-6)
        assert np.linalg.norm(emb[n, a]) == pytest.approx(1.0, abs=1e-5)


def test_all_studies_and_uncut_only_are_both_reported(case):
    from radfinder.eval.anatomy_embed import anatomy_zero_shot_metrics

    model, store, records = case["model"], case["store"], case["records"]
    res, counts = run_anatomy_zero_shot(model, records, store, n_boot=0)
    assert counts["valid_scans"]["aorta"] == 4 and counts["cut_scans"]["aorta"] == 2 and counts["scans"] == 5
    # reference: the pair softmax on the embeddings, AUROC by scikit-learn over the matching studies
    emb, _, _ = embed_anatomies(model, records, store)
    pos, neg, prompts = prompt_embeddings(model)
    k = [p.finding for p in prompts].index("Arterial wall calcification")
    a = list(model.anatomy_head.names).index("aorta")
    unit = lambda x: x / np.linalg.norm(x)  # noqa: E731
    t = float(model.anatomy_temperature().detach())
    p = np.array([1 / (1 + np.exp(-(unit(emb[n, a]) @ unit(pos[k]) - unit(emb[n, a]) @ unit(neg[k])) / t))
                  for n in range(4)])  # fmt: skip  (the fifth has no aorta)
    y = np.array([s[3] for s in STUDIES])
    got = res.classification.findings["Arterial wall calcification"]
    assert got.n == 4 and got.auroc == pytest.approx(roc_auc_score(y[:4], p[:4]), abs=1e-12)
    uncut = res.uncut.findings["Arterial wall calcification"]
    assert uncut.n == 2 and uncut.auroc == pytest.approx(roc_auc_score(y[:2], p[:2]), abs=1e-12)
    # the other anatomies have no voxels here: their findings are not scored
    assert set(res.classification.findings) == {"Arterial wall calcification"}
    d = anatomy_zero_shot_metrics(res, counts)
    assert d["macro_auroc"] == pytest.approx(got.auroc) and d["uncut"]["macro_auroc"] == pytest.approx(uncut.auroc)
