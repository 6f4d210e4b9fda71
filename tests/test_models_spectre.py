"""SPECTRE component files (`radfinder.models.spectre`) at toy size, by folder and by hub id offline: the files are
written here from a source model with the release's conventions (16x16x8 backbone conv, no axis_patch_proj in the
combiner, base-weight LoRA text), so the source model's own weights are the independent reference."""

from __future__ import annotations

import socket

import pytest
import torch

from helpers_hub import add_snapshot
from radfinder.errors import CheckpointError
from radfinder.models import RadFinderModel, resolve_model_config
from radfinder.models.lora import LoRALinear
from radfinder.models.spectre import SPECTRE_FILES, load_spectre

TOY_QWEN = {"vocab_size": 64, "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 12, "max_window_layers": 2}


@pytest.fixture(autouse=True)
def _own_stamps(monkeypatch, tmp_path):
    """Verification stamps of this test's files in its own folder, not the user's ~/.cache/radfinder."""
    monkeypatch.setenv("RADFINDER_CACHE_DIR", str(tmp_path / "radfinder-cache"))


def _config():
    cfg = resolve_model_config("tiny").model_dump()
    cfg["text"] = {"source": "qwen3", "hf_config": TOY_QWEN, "hidden_size": 48, "pooling": "last",
                   "lora": {"r": 2, "alpha": 8.0, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}}
    return resolve_model_config(cfg)


def _fresh(seed: int):
    torch.manual_seed(seed)
    return RadFinderModel(_config())  # train mode, as the official code loads the component files


@pytest.fixture(scope="module")
def spectre_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spectre") / "SPECTRE"
    folder.mkdir()
    src = _fresh(11)
    with torch.no_grad():
        for name, p in src.backbone_text.named_parameters():
            if "lora_B" in name:  # nonzero B, so base-weight semantics (W0 + s * B @ A) are visible
                p.normal_(0, 0.1)
    backbone = {k: v.clone() for k, v in src.backbone_image.state_dict().items()}
    w4 = backbone["patch_embed.proj.weight"]
    w8 = torch.repeat_interleave(w4 / 2, 2, dim=-1)  # SPECTRE's 16x16x8 kernel whose fold sums back to w4
    backbone["patch_embed.proj.weight"] = w8
    backbone["head.weight"] = torch.zeros(3, 3)  # the release's file holds more than the encoder: ignored
    combiner = {k: v for k, v in src.feature_comb_image.state_dict().items() if not k.startswith("axis_patch_proj")}
    text = {k: v.clone() for k, v in src.backbone_text.state_dict().items()}
    for name, m in src.backbone_text.named_modules():  # component files store the base W0 (a state dict the sum)
        if isinstance(m, LoRALinear):
            text[f"{name}.weight"] = m.weight.detach().clone()  # src is in train mode: unmerged, weight is W0
    for part, sd in (("backbone", backbone), ("combiner", combiner), ("text", text),
                     ("image_head", src.projection_image.state_dict()),
                     ("text_head", src.projection_text.state_dict())):
        torch.save(dict(sd), folder / SPECTRE_FILES[part])
    return {"folder": folder, "source": src, "w4": w4}


def test_spectre_by_folder_matches_the_source_weights(spectre_files):
    src = spectre_files["source"]
    model = _fresh(0)
    load_spectre(model, spectre_files["folder"])
    model.eval()
    torch.testing.assert_close(model.backbone_image.state_dict(), src.backbone_image.state_dict(), rtol=0, atol=0)
    torch.testing.assert_close(model.projection_image_copy.state_dict(), src.projection_image.state_dict())
    comb = model.feature_comb_image
    torch.testing.assert_close(comb.axis_patch_proj.weight, src.feature_comb_image.patch_proj.weight[:, 72:])
    # text: effective weight = stored base + (alpha / r) * B @ A
    q = src.backbone_text.layers[0].self_attn.q_proj
    want = q.weight + 4.0 * q.lora_B @ q.lora_A
    torch.testing.assert_close(model.backbone_text.layers[0].self_attn.q_proj.weight, want)
    assert model.hub_sources == {}


def test_spectre_by_hub_id_offline_equals_by_folder(spectre_files, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    commit = add_snapshot(cache, "cclaess/SPECTRE", spectre_files["folder"])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: (_ for _ in ()).throw(AssertionError("socket")))
    by_id, by_folder = _fresh(0), _fresh(0)
    load_spectre(by_id, "cclaess/SPECTRE")
    load_spectre(by_folder, spectre_files["folder"])
    sa, sb = by_id.state_dict(), by_folder.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert by_id.hub_sources == {"spectre": {"repo_id": "cclaess/SPECTRE", "revision": "main", "commit": commit}}
    only = _fresh(0)
    load_spectre(only, "cclaess/SPECTRE", parts=("backbone",))
    assert torch.equal(only.backbone_image.patch_embed.proj.weight, spectre_files["w4"])


def test_missing_or_wrong_component_files_are_named(spectre_files, tmp_path):
    with pytest.raises(CheckpointError, match="SPECTRE component files missing: spectre_backbone"):
        load_spectre(_fresh(0), tmp_path, parts=("backbone",))
    (tmp_path / SPECTRE_FILES["backbone"]).write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="unreadable component file"):
        load_spectre(_fresh(0), tmp_path, parts=("backbone",))
    torch.save({"unrelated.weight": torch.zeros(2)}, tmp_path / SPECTRE_FILES["backbone"])
    with pytest.raises(CheckpointError, match="not this architecture's backbone"):
        load_spectre(_fresh(0), tmp_path, parts=("backbone",))


def test_training_init_from_spectre_by_id(spectre_files, tmp_path, monkeypatch):
    import yaml

    from radfinder.models.text import minilm_dir
    from radfinder.train.config import TrainConfig, resolve_paths
    from radfinder.train.setup import build_model

    cache = tmp_path / "cache"
    commit = add_snapshot(cache, "cclaess/SPECTRE", spectre_files["folder"])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _config().model_dump(mode="json")
    cfg["text"]["tokenizer"] = str(minilm_dir())  # training needs a tokenizer; the toy vocabulary is not used here
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(cfg))
    run = TrainConfig.model_validate({"model": {"init": "toy.yaml", "spectre": "cclaess/SPECTRE"}})
    section = resolve_paths(run, tmp_path).model
    assert section.spectre == "cclaess/SPECTRE" and section.init == str(tmp_path / "toy.yaml")
    model = build_model(section)
    assert torch.equal(model.backbone_image.patch_embed.proj.weight, spectre_files["w4"])
    # training changes the weights: SPECTRE is where they came from (saved as derived_from with every checkpoint)
    assert model.derived_from == {"spectre": {"repo_id": "cclaess/SPECTRE", "revision": "main", "commit": commit}}
    assert model.hub_sources == {}
