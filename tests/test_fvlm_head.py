"""fVLM anatomy head and batch fields: attention restricted to the anatomy's tokens, invalid anatomies out of the
loss, a few optimisation steps lower the fVLM loss, checkpoint round trip with the temperature."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radfinder.data.records import StudyRecord
from radfinder.features.anatomy_batch import AnatomyTextCache, make_anatomy_batch
from radfinder.features.store import AnatomyCoverage, FeatureRecord
from radfinder.losses.fvlm_objective import (
    anatomy_image_leaf,
    anatomy_temperature_param,
    anatomy_text_leaf,
    fvlm_step,
)
from radfinder.models.anatomy_head import AnatomyHead, FvlmTemperature
from radfinder.models.config import AnatomyHeadConfig, resolve_model_config
from radfinder.models.radfinder import RadFinderModel

NAMES = ["lung", "heart", "esophagus", "aorta"]


def test_head_gives_zero_gradient_to_tokens_outside_the_anatomy():
    torch.manual_seed(0)
    head = AnatomyHead(12, 8, ["a", "b"], dim=16, num_heads=2)
    tokens = torch.randn(2, 10, 12, requires_grad=True)
    cov = torch.zeros(2, 2, 10)
    cov[0, 0, 2:5] = torch.tensor([0.2, 1.0, 0.5])
    cov[1, 0, 7] = 1.0
    cov[:, 1, 0:8] = 0.3  # anatomy b covers other tokens too
    out = head(tokens, cov)
    out.embeddings[:, 0].sum().backward()  # anatomy a alone
    g = tokens.grad.abs().sum(-1)
    inside = cov[:, 0] > 0
    assert torch.all(g[~inside] == 0)
    assert torch.all(g[inside] > 0)
    # the embedding is unit-norm and does not move when tokens outside the anatomy change
    assert torch.allclose(out.embeddings.norm(dim=-1), torch.ones(2, 2), atol=1e-5)
    t2 = tokens.detach().clone()
    t2[~inside] += 5.0
    assert torch.allclose(head(t2, cov).embeddings[:, 0], out.embeddings[:, 0].detach(), atol=1e-6)


def test_head_without_tokens_gives_zero_and_not_present():
    head = AnatomyHead(4, 3, ["a", "b"], dim=8, num_heads=2)
    cov = torch.zeros(1, 2, 5)
    cov[0, 0, 1] = 1.0
    out = head(torch.randn(1, 5, 4), cov)
    assert out.present.tolist() == [[True, False]]
    assert torch.all(out.embeddings[0, 1] == 0)


def test_temperature_clamps_to_fvlm_range():
    t = FvlmTemperature()
    assert float(t().detach()) == pytest.approx(0.07)
    with torch.no_grad():
        t.temperature.fill_(5.0)
    assert float(t().detach()) == pytest.approx(0.5)


REPORTS = [
    ("Emphysema is seen in both upper lobes. The heart size is normal.", "Emphysema."),
    ("The lungs are clear. Cardiomegaly is present.", "Cardiomegaly."),
    ("Consolidation in the right lower lobe. Aortic wall calcification is noted.", "Consolidation."),
    ("The lungs are clear. The heart size is normal.", "No acute findings."),
    ("Hiatal hernia is seen. The lungs are clear.", "Hiatal hernia."),
    ("Lung nodule in the left upper lobe. Heart size is normal.", "Nodule."),
]


def _record(i: int) -> StudyRecord:
    f, imp = REPORTS[i % len(REPORTS)]
    return StudyRecord(f"s{i}", "", f"r{i}", f, imp, f"p{i}", "train", "t")


def _feature(i: int, rng, e=72, with_anatomy=True, cut=()) -> FeatureRecord:
    grid, tokens = (1, 1, 2), (2, 2, 2)
    spatial = rng.standard_normal((*grid, *tokens, e)).astype(np.float32)
    cov = np.zeros((*grid, *tokens, 4), np.float32)
    flat = cov.reshape(-1, 4)
    flat[0:6, 0] = 1.0  # lung
    flat[6:9, 1] = 0.5  # heart
    flat[9, 2] = 0.25  # esophagus
    flat[10:12, 3] = 1.0  # aorta
    # study-specific signal in the anatomy tokens, so the head has something to learn
    sp = spatial.reshape(-1, e)
    sp[:12, i % e] += 3.0
    an = None
    if with_anatomy:
        an = AnatomyCoverage(NAMES, cov, np.array([n in cut for n in NAMES]), np.ones(4, np.int64), "m", "g")
    return FeatureRecord(f"s{i}", np.zeros((*grid, e)), np.zeros((*grid, e)), np.zeros((*grid, 2, e)), np.eye(4),
                         spatial=spatial, anatomy=an)  # fmt: skip


def test_batch_fields_valid_normal_and_text_ids():
    rng = np.random.default_rng(0)
    feats = [_feature(0, rng), _feature(1, rng, cut=("heart",)), _feature(2, rng, with_anatomy=False),
             _feature(3, rng)]  # fmt: skip
    recs = [_record(i) for i in range(4)]
    texts = AnatomyTextCache(NAMES)
    ab = make_anatomy_batch(feats, recs, texts)
    assert ab.valid.tolist() == [[True] * 4, [True, False, True, True], [False] * 4, [True] * 4]
    assert make_anatomy_batch(feats, recs, texts, exclude_cut=False).valid[1].tolist() == [True] * 4
    assert ab.normal[0].tolist() == [False, True, True, True]  # emphysema in the lung
    assert ab.normal[1].tolist() == [True, False, True, True]  # cardiomegaly
    assert ab.normal[3].tolist() == [True, True, True, True]
    # identical texts have identical ids (all-normal study 3 and the normal anatomies of the others)
    assert ab.text_ids[3, 2] == ab.text_ids[0, 2] and ab.text_ids[0, 0] != ab.text_ids[3, 0]
    assert ab.tokens.shape == (4, 12, 72) and ab.coverage.shape == (4, 4, 12)
    assert torch.all(ab.coverage[2] == 0)
    # fVLM strips the template prefix from the encoded text, keeping it where nothing else is left
    assert ab.texts[0][1] == "The heart size is normal."
    assert ab.texts[0][2] == "Esophagus shows no significant abnormalities."
    assert ab.texts[0][0] == "Emphysema. Emphysema is seen in both upper lobes."


class _SM:
    """The step-module interface the leaf producers use (model, autocast, loss dtype)."""

    def __init__(self, model):
        self.model = model
        self.loss_dtype = torch.float32

    def autocast(self):
        import contextlib

        return contextlib.nullcontext()


def _model() -> RadFinderModel:
    torch.manual_seed(0)
    cfg = resolve_model_config("tiny")
    cfg.anatomy = AnatomyHeadConfig(dim=32, num_heads=2)
    return RadFinderModel(cfg)


class _MB:
    def __init__(self, ab):
        self.extras = {"anatomy": ab}


def test_invalid_anatomies_get_no_gradient_and_training_lowers_the_loss():
    rng = np.random.default_rng(1)
    feats = [_feature(i, rng, cut=("aorta",) if i == 2 else ()) for i in range(6)]
    recs = [_record(i) for i in range(6)]
    ab = make_anatomy_batch(feats, recs, AnatomyTextCache(NAMES))
    model = _model()
    model.cache_text_features(True)  # frozen text tower, as in the demo
    sm, mb = _SM(model), _MB(ab)
    img = anatomy_image_leaf(sm, mb)[0].detach().requires_grad_(True)
    txt = anatomy_text_leaf(sm, mb)[0].detach().requires_grad_(True)
    out, logs = fvlm_step(model, img, txt, [mb], anatomy_temperature_param(model)[0])
    out.loss.backward()
    assert not ab.valid[2, 3]
    assert torch.all(img.grad[2, 3] == 0) and torch.all(txt.grad[2, 3] == 0)
    assert img.grad[ab.valid].abs().sum() > 0
    assert set(logs) == {"fvlm", "fvlm/lung", "fvlm/heart", "fvlm/esophagus", "fvlm/aorta"}
    assert logs["fvlm"] == pytest.approx(float(out.loss.detach()))

    params = [p for n, p in model.named_parameters() if n.startswith(("anatomy_", "projection_text."))]
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        out, _ = fvlm_step(model, anatomy_image_leaf(sm, mb)[0], anatomy_text_leaf(sm, mb)[0], [mb],
                           anatomy_temperature_param(model)[0])  # fmt: skip
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss))
    assert losses[-1] < 0.7 * losses[0]


def test_checkpoint_round_trip_keeps_head_and_temperature(tmp_path):
    model = _model()
    with torch.no_grad():
        model.anatomy_temperature.temperature.fill_(0.123)
    model.save_pretrained(tmp_path / "ckpt")
    back = RadFinderModel.from_pretrained(tmp_path / "ckpt")
    assert back.config.anatomy == model.config.anatomy
    assert float(back.anatomy_temperature().detach()) == pytest.approx(0.123)
    model.eval()
    tok, cov = torch.randn(2, 7, 72), torch.rand(2, 4, 7)
    assert torch.equal(back.encode_anatomy(tok, cov).embeddings, model.encode_anatomy(tok, cov).embeddings)
    # a model without the section has no anatomy parameters (the RadFinder layout is unchanged)
    plain = RadFinderModel(resolve_model_config("tiny"))
    assert plain.anatomy_head is None and not any(k.startswith("anatomy") for k in plain.state_dict())


def test_linear_text_head_is_used_for_anatomy_texts_and_saved(tmp_path):
    torch.manual_seed(0)
    cfg = resolve_model_config("tiny")
    cfg.anatomy = AnatomyHeadConfig(dim=16, num_heads=2, text_head="linear")
    model = RadFinderModel(cfg).eval()
    assert isinstance(model.anatomy_text_proj, torch.nn.Linear)
    tok = model.tokenize(["Emphysema.", "Not Emphysema."])
    got = model.encode_anatomy_text(tok["input_ids"], tok["attention_mask"])
    want = model.anatomy_text_proj(model.text_features(tok["input_ids"], tok["attention_mask"]))
    assert torch.equal(got, want) and not torch.allclose(got, model.encode_text(tok["input_ids"],
                                                                                 tok["attention_mask"]))
    model.save_pretrained(tmp_path / "ckpt")
    back = RadFinderModel.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(back.encode_anatomy_text(tok["input_ids"], tok["attention_mask"]), got)


def test_histogram_spatial_tokens_are_per_token_quadrant_histograms():
    from radfinder.features.store import state_dict_hash
    from radfinder.models.histogram import HistogramWindowEncoder

    torch.manual_seed(0)
    plain = HistogramWindowEncoder(window_size=(32, 32, 8), depth_tokens=2)
    enc = HistogramWindowEncoder(window_size=(32, 32, 8), depth_tokens=2, spatial_grid=(4, 4))
    assert enc.has_spatial_tokens and not plain.has_spatial_tokens
    assert state_dict_hash(enc) == state_dict_hash(plain)  # no weights added: caches keep their backbone hash
    x = torch.rand(2, 1, 32, 32, 8)
    enc.fit_standardization(x)
    f = enc(x, spatial=True)
    assert f.spatial.shape == (2, 4, 4, 2, 80) and torch.equal(f.axis2, enc(x).axis2)
    raw = f.spatial * enc.axis2_std + enc.axis2_mean
    bins = torch.bucketize(x[:, 0], enc.edges)
    for n, i, j, t in ((0, 0, 0, 0), (1, 3, 1, 1), (0, 2, 3, 1)):
        for qh in (0, 1):
            for qw in (0, 1):
                block = bins[n, i * 8 + qh * 4 : i * 8 + qh * 4 + 4, j * 8 + qw * 4 : j * 8 + qw * 4 + 4,
                             t * 4 : t * 4 + 4].flatten()  # fmt: skip
                want = (torch.bincount(block, minlength=enc.n_bins).float() / block.numel()).sqrt()
                q = 2 * qh + qw
                torch.testing.assert_close(raw[n, i, j, t, q * 20 : (q + 1) * 20], want, atol=1e-5, rtol=0)
