"""The neural report-generation path end to end with a tiny randomly initialised Qwen3 (2 layers, hidden 64) and the
bundled MiniLM WordPiece tokenizer, on synthetic-style reports: the loss falls, generate() writes text, save/load
round-trips exactly, and a checkpoint refuses another base model. Never a result: the LM is random and tiny."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from radfinder.errors import CheckpointError  # noqa: E402
from radfinder.models.lora import LoRALinear  # noqa: E402
from radfinder.models.prefix_lm import PrefixReportLM, depth_batch  # noqa: E402
from radfinder.models.text import minilm_dir  # noqa: E402
from radfinder.train.prefix_lm import train_prefix_lm  # noqa: E402

REPORTS = [
    "Cardiomegaly. No pleural effusion. 1. Cardiomegaly.",
    "No cardiomegaly. Small pleural effusion on the right. 1. Pleural effusion.",
    "Lung nodule in the right upper lobe. 1. Pulmonary nodule.",
    "No acute cardiopulmonary abnormality.",
]


def _tiny_base(path, seed=0):
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id)
    torch.manual_seed(seed)
    Qwen3ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _data(n_per=4, p=32, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(len(REPORTS), p)).astype(np.float32)
    vols, deps, texts = [], [], []
    for k, text in enumerate(REPORTS):
        for _ in range(n_per):
            vols.append(protos[k] + 0.05 * rng.normal(size=p).astype(np.float32))
            deps.append(np.stack([protos[k]] * int(rng.integers(3, 6))) + 0.05 * rng.normal(size=(1, p)))
            texts.append(text)
    return vols, [d.astype(np.float32) for d in deps], texts


def _trained_names(model) -> set[str]:
    """Exact names of what may train: the projector, the two prefix embeddings and each LoRA module's A and B."""
    lora = {f"lm.{n}.{ab}" for n, m in model.lm.named_modules() if isinstance(m, LoRALinear)
            for ab in ("lora_A", "lora_B")}  # fmt: skip
    projector = {n for n, _ in model.named_parameters() if n.startswith("projector.")}
    return lora | projector | {"token_type", "depth_position"}


def _base_parameters(model) -> dict[str, torch.Tensor]:
    # raw parameters, not state_dict(): a LoRA layer's state_dict exports W0 + BA, which moves as the adapter trains
    trained = _trained_names(model)
    return {n: p.detach().clone() for n, p in model.named_parameters() if n not in trained}


def _assert_only_adapters_moved(model, base_before: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    trained = _trained_names(model)
    assert len(base_before) > 20 and {n for n in base_before if n.endswith("q_proj.weight")}  # projections included
    merged = {f"lm.{n}.weight": m for n, m in model.lm.named_modules() if isinstance(m, LoRALinear) and m.merged}
    for n, before in base_before.items():
        assert not params[n].requires_grad, n
        if n in merged:  # eval() merged the adapter into the frozen weight: W = W0 + BA (float rounding only)
            torch.testing.assert_close(params[n].detach() - merged[n].delta(), before, rtol=0, atol=1e-6)
        else:
            assert torch.equal(params[n].detach(), before), n
    assert {n for n, p in params.items() if p.requires_grad} == trained
    assert {id(p) for p in model.trainable_parameters()} == {id(params[n]) for n in trained}


def test_prefix_lm_base_is_frozen_for_every_base_weight(tmp_path):
    base = _tiny_base(tmp_path / "base")
    torch.manual_seed(0)
    model = PrefixReportLM.from_base(base, token_dim=32, lora_r=4, lora_alpha=8)
    before = _base_parameters(model)
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if n in _trained_names(model)}
    vols, deps, texts = _data(n_per=1)
    train_prefix_lm(model, vols, deps, texts, epochs=2, batch_size=4, lr=1e-2, seed=0)
    _assert_only_adapters_moved(model, before)
    params = dict(model.named_parameters())
    moved = {n for n, v in adapters.items() if not torch.equal(params[n].detach(), v)}
    assert any(n.endswith("lora_B") for n in moved) and any(n.startswith("projector.") for n in moved), moved


@pytest.mark.slow  # ~20-40 s on 2 shared cores
def test_prefix_lm_trains_generates_and_round_trips(tmp_path):
    base = _tiny_base(tmp_path / "base")
    torch.manual_seed(0)
    model = PrefixReportLM.from_base(base, token_dim=32, lora_r=4, lora_alpha=8)
    assert sum(isinstance(m, LoRALinear) for m in model.lm.modules()) == 2 * 4  # q, k, v, o in 2 layers
    base_before = _base_parameters(model)
    vols, deps, texts = _data()
    losses = train_prefix_lm(model, vols, deps, texts, epochs=15, batch_size=8, lr=1e-2, seed=0)
    first, last = np.mean(losses[:2]), np.mean(losses[-2:])
    # the base (embeddings, MLPs, output head) is frozen and random: only the prefix and LoRA learn
    assert last < first - 0.5, (first, last)  # ln(30522) = 10.3 at the start
    _assert_only_adapters_moved(model, base_before)

    vol, dep, mask = depth_batch(vols[:2], deps[:2])
    out = model.generate(vol, dep, mask, max_new_tokens=16)
    assert len(out) == 2 and all(isinstance(t, str) and t for t in out)

    ckpt = model.save(tmp_path / "ckpt")
    assert sorted(p.name for p in ckpt.iterdir()) == ["prefix_lm.json", "prefix_lm.safetensors"]
    again = PrefixReportLM.load(ckpt)
    assert again.generate(vol, dep, mask, max_new_tokens=16) == out
    with torch.no_grad():
        a = model.loss(vol, dep, mask, texts[:2])
        b = again.loss(vol, dep, mask, texts[:2])
    assert abs(float(a) - float(b)) < 1e-5


def test_prefix_lm_refuses_another_base_and_a_missing_checkpoint(tmp_path):
    base = _tiny_base(tmp_path / "base")
    other = _tiny_base(tmp_path / "other", seed=1)
    model = PrefixReportLM.from_base(base, token_dim=8, lora_r=2, lora_alpha=4)
    ckpt = model.save(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="content hash"):
        PrefixReportLM.load(ckpt, base_dir=other)
    with pytest.raises(CheckpointError, match="not a prefix-LM checkpoint"):
        PrefixReportLM.load(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="config.json"):
        PrefixReportLM.from_base(tmp_path / "nothing", token_dim=8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_prefix_lm_trains_under_bf16_autocast_on_cuda(tmp_path):
    base = _tiny_base(tmp_path / "base")
    model = PrefixReportLM.from_base(base, token_dim=32, lora_r=4, lora_alpha=8)
    vols, deps, texts = _data()
    losses = train_prefix_lm(model, vols, deps, texts, epochs=15, batch_size=8, lr=1e-2, device="cuda")
    assert np.isfinite(losses).all() and np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.5
    vol, dep, mask = depth_batch(vols[:2], deps[:2], "cuda")
    assert all(isinstance(t, str) for t in model.generate(vol, dep, mask, max_new_tokens=8))
