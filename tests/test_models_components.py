"""Window encoder, combiner, heads and LoRA: behaviour beyond the reference vectors (padding, chunking, semantics)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from radfinder.models import (
    FeatureCombiner,
    LoRALinear,
    ProjectionHead,
    ViTWindowEncoder,
    add_lora,
    fold_patch_embed,
    load_lora_base_state_dict,
    pad_feature_grids,
)


@pytest.fixture(scope="module")
def combiner():
    torch.manual_seed(0)
    return FeatureCombiner(feature_dim=12, embed_dim=24, depth=2, num_heads=2).eval()


def test_fold_sums_adjacent_taps():
    w = torch.arange(16.0).view(1, 1, 1, 2, 8)
    folded = fold_patch_embed(w)
    assert folded.shape == (1, 1, 1, 2, 4)
    assert folded[0, 0, 0, 0].tolist() == [1.0, 5.0, 9.0, 13.0]


def test_window_encoder_features_and_chunking():
    torch.manual_seed(0)
    enc = ViTWindowEncoder(embed_dim=24, depth=1, num_heads=2).eval()
    x = torch.rand(3, 1, 128, 128, 32)
    with torch.no_grad():
        full = enc(x)
        chunked = enc(x, chunk_size=2)
        tokens = enc.forward_tokens(x)
    assert full.cls.shape == (3, 24) and full.axis2.shape == (3, 8, 24)
    torch.testing.assert_close(chunked.axis2, full.axis2, rtol=1e-5, atol=1e-6)
    # axis2 averages over the two in-plane patch axes; its mean over depth is the patch average
    torch.testing.assert_close(full.axis2.mean(1), full.patch_average, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(full.cls, tokens[:, 0])
    with pytest.raises(ValueError, match="expects windows"):
        enc(torch.rand(1, 1, 64, 64, 32))


def _scan(h, w, d, f=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    cls, avg = torch.randn(h, w, d, f, generator=g), torch.randn(h, w, d, f, generator=g)
    return cls, avg, torch.randn(h, w, d, 8, f, generator=g)


def test_global_path_is_padding_invariant(combiner):
    """A scan's output inside a padded batch equals its output alone: the mask and per-scan RoPE are right."""
    a, b = _scan(2, 3, 2, seed=1), _scan(3, 2, 4, seed=2)
    cls, mask, grid = pad_feature_grids([a[0], b[0]])
    avg, _, _ = pad_feature_grids([a[1], b[1]])
    with torch.no_grad():
        batch_cls, batch_avg = combiner.encode_global(cls, avg, mask, grid)
        from_mask = combiner.encode_global(cls, avg, mask)  # grids recovered from the mask
        torch.testing.assert_close(from_mask[0], batch_cls)
        for i, s in enumerate((a, b)):
            one_cls, one_avg = combiner.encode_global(s[0][None], s[1][None])
            torch.testing.assert_close(batch_cls[i], one_cls[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(batch_avg[i], one_avg[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis_input,rope_mode", [("axisproj", "physical"), ("clsinput", "regular")])
def test_depth_path_is_padding_invariant(combiner, axis_input, rope_mode):
    a, b = _scan(2, 2, 1, seed=3), _scan(1, 2, 3, seed=4)
    cls, mask, grid = pad_feature_grids([a[0], b[0]])
    axis2, _, _ = pad_feature_grids([a[2], b[2]])
    with torch.no_grad():
        out = combiner.forward_depth(cls, axis2, mask, grid, axis_input=axis_input, rope_mode=rope_mode)
        assert out.valid_depth_mask.sum(1).tolist() == [8, 24]
        assert out.perslice[0, 8:].abs().sum() == 0  # invalid depth cells are zero vectors
        for i, s in enumerate((a, b)):
            one = combiner.forward_depth(s[0][None], s[2][None], axis_input=axis_input, rope_mode=rope_mode)
            n = one.perslice.shape[1]
            torch.testing.assert_close(out.cls[i], one.cls[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out.perslice[i, :n], one.perslice[0], rtol=1e-5, atol=1e-5)


def test_physical_and_regular_rope_differ(combiner):
    s = _scan(1, 1, 2, seed=5)
    with torch.no_grad():
        phys = combiner.forward_depth(s[0][None], s[2][None], rope_mode="physical").perslice
        reg = combiner.forward_depth(s[0][None], s[2][None], rope_mode="regular").perslice
    assert (phys - reg).abs().max() > 1e-4


def test_head_weight_norm_keys_frozen_g_and_legacy_load():
    torch.manual_seed(0)
    head = ProjectionHead(10, 6, hidden_dim=8, bottleneck_dim=4)
    keys = set(head.state_dict())
    assert {"last_layer.parametrizations.weight.original0", "last_layer.parametrizations.weight.original1"} <= keys
    assert not head.last_layer.parametrizations.weight.original0.requires_grad
    sd = head.state_dict()
    g = torch.rand(6, 1) + 0.5
    legacy = {k: v for k, v in sd.items() if "parametrizations" not in k}
    legacy["last_layer.weight_g"] = g
    legacy["last_layer.weight_v"] = sd["last_layer.parametrizations.weight.original1"]
    other = ProjectionHead(10, 6, hidden_dim=8, bottleneck_dim=4)
    other.load_state_dict(legacy)
    v = legacy["last_layer.weight_v"]
    torch.testing.assert_close(other.effective_weight(), g * v / v.norm(dim=1, keepdim=True))


class _Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(6, 5, bias=False)
        self.other = nn.Linear(6, 5, bias=False)


def _lora_net():
    torch.manual_seed(0)
    return _Attn()


def test_lora_semantics_merge_unmerge_and_effective_weight_export():
    torch.manual_seed(0)
    layer = LoRALinear(6, 5, r=2, alpha=4.0, bias=False)
    with torch.no_grad():
        layer.lora_B.normal_()
    w0 = layer.weight.detach().clone()
    x = torch.randn(3, 6)
    layer.train()
    expected = x @ (w0 + 2.0 * layer.lora_B @ layer.lora_A).T
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    assert layer.lora_A.requires_grad and not layer.weight.requires_grad
    sd = {k: v.clone() for k, v in layer.state_dict().items()}
    torch.testing.assert_close(sd["weight"], w0 + 2.0 * layer.lora_B.detach() @ layer.lora_A.detach())
    layer.eval()  # merged: weight alone is used
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    # HF-export semantics: `weight` is effective; loading must not add B@A again
    fresh = LoRALinear(6, 5, r=2, alpha=4.0, bias=False).eval()
    fresh.load_state_dict(sd)
    torch.testing.assert_close(fresh(x), expected, rtol=1e-5, atol=1e-5)
    fresh.train()  # unmerging recovers W0 so that training continues from the same function
    torch.testing.assert_close(fresh.weight.detach(), w0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fresh(x), expected, rtol=1e-5, atol=1e-5)


def test_lora_component_semantics_adds_delta():
    net = _lora_net()
    assert add_lora(net, ["q_proj"], r=2, alpha=8.0) == ["q_proj"]
    assert not isinstance(net.other, LoRALinear)
    net.eval()
    sd = net.state_dict()
    sd = {k: (torch.randn_like(v) if "lora_B" in k else v) for k, v in sd.items()}
    base = _lora_net()
    add_lora(base, ["q_proj"], r=2, alpha=8.0)
    base.eval()
    load_lora_base_state_dict(base, sd)
    x = torch.randn(2, 6)
    eff = sd["q_proj.weight"] + 4.0 * sd["q_proj.lora_B"] @ sd["q_proj.lora_A"]
    torch.testing.assert_close(base.q_proj(x), x @ eff.T, rtol=1e-5, atol=1e-5)
    hf = _lora_net()
    add_lora(hf, ["q_proj"], r=2, alpha=8.0)
    hf.eval()
    hf.load_state_dict(sd)
    torch.testing.assert_close(hf.q_proj(x), x @ sd["q_proj.weight"].T, rtol=1e-5, atol=1e-5)


def test_bfloat16_keeps_float32_rope_angles():
    torch.manual_seed(0)
    enc = ViTWindowEncoder(embed_dim=24, depth=1, num_heads=2).eval()
    ref = enc.rope.tables(enc.patch_grid)
    enc = enc.to(torch.bfloat16)
    assert enc.rope.periods.dtype == torch.bfloat16
    sin, cos = enc.rope.tables(enc.patch_grid)
    assert torch.equal(sin, ref[0]) and torch.equal(cos, ref[1])
    with torch.no_grad():
        out = enc(torch.rand(1, 1, 128, 128, 32))
    assert out.cls.dtype == torch.bfloat16 and torch.isfinite(out.axis2.float()).all()


def test_text_feature_cache_matches_eval_mode_and_skips_repeats():
    from radfinder.models import RadFinderModel

    model = RadFinderModel("tiny").eval()
    texts = ["No pleural effusion.", "Large right pleural effusion.", "No pleural effusion."]
    tok = model.tokenize(texts)
    ref = model.text_features(tok["input_ids"], tok["attention_mask"])
    model.cache_text_features(True)
    model.train()  # a frozen tower is still run in eval mode (no dropout) when cached
    got = model.text_features(tok["input_ids"], tok["attention_mask"])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert len(model._text_cache) == 2
    tok1 = model.tokenize(texts[1:2])
    torch.testing.assert_close(model.text_features(tok1["input_ids"], tok1["attention_mask"])[0], ref[1])


def test_folded_input_standardization_equals_standardizing_the_features():
    """Raw features through the folded combiner give what standardised features give through the original."""
    import copy

    torch.manual_seed(0)
    comb = FeatureCombiner(feature_dim=12, embed_dim=24, depth=1, num_heads=2).eval()
    cls, avg, axis2 = _scan(2, 2, 3, seed=5)
    g = torch.Generator().manual_seed(1)
    scale = {n: torch.rand(12, generator=g) * 5 + 0.5 for n in ("cls", "patch_average", "axis2")}
    shift = {n: torch.randn(12, generator=g) * 10 for n in ("cls", "patch_average", "axis2")}
    raw = {"cls": cls, "patch_average": avg, "axis2": axis2}
    raw = {n: v * scale[n] + shift[n] for n, v in raw.items()}  # features with a common offset and spread
    stats = {}
    for n, v in raw.items():
        flat = v.reshape(-1, 12)
        stats[f"{n}_mean"], stats[f"{n}_std"] = flat.mean(0), flat.std(0)
    std = {n: (v - stats[f"{n}_mean"]) / stats[f"{n}_std"] for n, v in raw.items()}
    folded = copy.deepcopy(comb)
    folded.fold_input_standardization(stats)
    with torch.no_grad():
        ref_g = comb.forward_global(std["cls"][None], std["patch_average"][None])
        got_g = folded.forward_global(raw["cls"][None], raw["patch_average"][None])
        ref_d = comb.forward_depth(std["cls"][None], std["axis2"][None])
        got_d = folded.forward_depth(raw["cls"][None], raw["axis2"][None])
    torch.testing.assert_close(got_g.cls, ref_g.cls, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_g.average, ref_g.average, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_d.cls, ref_d.cls, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_d.perslice, ref_d.perslice, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(comb.forward_global(raw["cls"][None], raw["patch_average"][None]).cls, ref_g.cls)
