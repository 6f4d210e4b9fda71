"""Window-encoder pre-training: label-map resampling, dense targets, the light3d encoder, the training loop
(loss falls, kill-and-resume is exact) and the shipped weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from radfinder.config import load_config
from radfinder.data.pretrain_windows import cell_fractions, class_lut
from radfinder.io.volume import Volume
from radfinder.models.light3d import Light3DWindowEncoder
from radfinder.models.shipped import encoder_dir, read_card, sha256_of, window_encoder_config
from radfinder.preprocess import apply_spec, apply_spec_labels, resolve_spec
from radfinder.train.pretrain import pretrain_encoder
from radfinder.train.pretrain_config import PretrainConfig


def test_label_maps_land_where_their_world_position_says():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 6, size=(70, 60, 40)).astype(np.uint8)
    aff = np.array([[-1.7, 0, 0, 40.0], [0, -1.9, 0, 30.0], [0, 0, 2.5, -80.0], [0, 0, 0, 1]])
    vol = Volume(lab, aff, {"source": "labels"})
    spec = resolve_spec("demo")
    out = apply_spec_labels(vol, spec)
    pre = apply_spec(Volume(lab.astype(np.int16), aff, {"source": "image"}), spec)
    assert out.shape == pre.image.shape and out.dtype == np.uint8
    inv = np.linalg.inv(aff)
    picks = np.argwhere(out > 0)[rng.choice(int((out > 0).sum()), 400, replace=False)]
    for ijk in picks:  # independent reference: world position -> nearest source voxel
        src = inv @ (pre.affine @ np.r_[ijk, 1.0])
        s = np.clip(np.rint(src[:3]), 0, np.array(lab.shape) - 1).astype(int)
        near = lab[tuple(s)]
        if np.all(np.abs(src[:3] - np.rint(src[:3])) < 0.49):  # not on a rounding tie
            assert out[tuple(ijk)] == near
    assert set(np.unique(out)) <= set(np.unique(lab))


def test_cell_fractions_count_each_class_per_cell():
    rng = np.random.default_rng(1)
    lab = rng.choice([0, 5, 10, 201], size=(16, 16, 8)).astype(np.uint8)
    classes = [10, 201, 5]
    got = cell_fractions(lab, (2, 2, 2), class_lut(classes), len(classes))
    for k, c in enumerate(classes):
        for i in range(2):
            for j in range(2):
                for d in range(2):
                    block = lab[i * 8 : (i + 1) * 8, j * 8 : (j + 1) * 8, d * 4 : (d + 1) * 4]
                    assert got[k, i, j, d] == pytest.approx((block == c).mean(), abs=1e-3)


def test_light3d_gives_one_token_per_12_mm_and_a_spatial_grid():
    enc = Light3DWindowEncoder((8, 16, 32), (0, 1, 1), 24).eval()
    spec = resolve_spec("demo")
    assert enc.depth_tokens == spec.depth_tokens_per_window  # one per 4 slices = 12 mm at 3 mm
    x = torch.rand(2, 1, 128, 128, 32)
    with torch.no_grad():
        f = enc(x, spatial=True)
        g = enc(x)
    assert f.cls.shape == (2, 24) and f.axis2.shape == (2, 8, 24) and f.spatial.shape == (2, 4, 4, 8, 24)
    assert g.spatial is None and torch.allclose(f.patch_average, g.patch_average)
    # the spatial grid averages to the depth tokens and the window mean
    assert torch.allclose(f.spatial.mean(dim=(1, 2)), f.axis2, atol=1e-5)
    assert torch.allclose(f.axis2.mean(dim=1), f.patch_average, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_pretrain(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    over = ["data.cohort.studies=2", "data.cohort.workers=1", "encoder.widths=[8,16,32]", "encoder.blocks=[0,1,1]",
            "encoder.feature_dim=24", "schedule.batch=4", "schedule.epochs=3", "optim.warmup_steps=1",
            "checkpoint.every_steps=2", "logging.progress=false", "optim.lr=0.003", "threads=1"]  # fmt: skip
    cfg = load_config(PretrainConfig, "configs/pretrain/synthetic.yaml", over)
    full = pretrain_encoder(cfg, root / "full")
    return root, over, cfg, full


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "encoder" / "encoder.safetensors"))


def test_pretraining_lowers_the_loss(tiny_pretrain):
    root, _, _, full = tiny_pretrain
    log = [json.loads(x) for x in (root / "full" / "log.jsonl").read_text().splitlines()]
    assert len(log) == full["steps"] >= 6
    first, last = np.mean([r["loss"] for r in log[:2]]), np.mean([r["loss"] for r in log[-2:]])
    assert last < first
    card = json.loads((root / "full" / "encoder" / "encoder.json").read_text())
    assert card["window_encoder"]["kind"] == "light3d" and card["spec_hash"] == resolve_spec("demo").hash()


def test_killed_pretraining_resumes_to_identical_weights(tiny_pretrain):
    root, over, cfg, full = tiny_pretrain
    # a run stopped after step 2 (as a kill right after that checkpoint leaves it), then resumed to the end;
    # the cohort and the window cache are the full run's, as a re-run would find them
    part = root / "part"
    part.mkdir()
    for name in ("cohort", "windows"):
        os.symlink(root / "full" / name, part / name)
    pretrain_encoder(load_config(PretrainConfig, "configs/pretrain/synthetic.yaml", [*over, "schedule.max_steps=2"]),
                     part)  # fmt: skip
    with pytest.raises(Exception, match="--resume"):
        pretrain_encoder(cfg, part)
    pretrain_encoder(cfg, part, resume=True)
    a, b = _weights(root / "full"), _weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_shipped_encoder_matches_its_card_and_loads_offline():
    d = encoder_dir("pretrained-synthetic")
    card = read_card("pretrained-synthetic")
    assert sha256_of(d / "encoder.safetensors") == card["sha256"]
    assert (d / "encoder.safetensors").stat().st_size <= 30 * 2**20
    for key in ("command", "config", "commit", "cohort", "hardware", "wall_time_s", "probe", "preprocess"):
        assert key in card, key
    assert card["cohort"]["stream"] == "pretrain"
    code = (
        "import socket\n"
        "def _no(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = _no; socket.create_connection = _no\n"
        "import torch\n"
        "from radfinder.models.config import resolve_model_config\n"
        "from radfinder.models.radfinder import RadFinderModel\n"
        "from radfinder.models.shipped import window_encoder_config\n"
        "cfg = resolve_model_config('tiny')\n"
        "cfg.window_encoder = type(cfg.window_encoder).model_validate(window_encoder_config('pretrained-synthetic'))\n"
        "m = RadFinderModel(cfg).eval()\n"
        "with torch.no_grad(): f = m.backbone_image(torch.zeros(1, 1, 128, 128, 32))\n"
        "print(float(f.cls.abs().sum()))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert window_encoder_config("pretrained-synthetic")["options"]["weights"] == "pretrained-synthetic"


def test_a_damaged_weights_file_is_refused(tmp_path):
    import shutil

    from radfinder.errors import CheckpointError
    from radfinder.models.shipped import load_encoder_weights

    dst = tmp_path / "enc"
    shutil.copytree(encoder_dir("pretrained-synthetic"), dst)
    raw = bytearray((dst / "encoder.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (dst / "encoder.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        load_encoder_weights(dst)


def test_the_shipped_encoder_fills_a_feature_cache_with_spatial_tokens(tmp_path):
    import nibabel as nib

    from radfinder.features import ExtractItem, FeatureStore, extract_features, state_dict_hash
    from radfinder.models.config import WindowEncoderConfig
    from radfinder.models.radfinder import build_window_encoder

    rng = np.random.default_rng(0)
    vol = rng.integers(-1000, 400, size=(120, 100, 90)).astype(np.int16)
    aff = np.diag([-2.0, -2.0, 2.5, 1.0])
    nib.save(nib.Nifti1Image(vol, aff), tmp_path / "scan.nii.gz")
    enc = build_window_encoder(WindowEncoderConfig.model_validate(window_encoder_config("pretrained-synthetic")))
    spec = resolve_spec("demo")
    store = FeatureStore(tmp_path / "f", spec, {"name": "shipped", "hash": state_dict_hash(enc)}, enc.feature_dim,
                         spatial=True)  # fmt: skip
    summary = extract_features([ExtractItem("scan", str(tmp_path / "scan.nii.gz"))], enc.eval(), store,
                               show_progress=False)  # fmt: skip
    assert not summary.failed and summary.written == ["scan"]
    rec = FeatureStore.open(tmp_path / "f").read("scan")
    hg, wg, dg = rec.grid
    assert rec.spatial.shape == (hg, wg, dg, 4, 4, spec.depth_tokens_per_window, enc.feature_dim)
    # the spatial grid averages to the depth tokens (fp16 storage)
    np.testing.assert_allclose(rec.spatial.astype(np.float32).mean(axis=(3, 4)), rec.axis2.astype(np.float32),
                               atol=2e-2, rtol=1e-2)  # fmt: skip


def test_a_built_encoder_holds_exactly_the_shipped_weights():
    """The independent reference is the safetensors file itself, read with safetensors alone."""
    from safetensors.torch import load_file

    from radfinder.models.config import WindowEncoderConfig
    from radfinder.models.radfinder import build_window_encoder

    cfg = WindowEncoderConfig.model_validate(window_encoder_config("pretrained-synthetic"))
    enc = build_window_encoder(cfg)
    want = load_file(str(encoder_dir("pretrained-synthetic") / "encoder.safetensors"))
    got = enc.state_dict()
    assert set(got) == set(want)
    for k, v in want.items():
        assert torch.equal(got[k], v), k
    fresh = build_window_encoder(WindowEncoderConfig.model_validate(
        {**cfg.model_dump(), "options": {k: v for k, v in cfg.options.items() if k != "weights"}}))
    assert any(not torch.equal(fresh.state_dict()[k], v) for k, v in want.items())  # the check can tell


def test_damaged_missing_or_misfit_weights_are_refused_when_the_encoder_is_built(tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from radfinder.errors import CheckpointError, ConfigError
    from radfinder.models.config import WindowEncoderConfig
    from radfinder.models.radfinder import build_window_encoder

    def build(weights):
        cfg = window_encoder_config("pretrained-synthetic")
        cfg["options"]["weights"] = str(weights)
        return build_window_encoder(WindowEncoderConfig.model_validate(cfg))

    src = encoder_dir("pretrained-synthetic")
    damaged = tmp_path / "damaged"
    shutil.copytree(src, damaged)
    raw = bytearray((damaged / "encoder.safetensors").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (damaged / "encoder.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256 differs"):
        build(damaged)
    with pytest.raises(ConfigError, match="unknown window-encoder weights"):
        build(tmp_path / "nowhere")
    missing = tmp_path / "missing"
    shutil.copytree(src, missing)
    (missing / "encoder.safetensors").unlink()
    with pytest.raises(ConfigError, match="nor a folder with encoder.safetensors"):
        build(missing)
    nocard = tmp_path / "nocard"
    nocard.mkdir()
    shutil.copy(src / "encoder.safetensors", nocard / "encoder.safetensors")
    with pytest.raises(CheckpointError, match="no card.json or encoder.json"):
        build(nocard)
    # a pretrain-encoder folder (encoder.json, no sha256): a truncated file is caught by safetensors' own check
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    card = read_card("pretrained-synthetic")
    (truncated / "encoder.json").write_text(json.dumps({k: v for k, v in card.items() if k != "sha256"}))
    (truncated / "encoder.safetensors").write_bytes((src / "encoder.safetensors").read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="unreadable"):
        build(truncated)
    # weights of another architecture: a dropped tensor is named, not silently left at its random init
    misfit = tmp_path / "misfit"
    misfit.mkdir()
    (misfit / "encoder.json").write_text((truncated / "encoder.json").read_text())
    sd = load_file(str(src / "encoder.safetensors"))
    dropped = sorted(sd)[0]
    save_file({k: v for k, v in sd.items() if k != dropped}, str(misfit / "encoder.safetensors"))
    with pytest.raises(CheckpointError, match="do not fit this architecture"):
        build(misfit)
