"""Model configs and presets; the official architecture's layout (meta device only: never instantiated for real)."""

from __future__ import annotations

import json

import pytest
import torch

from radfinder.errors import ConfigError
from radfinder.models import PRESETS, RadFinderModel, pool_hidden, resolve_model_config
from radfinder.models.official import config_from_official


def _layout(model) -> dict[str, list[int]]:
    return {"model." + k: list(v.shape) for k, v in model.state_dict().items()}


def test_vitl_preset_on_meta_matches_release_layout(compat_dir):
    expected = {k: v["shape"] for k, v in json.loads((compat_dir / "keys_real.json").read_text()).items()}
    with torch.device("meta"):
        model = RadFinderModel("radfinder-vitl", text_weights=False)
    layout = _layout(model)
    assert len(layout) == len(expected) == 1030
    assert layout == expected
    # the release config.json maps to the same architecture
    cfg = config_from_official(json.loads((compat_dir / "hf_config_real_expected.json").read_text()))
    assert cfg.window_encoder == model.config.window_encoder
    assert cfg.combiner == model.config.combiner
    assert cfg.heads == model.config.heads and cfg.projection_dim == 512


def test_presets_and_yaml_overrides(tmp_path):
    for name in PRESETS:
        assert resolve_model_config(name).name == name
    path = tmp_path / "m.yaml"
    path.write_text("preset: tiny\nprojection_dim: 32\ncombiner:\n  depth: 1\n")
    cfg = resolve_model_config(path, ["heads.hidden_dim=40"])
    assert (cfg.projection_dim, cfg.combiner.depth, cfg.heads.hidden_dim) == (32, 1, 40)
    assert cfg.combiner.embed_dim == 72  # untouched preset values stay
    with pytest.raises(ConfigError, match="divisible by 6"):
        resolve_model_config("tiny", ["window_encoder.num_heads=8"])  # head width 9
    with pytest.raises(ConfigError, match="not a preset"):
        resolve_model_config("no-such-model")


def test_last_token_pooling_uses_whole_batch_last_column():
    hidden = torch.arange(2 * 4, dtype=torch.float32).view(2, 4, 1)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert pool_hidden(hidden, right, "last").flatten().tolist() == [2.0, 5.0]
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert pool_hidden(hidden, left, "last").flatten().tolist() == [3.0, 7.0]
    mean = pool_hidden(hidden, right, "mean").flatten().tolist()
    assert mean == [1.0, 4.5]
    assert pool_hidden(hidden, right, "cls").flatten().tolist() == [0.0, 4.0]


def test_model_info_cli_counts_release_parameters(capsys):
    from radfinder.cli.main import main

    assert main(["model-info", "radfinder-vitl", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    # SPEC 10.1: 1,029,802,680 stored values, of which 30 are the two RoPE `periods` buffers
    assert info["total_parameters"] == 1_029_802_680 - 30
    assert info["state_dict_tensors"] == 1030
    assert main(["model-info", "no-such-model"]) == 2
