"""Trainer: config, step gradients against a direct big-batch computation, logs, schedule, param groups, checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from radfinder.errors import CheckpointError, ConfigError
from radfinder.losses import gaussian_localization_loss, prompt_bce_loss, siglip_loss
from radfinder.train import load_train_config, train
from radfinder.train.config import TrainConfig
from radfinder.train.optim import lr_at, no_decay, param_groups
from radfinder.train.toy import make_toy_cohort, toy_train_config
from radfinder.train.trainer import Trainer


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    torch.set_num_threads(1)  # the test machine is shared; tiny ops are slower with more threads
    return make_toy_cohort(tmp_path_factory.mktemp("toy"), 24, seed=3)


def test_an_unknown_model_init_is_named_in_a_clear_error(tmp_path):
    from radfinder.train.setup import build_model

    for init in ("no-such-preset", str(tmp_path / "missing.yaml")):
        section = TrainConfig.model_validate({"model": {"init": init}}).model
        with pytest.raises(ConfigError, match=r"model.init .* is neither a preset \(.*tiny.*\), a model YAML, a "
                                              "checkpoint directory nor a Hugging Face id"):
            build_model(section)

def test_config_yaml_overrides_and_resolved_copy(cohort, tmp_path):
    cfg = toy_train_config(cohort)
    path = tmp_path / "train.yaml"
    from radfinder.config import dump_config

    dump_config(cfg, path)
    loaded = load_train_config(path, ["batch.micro=2", "optim.betas=[0.8,0.9]", "losses.weights.prompt=0"])
    assert loaded.batch.micro == 2 and loaded.optim.betas == (0.8, 0.9) and loaded.losses.weights.prompt == 0
    with pytest.raises(ConfigError, match="batch.nope|nope"):
        load_train_config(path, ["batch.nope=1"])
    res = train(loaded.model_copy(update={"schedule": loaded.schedule.model_copy(update={"max_steps": 1})}),
                tmp_path / "run")
    assert res.steps == 1
    assert TrainConfig.model_validate(__import__("yaml").safe_load((tmp_path / "run/config.yaml").read_text())) \
        .batch.micro == 2


def _manual_step(tr: Trainer, step: int):
    """The step's objective computed directly on the whole global batch with one autograd graph."""
    m = tr.model
    mbs = tr.micro_batches(step)
    img, dis, txt, labels, variant = [], [], [], [], []
    loc_sum, n_snip = 0.0, 0
    for mb in mbs:
        g = m.encode_features_global(mb.cls, mb.patch_average, mb.window_mask, mb.grid_size)
        tok = m.tokenize(mb.texts)
        img.append(g.retrieval)
        dis.append(g.disease)
        txt.append(m.encode_text(tok["input_ids"], tok["attention_mask"]))
        labels.append(mb.labels)
        variant.append(mb.prompt_variant)
        if mb.n_snippets:
            d = m.encode_features_depth(mb.cls, mb.axis2, mb.window_mask, mb.grid_size)
            st = m.tokenize(mb.snippet_texts)
            sn = m.encode_snippet(st["input_ids"], st["attention_mask"])
            for j in range(mb.n_snippets):  # each snippet on its own scan's cells, 6 empty cells either side
                row, n_cells = int(mb.snippet_scan[j]), int(mb.grid_size[mb.snippet_scan[j], 2]) * 8
                emb = torch.cat([torch.zeros(6, sn.shape[1], dtype=sn.dtype), d.slice_emb[row, :n_cells],
                                 torch.zeros(6, sn.shape[1], dtype=sn.dtype)])
                valid = torch.zeros(n_cells + 12, dtype=torch.bool)
                valid[6 : 6 + n_cells] = True
                target = torch.zeros_like(valid)
                target[6 + int(mb.snippet_cell[j])] = True
                loc_sum = loc_sum + gaussian_localization_loss(emb[None], sn[j : j + 1], target[None], valid[None])
            n_snip += mb.n_snippets
    pt = tr.prompt_tokens
    prompts = m.encode_text(pt["input_ids"], pt["attention_mask"]).reshape(*tr.prompt_shape, -1)
    variant = torch.cat(variant)
    sel = prompts[torch.arange(prompts.shape[0])[None, :], variant]
    t, b = m.criterion.t, m.criterion.b
    s = siglip_loss(torch.cat(img), torch.cat(txt), t, b).loss
    p = prompt_bce_loss(F.normalize(torch.cat(dis), dim=-1), F.normalize(sel, dim=-1), torch.cat(labels), t, b,
                        tr.settings.pos_weight, tr.settings.question_weight)
    w = tr.cfg.losses.weights
    total = w.siglip * s + w.prompt * p + w.localization * (loc_sum / n_snip)
    return total, (s, p, loc_sum / n_snip)


def test_cached_step_equals_direct_big_batch_gradient(cohort, tmp_path):
    cfg = toy_train_config(cohort, precision="fp64", batch={"micro": 3, "accum": 3})
    tr = Trainer(cfg, tmp_path / "run", show_progress=False)
    stats = tr.compute_gradients(0, verify=True)
    got = {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}
    tr.optimizer.zero_grad(set_to_none=True)
    total, (s, p, loc) = _manual_step(tr, 0)
    total.backward()
    assert stats.n_samples == 9 and stats.negatives == 8 and stats.n_snippets > 0
    assert stats.siglip == pytest.approx(float(s.detach()), rel=1e-12)
    assert stats.prompt == pytest.approx(float(p.detach()), rel=1e-12)
    assert stats.localization == pytest.approx(float(loc.detach()), rel=1e-12)
    assert stats.loss == pytest.approx(float(total.detach()), rel=1e-12)
    ref = {n: p.grad for n, p in tr.model.named_parameters() if p.grad is not None}
    assert set(ref) <= set(got)  # got also holds the zero gradients of parameters the step does not reach
    for n, g in ref.items():
        torch.testing.assert_close(got[n], g, rtol=1e-9, atol=1e-12, msg=lambda m, n=n: f"{n}: {m}")
    assert got["criterion.t"].abs() > 0 and got["feature_comb_image.axis_patch_proj.weight"].abs().sum() > 0


def test_log_lines_and_no_snippets_gives_no_nan(cohort, tmp_path):
    cfg = toy_train_config(cohort, schedule={"epochs": 1, "max_steps": 2},
                           data={**toy_train_config(cohort).data.model_dump(), "max_snippets_per_scan": 0},
                           logging={"tensorboard": True, "progress": False})
    res = train(cfg, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and res.steps == 2
    for x in lines:
        for key in ("epoch", "loss", "siglip", "prompt", "lr", "t", "b", "grad_norm", "samples_per_s", "negatives"):
            assert x[key] is not None and math.isfinite(x[key]), key
        assert x["localization"] is None and x["snippets"] == 0
        assert x["negatives"] == 7
    assert any((tmp_path / "run/tensorboard").iterdir())


def test_lr_schedule_warmup_then_cosine():
    lrs = [lr_at(s, 10, 2, 1.0, 0.1) for s in range(10)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False))
    assert lr_at(10, 10, 2, 1.0, 0.1) == pytest.approx(0.1)
    assert lr_at(6, 10, 2, 1.0, 0.1) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))


def test_no_weight_decay_on_bias_norm_gamma_t_b(cohort, tmp_path):
    tr = Trainer(toy_train_config(cohort), tmp_path / "run", show_progress=False)
    groups = {g["weight_decay"]: set(g["names"]) for g in param_groups(tr.model, 1e-4)}
    plain, decay = groups[0.0], groups[1e-4]
    assert {"criterion.t", "criterion.b"} <= plain
    assert any(n.endswith("ls1.gamma") for n in plain) and any("norm" in n for n in plain)
    assert all(not n.endswith(".bias") for n in decay)
    assert "feature_comb_image.patch_proj.weight" in decay
    assert not any(n.startswith("backbone_image.") for n in plain | decay)  # frozen window encoder
    assert not no_decay("projection_image.layers.0.weight", torch.nn.Parameter(torch.zeros(2, 2)))


def test_resume_refuses_other_feature_cache_and_existing_run(cohort, tmp_path):
    cfg = toy_train_config(cohort, schedule={"epochs": 1, "max_steps": 1})
    train(cfg, tmp_path / "run")
    with pytest.raises(CheckpointError, match="--resume"):
        train(cfg, tmp_path / "run")
    from radfinder.features.store import FeatureStore
    from radfinder.preprocess.spec import resolve_spec

    src = FeatureStore.open(cohort["features"])
    dst = FeatureStore(tmp_path / "other/features", resolve_spec(None), {"name": "x", "hash": "another-backbone"},
                       src.feature_dim)
    for key in src.keys():
        dst.write(src.read(key))
    moved = toy_train_config({**cohort, "features": str(tmp_path / "other/features")},
                             schedule={"epochs": 1, "max_steps": 2})
    with pytest.raises(CheckpointError, match=r"data\[0\]\.feature_cache\.backbone_hash"):
        train(moved, tmp_path / "run", resume=True)
    bigger = toy_train_config(cohort, schedule={"epochs": 1, "max_steps": 2}, batch={"micro": 2, "accum": 2})
    with pytest.raises(CheckpointError, match="batch.micro"):
        train(bigger, tmp_path / "run", resume=True)
    # same config, but starting from other weights (here the trained model): not the run that was saved
    from radfinder.train.checkpoint import latest_checkpoint

    other_init = toy_train_config(cohort, schedule={"epochs": 1, "max_steps": 2})
    other_init.model.init = str(latest_checkpoint(tmp_path / "run") / "model")
    other_init.model.overrides = []
    with pytest.raises(CheckpointError, match="init_weights"):
        train(other_init, tmp_path / "run", resume=True)


def test_text_train_modes_select_exactly_the_named_text_parameters(cohort, tmp_path):
    import re

    from radfinder.train.optim import select_trainable

    tr = Trainer(toy_train_config(cohort), tmp_path / "run", show_progress=False)
    names = [n for n, _ in tr.model.named_parameters()]
    text = [n for n in names if n.startswith("backbone_text.")]
    layers = sorted({int(m.group(1)) for n in text if (m := re.match(r"backbone_text\.encoder\.layer\.(\d+)\.", n))})
    top = {n for n in text if n.startswith(f"backbone_text.encoder.layer.{layers[-1]}.")}
    assert top and top < set(text)  # the embeddings are below the top layer: top1 cannot be "all"
    for mode, want in (("all", set(text)), ("frozen", set()), ("top1", top)):
        got = set(select_trainable(tr.model, mode))
        assert {n for n in got if n.startswith("backbone_text.")} == want, mode
        assert not any(n.startswith("backbone_image.") for n in got)  # the window encoder made the cache
        assert got - set(text)  # the heads still train
    with pytest.raises(ConfigError, match="text_train"):
        select_trainable(tr.model, f"top{len(layers) + 1}")


def test_fingerprint_ignores_where_the_text_tower_lives_but_not_what_it_is(cohort, tmp_path):
    from radfinder.train.setup import fingerprint

    tr = Trainer(toy_train_config(cohort), tmp_path / "run", show_progress=False)
    original = tr.model.config

    def with_text(**update):
        tr.model.config = original.model_copy(update={"text": original.text.model_copy(update=update)})
        try:
            return fingerprint(tr.cfg, tr.model, tr.sources, None, 1)
        finally:
            tr.model.config = original

    base = with_text()
    # a run resumed after the text tower's files moved (another checkout, another machine) is the same run
    assert with_text(path="/elsewhere/minilm", tokenizer="/elsewhere/tokenizer") == base
    assert with_text(max_length=original.text.max_length + 1) != base
