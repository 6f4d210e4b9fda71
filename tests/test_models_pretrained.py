"""Self-describing checkpoints: round trip, offline loading, official HF exports, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from radfinder.errors import CheckpointError
from radfinder.models import RadFinderModel

TEXTS = ["no acute cardiopulmonary findings", "a 6 mm nodule in the right upper lobe"]
GRID = [[1, 1, 2], [1, 1, 1]]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = RadFinderModel("tiny").eval()
    with torch.no_grad():
        model.criterion.t.fill_(2.5)
        model.criterion.b.fill_(-7.0)
        for head in (model.projection_image_copy, model.projection_text_copy):  # copies must be saved separately
            head.layers[0].bias.normal_()
    return model


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    tiny.save_pretrained(path)
    return path


def _outputs(model, windows):
    with torch.no_grad():
        img = model.encode_image(windows, GRID)
        depth = model.encode_image_depth(windows, GRID)
        tok = model.tokenize(TEXTS)
        return {
            "retrieval": img.retrieval,
            "disease": img.disease,
            "depth": depth.slice_emb,
            "valid": depth.valid_depth_mask,
            "text": model.encode_text(**tok),
            "snippet": model.encode_snippet(**tok),
        }


def test_round_trip_gives_identical_embeddings(tiny, saved):
    want = ["config.json", "labels.json", "model.safetensors", "preprocess.json", "text"]
    assert sorted(p.name for p in saved.iterdir()) == want
    assert (saved / "text" / "config.json").is_file() and (saved / "text" / "tokenizer.json").is_file()
    loaded = RadFinderModel.from_pretrained(saved)
    windows = torch.rand(3, 1, 128, 128, 32, generator=torch.Generator().manual_seed(1))
    a, b = _outputs(tiny, windows), _outputs(loaded, windows)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert loaded.preprocess_spec == tiny.preprocess_spec
    assert loaded.config.window_encoder == tiny.config.window_encoder
    assert loaded.criterion.t.item() == pytest.approx(2.5)
    # weights are stored in the official layout, with the HF `model.` prefix
    keys = load_file(str(saved / "model.safetensors")).keys()
    assert all(k.startswith("model.") for k in keys) and "model.criterion.t" in keys


def test_loads_offline_without_network(saved, tiny):
    code = (
        "import socket, sys, torch\n"
        "def _no(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = _no; socket.create_connection = _no\n"
        "from radfinder.models import RadFinderModel\n"
        f"m = RadFinderModel.from_pretrained({str(saved)!r})\n"
        f"with torch.no_grad(): e = m.encode_text(**m.tokenize({TEXTS!r}))\n"
        "torch.save(e, sys.argv[1])\n"
    )
    out = saved.parent / "offline.pt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with torch.no_grad():
        expected = tiny.encode_text(**tiny.tokenize(TEXTS))
    assert torch.equal(torch.load(out, weights_only=True), expected)


def _copy(saved: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(saved, dst)
    return dst


def test_missing_or_corrupt_files_raise_checkpoint_error(saved, tmp_path):
    ck = _copy(saved, tmp_path)
    (ck / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        RadFinderModel.from_pretrained(ck)

    ck = _copy(saved, tmp_path / "b")
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        RadFinderModel.from_pretrained(ck)

    ck = _copy(saved, tmp_path / "c")
    (ck / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        RadFinderModel.from_pretrained(ck)

    ck = _copy(saved, tmp_path / "d")
    (ck / "text" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="text"):
        RadFinderModel.from_pretrained(ck)

    with pytest.raises(CheckpointError, match="not found"):
        RadFinderModel.from_pretrained(tmp_path / "nowhere")


def test_wrong_keys_and_shapes_are_named(saved, tmp_path):
    ck = _copy(saved, tmp_path)
    sd = load_file(str(ck / "model.safetensors"))
    sd["model.extra.weight"] = torch.zeros(2)
    del sd["model.criterion.b"]
    save_file(sd, str(ck / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing key.*criterion\.b.*unexpected key.*extra\.weight"):
        RadFinderModel.from_pretrained(ck)
    sd = load_file(str(saved / "model.safetensors"))
    sd["model.criterion.t"] = torch.zeros(3)
    save_file(sd, str(ck / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"shape mismatch for criterion\.t"):
        RadFinderModel.from_pretrained(ck)


@pytest.fixture(scope="module")
def official_dir(compat_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("official")
    shutil.copy(compat_dir / "hf_config_small.json", d / "config.json")
    shutil.copy(compat_dir / "model_small.safetensors", d / "model.safetensors")
    return d


def test_official_export_sizes_inferred_from_weights(official_dir, compat_dir):
    manifest = json.loads((compat_dir / "manifest.json").read_text())
    model = RadFinderModel.from_pretrained(official_dir)
    cfg = model.config
    assert cfg.heads.hidden_dim == manifest["small_head_dims"]["hidden_dim"]
    assert cfg.heads.bottleneck_dim == manifest["small_head_dims"]["bottleneck_dim"]
    qwen = model.backbone_text.config
    for key, value in manifest["tiny_qwen_overrides"].items():
        assert getattr(qwen, key) == value, key
    assert cfg.text.lora.scaling == manifest["lora_facts"]["scaling"]
    assert cfg.window_encoder.patch_size == (16, 16, 4) and cfg.combiner.rope_mode == "physical"
    assert model.tokenizer is None  # the export names a hub tokenizer; nothing is downloaded


def test_official_export_resave_with_lora_in_training_mode(official_dir, compat_dir, tmp_path):
    """Saving while LoRA is unmerged (training) must write effective weights: the reload matches the vectors."""
    ref = load_file(str(compat_dir / "tv_text.safetensors"))
    model = RadFinderModel.from_pretrained(official_dir)
    model.train()
    model.save_pretrained(tmp_path / "resaved")
    again = RadFinderModel.from_pretrained(tmp_path / "resaved")
    with torch.no_grad():
        out = again.encode_text(ref["ids_right"], ref["mask_right"])
    torch.testing.assert_close(out, ref["right.encode_text"], rtol=1e-5, atol=1e-5)
