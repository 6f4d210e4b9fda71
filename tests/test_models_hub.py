"""Released models by Hugging Face id (`radfinder.models.hub`), without network: a hub cache laid out the way
huggingface_hub writes it (tests/helpers_hub.py) holds checkpoints saved here; loading by id offline, with every
socket connect refused, must give what loading the folder by path gives."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from helpers_hub import add_snapshot, blob_of
from radfinder.api import load_model
from radfinder.cli import main
from radfinder.errors import CheckpointError, RadfinderError
from radfinder.models import RadFinderModel, hub_files
from radfinder.models import hub as hubmod
from radfinder.models.hub import ALLOW_PATTERNS, PROVENANCE_FILE, HubError, parse_hub_id, resolve_weights

REPO = "lmb-freiburg/radfinder"


@pytest.fixture(autouse=True)
def _own_stamps(monkeypatch, tmp_path):
    """Verification stamps of this test's files in its own folder, not the user's ~/.cache/radfinder."""
    monkeypatch.setenv("RADFINDER_CACHE_DIR", str(tmp_path / "radfinder-cache"))


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A tiny checkpoint (saved by `save_pretrained`) published in a hub cache at `main`, plus a second commit of
    the same files reachable only as tag v2."""
    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(3)
    RadFinderModel("tiny").eval().save_pretrained(root / "ckpt")
    cache = root / "cache"
    commit = add_snapshot(cache, REPO, root / "ckpt")
    other = add_snapshot(cache, REPO, root / "ckpt", ref="v2", commit="b" * 40)
    (cache / ("models--" + REPO.replace("/", "--")) / "refs" / "main").write_text(commit)  # v2 moved nothing
    return {"root": root, "cache": cache, "commit": commit, "other": other, "ckpt": root / "ckpt",
            "snapshot": cache / "models--lmb-freiburg--radfinder" / "snapshots" / commit}


@pytest.fixture
def offline(monkeypatch, released):
    """HF_HUB_OFFLINE=1 with the test cache, and no socket may connect anywhere."""
    monkeypatch.setenv("HF_HUB_CACHE", str(released["cache"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"a socket tried to connect: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return released


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    rng = np.random.default_rng(0)
    shape = (40, 40, 36)
    i, j = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = np.where(i**2 + j**2 < 0.8, 30.0, -1000.0)[..., None] + rng.normal(0, 30, shape)
    path = tmp_path_factory.mktemp("hub_scan") / "scan.nii.gz"
    affine = np.array([[2.0, 0, 0, -40], [0, 2.0, 0, -40], [0, 0, 5.0, -90.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(body.astype(np.int16), affine), path)
    return path


def _json(capsys, args, rc=0):
    capsys.readouterr()
    code = main(args)
    out = capsys.readouterr()
    assert code == rc, out.err
    return json.loads(out.out) if rc == 0 else out.err


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_parse_hub_id():
    assert parse_hub_id("lmb-freiburg/radfinder") == ("lmb-freiburg/radfinder", "main")
    assert parse_hub_id("cclaess/SPECTRE@v1.0") == ("cclaess/SPECTRE", "v1.0")
    assert parse_hub_id("Qwen/Qwen3-Embedding-0.6B@" + "a" * 40) == ("Qwen/Qwen3-Embedding-0.6B", "a" * 40)
    for not_an_id in ("tiny", "runs/a/model", "./x/y", "/abs/path", "configs/model.yaml", "a/b/c@main", "-x/y"):
        assert parse_hub_id(not_an_id) is None, not_an_id


def test_load_by_id_offline_equals_load_by_path(offline):
    by_id = load_model(REPO, device="cpu")
    by_path = load_model(offline["ckpt"], device="cpu")
    assert _same_weights(by_id, by_path)
    assert by_id.preprocess_spec.hash() == by_path.preprocess_spec.hash()
    assert by_id.hub_sources == {"checkpoint": {"repo_id": REPO, "revision": "main", "commit": offline["commit"]}}
    assert by_path.hub_sources == {}
    pinned = load_model(f"{REPO}@{offline['commit']}", device="cpu")  # a commit needs no ref at all
    assert pinned.hub_sources["checkpoint"]["commit"] == offline["commit"] and _same_weights(pinned, by_path)
    tag = RadFinderModel.from_pretrained(f"{REPO}@v2")
    assert tag.hub_sources["checkpoint"] == {"repo_id": REPO, "revision": "v2", "commit": offline["other"]}


def test_local_path_always_wins(offline, tmp_path, monkeypatch):
    # a folder literally named like a repo id is the folder, never the hub
    local = tmp_path / "lmb-freiburg" / "radfinder"
    local.parent.mkdir()
    local.symlink_to(offline["ckpt"], target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    got = resolve_weights(REPO)
    assert got.path == Path(REPO) and got.source is None


def test_snapshot_folder_by_path_names_its_repo_and_commit(offline):
    model = load_model(offline["snapshot"], device="cpu")
    assert model.hub_sources["checkpoint"] == {"repo_id": REPO, "revision": "main", "commit": offline["commit"]}


def test_classify_by_id_offline_equals_snapshot_folder(offline, scan, capsys):
    by_id = _json(capsys, ["classify", REPO, str(scan), "--device", "cpu", "--json"])
    by_dir = _json(capsys, ["classify", str(offline["snapshot"]), str(scan), "--device", "cpu", "--json"])
    assert by_id["findings"] == by_dir["findings"] and len(by_id["findings"]) == 18
    assert by_id["hub"] == by_dir["hub"] == {"checkpoint": {"repo_id": REPO, "revision": "main",
                                                            "commit": offline["commit"]}}
    by_ckpt = _json(capsys, ["classify", str(offline["ckpt"]), str(scan), "--device", "cpu", "--json"])
    assert by_ckpt["findings"] == by_id["findings"] and "hub" not in by_ckpt


def test_classify_real_ct_by_id_offline_equals_snapshot_folder(offline, real_data, capsys):
    """The README's command on the real chest-CT crop (TotalSegmentator test data), the tiny released stand-in."""
    scan = real_data / "totalsegmentator_ct" / "aorta_crop" / "ct_cropped.nii.gz"
    by_id = _json(capsys, ["classify", REPO, str(scan), "--device", "cpu", "--json"])
    by_dir = _json(capsys, ["classify", str(offline["snapshot"]), str(scan), "--device", "cpu", "--json"])
    assert by_id["findings"] == by_dir["findings"] and by_id["hub"] == by_dir["hub"]
    assert by_id["hub"]["checkpoint"]["commit"] == offline["commit"]


def test_revision_not_cached_is_one_clear_error(offline, scan, capsys):
    err = _json(capsys, ["classify", f"{REPO}@v9", str(scan), "--device", "cpu", "--json"], rc=2)
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and f"repo {REPO} revision v9" in line
    assert f"`radfinder download {REPO}@v9`" in line and "HF_HUB_OFFLINE" in line
    with pytest.raises(HubError, match="not in the hub cache"):
        load_model("nobody/nothing", device="cpu")


def test_corrupt_blob_is_refused(offline, tmp_path, monkeypatch):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(offline["cache"], cache, symlinks=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    blob = blob_of(cache, REPO, offline["commit"], "model.safetensors")
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0xFF  # inside the tensor data: safetensors itself would load this silently
    blob.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 mismatch of lmb-freiburg/radfinder@"):
        load_model(REPO, device="cpu")
    cfg = blob_of(cache, REPO, offline["commit"], "config.json")  # a git (non-LFS) file: its blob sha1
    cfg.write_text(cfg.read_text().replace("radfinder", "radfindex", 1))
    with pytest.raises(CheckpointError, match=r"sha1 mismatch"):
        hubmod.verify_folder(cache / "models--lmb-freiburg--radfinder" / "snapshots" / offline["commit"], None)


def test_download_to_folder_offline_then_model_info(offline, tmp_path, capsys):
    dest = tmp_path / "radfinder-offline"
    info = _json(capsys, ["download", REPO, "--to", str(dest), "--json"])
    assert info["repo_id"] == REPO and info["commit"] == offline["commit"] and info["folder"] == str(dest)
    assert "model.safetensors" in info["files"] and "text/config.json" in info["files"]
    files = [p for p in dest.rglob("*") if p.name != PROVENANCE_FILE and p.is_file()]
    assert files and not any(p.is_symlink() for p in dest.rglob("*"))  # real files, safe to copy anywhere
    prov = json.loads((dest / PROVENANCE_FILE).read_text())
    assert prov["commit"] == offline["commit"] and set(prov["sha256"]) == set(info["files"])
    shown = _json(capsys, ["model-info", str(dest), "--json"])
    assert shown["hub"]["checkpoint"] == {"repo_id": REPO, "revision": "main", "commit": offline["commit"]}
    assert _same_weights(load_model(dest, device="cpu"), load_model(offline["ckpt"], device="cpu"))
    # the copy is checked against its own sha256 list
    (dest / "model.safetensors").write_bytes((dest / "model.safetensors").read_bytes()[:-1] + b"\0")
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_model(dest, device="cpu")
    capsys.readouterr()
    assert main(["download", REPO]) == 0  # without --json: the snapshot folder and its commit, readable
    text = capsys.readouterr().out
    assert f"commit {offline['commit']}" in text and str(offline["snapshot"]) in text


def test_download_online_passes_patterns_revision_and_token(released, monkeypatch, tmp_path):
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(released["snapshot"])

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_for_gated")
    resolved, files, companions = hubmod.download(f"{REPO}@v1.0")
    assert companions == {}  # a radfinder checkpoint ships its tokenizer under text/
    assert resolved.source.commit == released["commit"] and resolved.source.revision == "v1.0"
    (repo_id, kw), = calls
    assert repo_id == REPO and kw["revision"] == "v1.0" and kw["token"] == "hf_secret_for_gated"
    assert kw["allow_patterns"] == ALLOW_PATTERNS["checkpoint"] and kw["local_files_only"] is False
    assert kw["cache_dir"] == str(tmp_path / "hf-home" / "hub")
    hubmod.download("Qwen/Qwen3-Embedding-0.6B", kind="text")
    assert calls[-1][1]["allow_patterns"] == ALLOW_PATTERNS["text"]


def test_hub_errors_become_radfinder_errors(monkeypatch, released):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(repo_id, **kwargs):
        raise LocalEntryNotFoundError("connection failed")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(RadfinderError, match=r"could not be reached; run `radfinder download org/name@dev`"):
        resolve_weights("org/name@dev")


def test_verified_files_are_stamped_and_rewritten_ones_hashed_again(offline, tmp_path, monkeypatch):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(offline["cache"], cache, symlinks=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    snap = cache / "models--lmb-freiburg--radfinder" / "snapshots" / offline["commit"]
    checked = hubmod.verify_folder(snap, None)
    assert "model.safetensors" in checked and len(list((tmp_path / "radfinder-cache" / "verified").iterdir())) == \
        len(checked)
    hub_files._verified.clear()  # a new process: only the stamps remain

    def no_hashing(*args):
        raise AssertionError("hashed although stamped")

    monkeypatch.setattr(hub_files, "file_digest", no_hashing)
    assert hubmod.verify_folder(snap, None) == checked
    monkeypatch.undo()
    monkeypatch.setenv("RADFINDER_CACHE_DIR", str(tmp_path / "radfinder-cache"))
    blob = blob_of(cache, REPO, offline["commit"], "labels.json")
    blob.write_text(blob.read_text() + " ")  # rewritten: new size and mtime, so the stamp no longer applies
    with pytest.raises(CheckpointError, match=r"labels\.json: sha1 mismatch"):
        hubmod.verify_folder(snap, None)


def test_evaluate_refuses_features_of_another_revision(offline, tmp_path):
    from radfinder.eval.embed import open_matching_store
    from radfinder.features import FeatureStore, state_dict_hash

    model = load_model(REPO, device="cpu")
    dim = model.backbone_image.feature_dim
    for name, commit in (("same", offline["commit"]), ("other", "d" * 40)):
        desc = {"hash": state_dict_hash(model.backbone_image), "hub": {"repo_id": REPO, "revision": "x",
                                                                        "commit": commit}}
        FeatureStore(tmp_path / name, model.preprocess_spec, desc, dim)
    assert open_matching_store(tmp_path / "same", model).backbone["hub"]["commit"] == offline["commit"]
    with pytest.raises(RadfinderError, match=f"commit {'d' * 40} but the checkpoint is commit {offline['commit']}"):
        open_matching_store(tmp_path / "other", model)
