"""Hub ids beyond plain loading: a toy Qwen3 text tower by id, training from a released checkpoint by id (its repo
id and commit in log.jsonl, train_state.json and each checkpoint's config.json), and feature caches that refuse
another revision. All offline, from hub caches built by tests/helpers_hub.py."""

from __future__ import annotations

import json
import shutil
import socket

import nibabel as nib
import numpy as np
import pytest
import torch

from helpers_hub import add_snapshot
from radfinder.cli import main
from radfinder.errors import ConfigError
from radfinder.models import RadFinderModel, resolve_model_config
from radfinder.models.official import infer_qwen3_sizes
from radfinder.models.text import minilm_dir, qwen3_config

QWEN = "Qwen/Qwen3-Embedding-0.6B"
TOY_QWEN = {"vocab_size": 30522, "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 12, "max_window_layers": 2}


@pytest.fixture(autouse=True)
def _own_stamps(monkeypatch, tmp_path):
    """Verification stamps of this test's files in its own folder, not the user's ~/.cache/radfinder."""
    monkeypatch.setenv("RADFINDER_CACHE_DIR", str(tmp_path / "radfinder-cache"))


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"a socket tried to connect: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return cache


def _toy_qwen_folder(path):
    """Qwen3's key layout and config at toy size, with a (BERT) tokenizer whose ids fit its vocabulary."""
    from transformers import Qwen3Model

    torch.manual_seed(5)
    Qwen3Model(qwen3_config(TOY_QWEN)).save_pretrained(path)
    for f in minilm_dir().iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(f, path / f.name)
    return path


def _with_text(path: str):
    cfg = resolve_model_config("tiny").model_dump()
    cfg["text"] = {"source": "hf", "path": path, "hidden_size": 48, "pooling": "last", "max_length": 64}
    return resolve_model_config(cfg)


def test_qwen3_text_tower_by_id_equals_by_path(no_network, tmp_path):
    folder = _toy_qwen_folder(tmp_path / "qwen")
    commit = add_snapshot(no_network, QWEN, folder)
    torch.manual_seed(0)
    by_id = RadFinderModel(_with_text(QWEN)).eval()
    torch.manual_seed(0)
    by_path = RadFinderModel(_with_text(str(folder))).eval()
    assert by_id.hub_sources == {"text": {"repo_id": QWEN, "revision": "main", "commit": commit}}
    assert by_path.hub_sources == {}
    texts = ["Findings: small nodule in the right upper lobe.", "No effusion."]
    with torch.no_grad():
        a, b = (m.encode_text(**m.tokenize(texts)) for m in (by_id, by_path))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the keys are the official Qwen3 layout: the release's size inference reads this toy tower's sizes back
    shapes = {"backbone_text." + k: tuple(v.shape) for k, v in by_id.backbone_text.state_dict().items()}
    sizes = infer_qwen3_sizes(shapes)
    assert {k: sizes[k] for k in ("hidden_size", "num_hidden_layers", "num_key_value_heads", "head_dim")} == \
        {k: TOY_QWEN[k] for k in ("hidden_size", "num_hidden_layers", "num_key_value_heads", "head_dim")}


def test_training_from_a_released_checkpoint_records_its_commit(no_network, tmp_path):
    from radfinder.train import train
    from radfinder.train.toy import make_toy_cohort, toy_train_config

    torch.set_num_threads(1)
    cohort = make_toy_cohort(tmp_path / "toy", 16, seed=2)
    text_dir = cohort["model_overrides"]["text"]["path"]
    text_commit = add_snapshot(no_network, "org/toy-text", text_dir)
    overrides = {**cohort["model_overrides"], "text": {**cohort["model_overrides"]["text"], "path": "org/toy-text"}}
    cfg = resolve_model_config("tiny").model_dump()
    cfg.update(overrides)
    torch.manual_seed(0)
    RadFinderModel(resolve_model_config(cfg)).save_pretrained(tmp_path / "released")
    commit = add_snapshot(no_network, "org/toy-radfinder", tmp_path / "released")
    run = toy_train_config(cohort, model={"init": "org/toy-radfinder", "overrides": {}},
                           schedule={"epochs": 1, "max_steps": 2})
    res = train(run, tmp_path / "run")
    # the released checkpoint itself records the text tower it was built from by id: the chain is kept
    origin = {"checkpoint": {"repo_id": "org/toy-radfinder", "revision": "main", "commit": commit},
              "text": {"repo_id": "org/toy-text", "revision": "main", "commit": text_commit}}
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["init_source"] == origin and "init_source" not in log[1]
    state = json.loads((res.last_checkpoint / "train_state.json").read_text())
    assert state["fingerprint"]["init_source"] == origin
    saved = json.loads((res.last_checkpoint / "model" / "config.json").read_text())
    assert saved["derived_from"] == origin
    # the trained weights are not the release's: loading them names the release as their origin only
    trained = RadFinderModel.from_pretrained(res.last_checkpoint / "model")
    assert trained.hub_sources == {} and trained.derived_from == origin


def test_feature_cache_refuses_another_revision(no_network, tmp_path, capsys):
    torch.manual_seed(3)
    RadFinderModel("tiny").eval().save_pretrained(tmp_path / "ckpt")
    commit = add_snapshot(no_network, "org/rf", tmp_path / "ckpt")
    add_snapshot(no_network, "org/rf", tmp_path / "ckpt", ref="v2", commit="c" * 40)  # same files, other commit
    rng = np.random.default_rng(0)
    vol = np.where(rng.random((40, 40, 36)) < 0.5, -1000, 40).astype(np.int16)
    scan = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([2.0, 2.0, 5.0, 1.0])), scan)
    out = tmp_path / "features"
    assert main(["extract-features", str(scan), "--out", str(out), "--model", "org/rf", "--device", "cpu",
                 "--json"]) == 0
    header = json.loads((out / "cache.json").read_text())
    assert header["weights_source"] == f"org/rf@{commit}" and header["backbone"]["hub"]["commit"] == commit
    capsys.readouterr()
    assert main(["extract-features", str(scan), "--out", str(out), "--model", "org/rf@v2", "--device", "cpu",
                 "--json"]) == 2
    err = capsys.readouterr().err
    assert f"weights_source='org/rf@{commit}'" in err and "org/rf@" + "c" * 40 in err
    # the same revision resumes (nothing new to write)
    assert main(["extract-features", str(scan), "--out", str(out), "--model", f"org/rf@{commit}", "--device",
                 "cpu", "--json"]) == 0


def test_library_and_evaluate_by_id_record_the_commit(no_network, tmp_path, capsys):
    from helpers_library import make_checkpoint, make_manifest

    commit = add_snapshot(no_network, "org/rf", make_checkpoint(tmp_path / "ckpt"))
    manifest = make_manifest(tmp_path / "data", names=("effusion", "nodule", "normal"))
    hub = {"repo_id": "org/rf", "revision": "main", "commit": commit}
    capsys.readouterr()
    assert main(["library", "build", "org/rf", "--data", str(manifest), "--kind", "manifest", "--out",
                 str(tmp_path / "lib"), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hub"] == hub
    assert main(["library", "info", str(tmp_path / "lib"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hub"] == hub
    assert main(["evaluate", "org/rf", "--data", str(manifest), "--kind", "manifest", "--split", "test", "--task",
                 "retrieval", "--n-boot", "0", "--device", "cpu", "--out", str(tmp_path / "eval"), "--json"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["metadata"]["hub"] == {"checkpoint": hub} and metrics["metadata"]["checkpoint"] == "org/rf"


def test_official_export_by_id_brings_the_tokenizer_it_names(no_network, compat_dir, tmp_path, capsys):
    """The export names `text_tokenizer_name` (Qwen/Qwen3-Embedding-0.6B) instead of shipping a tokenizer: by id it
    is found like any repo (here a stand-in tokenizer), `download --to` copies it under text/."""
    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(compat_dir / "hf_config_small.json", export / "config.json")
    shutil.copy(compat_dir / "model_small.safetensors", export / "model.safetensors")
    tok = tmp_path / "tok"
    tok.mkdir()
    for f in minilm_dir().iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(f, tok / f.name)
    model_commit = add_snapshot(no_network, "lmb-freiburg/radfinder", export)
    # without the tokenizer repo in the cache: the model loads, tokenizing says what is missing
    bare = RadFinderModel.from_pretrained("lmb-freiburg/radfinder")
    assert bare.tokenizer is None and "tokenizer" not in bare.hub_sources
    with pytest.raises(ConfigError, match="repo Qwen/Qwen3-Embedding-0.6B revision main is not in the hub cache"):
        bare.tokenize(["No effusion."])
    tok_commit = add_snapshot(no_network, QWEN, tok)
    model = RadFinderModel.from_pretrained("lmb-freiburg/radfinder")
    assert model.tokenizer is not None
    assert model.hub_sources == {"checkpoint": {"repo_id": "lmb-freiburg/radfinder", "revision": "main",
                                                "commit": model_commit},
                                 "tokenizer": {"repo_id": QWEN, "revision": "main", "commit": tok_commit}}
    capsys.readouterr()
    assert main(["download", "lmb-freiburg/radfinder", "--to", str(tmp_path / "offline"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["companions"]["tokenizer"]["commit"] == tok_commit
    assert (tmp_path / "offline" / "text" / "tokenizer.json").is_file()
    copied = RadFinderModel.from_pretrained(tmp_path / "offline")
    assert copied.hub_sources == model.hub_sources
    ids = [m.tokenize(["No effusion."])["input_ids"].tolist() for m in (copied, model)]
    assert ids[0] == ids[1]
