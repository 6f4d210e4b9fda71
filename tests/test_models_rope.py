"""3D RoPE: reference tables, and the properties the combiner relies on."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from radfinder.models.rope import apply_rope, batched_rope_sin_cos, rope_coords, rope_periods, rope_sin_cos


def test_tables_match_reference_exactly(compat_dir):
    ref = load_file(str(compat_dir / "tv_rope.safetensors"))
    cases = json.loads((compat_dir / "manifest.json").read_text())["files"]["tv_rope.safetensors"]["cases"]
    assert cases
    for c in cases:
        periods = rope_periods(c["head_dim"], c["base"])
        divs = None if c["H_div"] is None else (c["H_div"], c["W_div"], c["D_div"])
        sin, cos = rope_sin_cos((c["H"], c["W"], c["D"]), periods, divs)
        assert torch.equal(periods, ref[f"{c['tag']}.periods"])
        assert torch.equal(sin, ref[f"{c['tag']}.sin"]), c["tag"]
        assert torch.equal(cos, ref[f"{c['tag']}.cos"]), c["tag"]


def test_head_dim_must_be_divisible_by_six():
    with pytest.raises(ValueError, match="divisible by 6"):
        rope_periods(16, 100.0)


def test_coordinates_centres_and_physical_divisor():
    c = rope_coords((2, 1, 16), (2, 1, 2))
    assert c[:, 0].unique().tolist() == [-0.5, 0.5]
    # physical depth: 8 tokens per window, divisor = window count -> coordinates run past 1
    assert c[0, 2].item() == pytest.approx(2 * 0.5 / 2 - 1)
    assert c[15, 2].item() == pytest.approx(2 * 15.5 / 2 - 1)


def test_rotation_is_relative_along_an_axis():
    """q.k after RoPE depends only on the displacement between the tokens (per axis)."""
    h = 18
    periods = rope_periods(h, 100.0)
    sin, cos = rope_sin_cos((1, 1, 6), periods)
    q = torch.randn(h, dtype=torch.float64)
    k = torch.randn(h, dtype=torch.float64)
    rq = apply_rope(q.expand(6, h)[None, None], sin.double(), cos.double())[0, 0]
    rk = apply_rope(k.expand(6, h)[None, None], sin.double(), cos.double())[0, 0]
    assert (rq[1] @ rk[3]).item() == pytest.approx((rq[2] @ rk[4]).item(), abs=1e-5)  # float32 tables
    assert (rq[0] @ rk[0]).item() == pytest.approx((q @ k).item(), abs=1e-5)  # same position: no change


def test_batched_tables_per_scan_grid_and_zero_padding():
    periods = rope_periods(36, 100.0)
    sin, cos = batched_rope_sin_cos([(2, 3, 2), (3, 2, 4)], (3, 3, 4), periods)
    own_sin, own_cos = rope_sin_cos((2, 3, 2), periods)
    s0 = sin[0].view(3, 3, 4, 36)
    assert torch.equal(s0[:2, :3, :2].reshape(-1, 36), own_sin)  # its own grid, not the padded one
    assert torch.equal(cos[0].view(3, 3, 4, 36)[:2, :3, :2].reshape(-1, 36), own_cos)
    assert s0[2].abs().sum() == 0 and cos[0].view(3, 3, 4, 36)[:, :, 2:].abs().sum() == 0
