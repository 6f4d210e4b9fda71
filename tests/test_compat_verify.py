"""The reference-pack verifier on the shared pack, on a corrupted copy, and the official layout loader."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from radfinder.compat.verify import main, verify
from radfinder.models import RadFinderModel, load_official_state_dict
from radfinder.models.official import config_from_official

MODEL_GROUPS = ("rope", "fold", "window", "combiner", "heads", "text", "e2e", "layout")


@pytest.fixture(scope="module")
def results(compat_dir):
    return verify(compat_dir)


def test_every_model_vector_matches(results):
    model_checks = [c for c in results if c.name.split(".")[0] in MODEL_GROUPS]
    assert len(model_checks) > 100
    bad = [(c.name, c.max_abs, c.note) for c in model_checks if not c.ok]
    assert not bad
    names = {c.name for c in results}
    assert {"layout.keys_real(meta)", "layout.keys_small", "text.lora_merged_semantics.right.pooled"} <= names


@pytest.mark.parametrize("group", ["losses", "preprocess"])
def test_other_groups(results, group):
    checks = [c for c in results if c.name.split(".")[0] in (group, f"tv_{group}")]
    assert checks
    assert all(c.ok for c in checks), [(c.name, c.note) for c in checks if not c.ok]


def test_every_stored_tensor_is_checked(results):
    coverage = [c for c in results if c.name.startswith("coverage.")]
    assert coverage
    assert all(c.ok for c in coverage), [c.note for c in coverage if not c.ok]


def test_official_state_dict_loads_without_missing_or_unexpected(compat_dir):
    sd = load_file(str(compat_dir / "model_small.safetensors"))
    hf = json.loads((compat_dir / "hf_config_small.json").read_text())
    model = RadFinderModel(config_from_official(hf, {k: tuple(v.shape) for k, v in sd.items()}), text_weights=False)
    report = load_official_state_dict(model, sd)
    assert report.ok and not report.missing and not report.unexpected
    assert any("stripped prefix" in m for m in report.mapped)
    # a legacy weight-norm name and an unexpected key are handled and named
    sd2 = dict(sd)
    g_key = "model.projection_text.last_layer.parametrizations.weight.original0"
    sd2["model.projection_text.last_layer.weight_g"] = sd2.pop(g_key)
    sd2["model.bogus"] = torch.zeros(1)
    report = load_official_state_dict(model, sd2, strict=False)
    assert report.unexpected == ["bogus"] and not report.missing


@pytest.fixture()
def corrupted_pack(compat_dir, tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(compat_dir, pack)
    path = pack / "tv_combiner.safetensors"
    tensors = load_file(str(path))
    tensors["image_embeddings"] = tensors["image_embeddings"].clone()
    tensors["image_embeddings"][1, 7] += 1e-3
    path.chmod(0o644)
    save_file(tensors, str(path))
    return pack


def test_corrupted_pack_fails(corrupted_pack, capsys):
    code = main([str(corrupted_pack), "--only", "combiner", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["ok"] is False
    failed = [c["name"] for c in out["checks"] if not c["ok"]]
    assert failed == ["combiner.global.image_embeddings"]


def test_not_a_pack_is_a_usage_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_module_entry_point(compat_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "radfinder.compat.verify", str(compat_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    data = json.loads(proc.stdout)
    assert data["n_checks"] > 100
    assert proc.returncode == 0, [c for c in data["checks"] if not c["ok"]]
