"""Combined objective: default balance, weighted sum and gradients, config validation."""

from __future__ import annotations

import pytest
import torch

from radfinder.config import build_config
from radfinder.errors import ConfigError
from radfinder.losses import LossInputError, LossWeights, combine_losses, siglip_loss


def test_defaults_are_the_papers_effective_balance():
    w = LossWeights()
    assert (w.siglip, w.localization, w.prompt) == (1.0, 1.0, 8.0)
    official = LossWeights.from_official_schedule()  # 4096 per step, micro 16 x 0.004, mega 256 x 0.5
    assert official.prompt == pytest.approx(8.0)
    assert official.localization == pytest.approx(1.024)
    assert LossWeights.from_official_schedule(step_batch=512).prompt == pytest.approx(1.0)


def test_weighted_sum_values_and_gradients():
    x = torch.randn(3, requires_grad=True)
    terms = {"siglip": (x**2).sum(), "localization": x.sum(), "prompt": (x * 3).sum()}
    out = combine_losses(terms, LossWeights(siglip=1.0, localization=0.5, prompt=2.0))
    want = (x**2).sum() + 0.5 * x.sum() + 2.0 * (x * 3).sum()
    torch.testing.assert_close(out.total, want)
    (g,) = torch.autograd.grad(out.total, x)
    torch.testing.assert_close(g, 2 * x.detach() + 0.5 + 6.0)
    torch.testing.assert_close(out.weighted["prompt"], 2.0 * terms["prompt"].detach())
    logged = out.log_dict()
    assert set(logged) == {"loss/total", "loss/siglip", "loss/localization", "loss/prompt",
                           "loss/siglip_weighted", "loss/localization_weighted", "loss/prompt_weighted"}


def test_missing_and_zero_weight_terms():
    img, txt = torch.randn(4, 5, requires_grad=True), torch.randn(4, 5)
    sig = siglip_loss(img, txt, 1.0, -1.0)
    loc = (img**2).mean()
    weights = LossWeights(siglip=1.0, localization=1.0, prompt=0.0)
    out = combine_losses({"siglip": sig, "localization": None, "prompt": loc}, weights)
    torch.testing.assert_close(out.total, sig.loss)  # SiglipOutput accepted, None skipped, weight 0 not added
    assert "localization" not in out.terms and "prompt" in out.terms
    with pytest.raises(LossInputError, match="unknown"):
        combine_losses({"contrastive": sig.loss})
    with pytest.raises(LossInputError, match="non-zero"):
        combine_losses({"prompt": loc}, weights)


def test_config_overrides_and_validation():
    w = build_config(LossWeights, LossWeights().root, ["prompt=4", "localization=0.25"])
    assert (w.prompt, w.localization, w.siglip) == (4.0, 0.25, 1.0)
    # a mapping lists the objectives that train: one it does not list has weight 0
    w = build_config(LossWeights, {"siglip": 1.0}, [])
    assert (w.siglip, w.prompt, w.localization, w.swca) == (1.0, 0.0, 0.0, 0.0) and w.active() == ["siglip"]
    with pytest.raises(ConfigError):
        build_config(LossWeights, {"prompt": -1})
    with pytest.raises(ConfigError, match=r"unknown objective.*'glob'.*registered objectives: siglip, prompt"):
        build_config(LossWeights, {"glob": 1.0})
