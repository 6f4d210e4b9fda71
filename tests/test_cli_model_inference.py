"""`radfinder embed / classify / localize / extract-features` end to end through `radfinder.cli.main`."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from radfinder.api import encode_volume, load_model
from radfinder.cli import main
from radfinder.features import FeatureStore, state_dict_hash
from radfinder.io import load_volume
from radfinder.models import RadFinderModel
from radfinder.preprocess import PreprocessSpec, apply_spec

SHAPE = (40, 40, 36)
AFFINE = np.array([[2.0, 0, 0, -40], [0, 2.0, 0, -40], [0, 0, 5.0, -90.0], [0, 0, 0, 1]])


def _scan(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.linspace(-1, 1, SHAPE[0]), np.linspace(-1, 1, SHAPE[1]), indexing="ij")
    body = np.where(i**2 + j**2 < 0.8, 30.0, -1000.0)[..., None] + rng.normal(0, 30, SHAPE)
    return body.astype(np.int16)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(1)
    model = RadFinderModel("tiny").eval()
    path = tmp_path_factory.mktemp("cli_ckpt") / "tiny"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model(ckpt):
    return load_model(ckpt, device="cpu")


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_scans")
    paths = []
    for n in range(3):
        p = root / f"scan{n}.nii.gz"
        nib.save(nib.Nifti1Image(_scan(n), AFFINE), p)
        paths.append(p)
    return paths


def _run_json(capsys, args):
    capsys.readouterr()
    rc = main(args)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def test_embed_json_and_npz(capsys, tmp_path, ckpt, model, scans):
    out = tmp_path / "emb.npz"
    texts = ["Emphysema.", "Normal chest CT."]
    data = _run_json(capsys, ["embed", str(ckpt), str(scans[0]), str(scans[1]), "--text", texts[0], "--text",
                              texts[1], "--out", str(out), "--device", "cpu", "--json"])  # fmt: skip
    assert {"model", "device", "spec_hash", "scans", "texts", "similarity", "out"} <= set(data)
    assert [s["scan"] for s in data["scans"]] == ["scan0", "scan1"]
    assert data["spec_hash"] == PreprocessSpec().hash()
    assert np.asarray(data["similarity"]).shape == (2, 2)
    assert all(-1.0 <= v <= 1.0 for row in data["similarity"] for v in row)
    ref = encode_volume(model, scans[1])
    arch = np.load(out)
    np.testing.assert_allclose(arch["retrieval"][1], ref.retrieval, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(data["scans"][1]["disease"], ref.disease, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(arch["depth"][1, : ref.n_depth_cells], ref.depth, rtol=1e-4, atol=1e-7)
    assert list(arch["texts"]) == texts and arch["text"].shape == (2, model.config.projection_dim)
    assert arch["grid"].tolist() == [list(ref.grid)] * 2


def test_classify_json_and_table(capsys, ckpt, scans):
    data = _run_json(capsys, ["classify", str(ckpt), str(scans[0]), "--finding", "Emphysema", "--finding",
                              "Pleural effusion", "--device", "cpu", "--json"])  # fmt: skip
    assert data["protocol"] == "mean7"
    rows = data["findings"]
    assert [r["finding"] for r in rows] == ["Emphysema", "Pleural effusion"]
    for r in rows:
        assert {"probability", "margin", "cos_positive", "cos_negative"} <= set(r)
        assert 0.0 <= r["probability"] <= 1.0
        assert r["probability"] == pytest.approx(1 / (1 + np.exp(-r["margin"])), abs=1e-9)
    assert main(["classify", str(ckpt), str(scans[0]), "--finding", "Emphysema", "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "Emphysema" in table and "p(present)" in table


def test_localize_json_and_png(capsys, tmp_path, ckpt, scans):
    png = tmp_path / "where.png"
    args = ["localize", str(ckpt), str(scans[2]), "--sentence", "Nodule in the apex.", "--sentence", "Hiatal hernia.",
            "--png", str(png), "--device", "cpu", "--json"]  # fmt: skip
    data = _run_json(capsys, args)
    assert len(data["sentences"]) == 2 and len(data["png"]) == 2
    zmin, zmax = AFFINE[2, 3], AFFINE[2, 3] + 5.0 * (SHAPE[2] - 1)
    for s in data["sentences"]:
        assert zmin <= s["world_z_mm"] <= zmax
        assert abs(s["slice_z_mm"] - s["world_z_mm"]) <= 2.5 + 1e-9
        assert s["slice_z_mm"] == pytest.approx(AFFINE[2, 3] + 5.0 * s["slice_index"])
        assert sum(s["profile"]["probability"]) == pytest.approx(1.0)
        assert s["instance_number"] is None
        assert s["depth_resolution"]["coarse"] is False  # a ViT encoder: one depth position per depth token
    for p in data["png"]:
        with open(p, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_user_errors_exit_2(capsys, tmp_path, ckpt):
    assert main(["classify", str(ckpt), str(tmp_path / "missing.nii.gz"), "--device", "cpu"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["embed", "not-a-model", str(tmp_path / "x.nii.gz")]) == 2
    assert "neither a checkpoint" in capsys.readouterr().err


def _expected_features(model, path):
    pre = apply_spec(load_volume(path), model.preprocess_spec)
    with torch.no_grad():
        f = model.encode_windows(torch.from_numpy(pre.windows()).float())
    g = tuple(pre.grid)
    return f.cls.numpy().reshape(*g, -1), f.axis2.numpy().reshape(*g, 8, -1), pre


def test_extract_features_cache_matches_and_resumes(capsys, tmp_path, ckpt, model, scans):
    out = tmp_path / "cache"
    args = ["extract-features", "--model", str(ckpt), "--out", str(out), *map(str, scans[:2]), "--device", "cpu",
            "--batch-size", "3", "--json"]  # fmt: skip
    first = _run_json(capsys, args)
    assert first["written"] == 2 and first["skipped_existing"] == 0 and first["failed"] == {}
    store = FeatureStore.open(out)
    assert store.spec.hash() == model.preprocess_spec.hash()
    assert store.backbone["hash"] == state_dict_hash(model.backbone_image)
    assert store.keys() == ["scan0", "scan1"]
    rec = store.read("scan1")
    cls, axis2, pre = _expected_features(model, scans[1])
    np.testing.assert_allclose(rec.cls.astype(np.float32), cls, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(rec.axis2.astype(np.float32), axis2, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(rec.affine, pre.affine)
    second = _run_json(capsys, [*args, str(scans[2])])
    assert second["written"] == 1 and second["skipped_existing"] == 2 and second["entries_in_cache"] == 3


def test_extract_features_shards_split_the_inputs(capsys, tmp_path, ckpt, scans):
    keys = []
    for i in range(2):
        out = tmp_path / f"shard{i}"
        data = _run_json(capsys, ["extract-features", "--model", str(ckpt), "--out", str(out),
                                  str(scans[0].parent), "--shard", f"{i}/2", "--device", "cpu", "--json"])  # fmt: skip
        assert data["shard"] == f"{i}/2"
        keys.append(set(FeatureStore.open(out).keys()))
    assert keys[0].isdisjoint(keys[1]) and keys[0] | keys[1] == {"scan0", "scan1", "scan2"}
    assert {len(k) for k in keys} == {1, 2}


def test_extract_features_refuses_another_spec_for_a_checkpoint(capsys, tmp_path, ckpt, scans):
    spec = tmp_path / "spec.json"
    PreprocessSpec(spacing=(1.5, 1.5, 3.0)).save(spec)
    rc = main(["extract-features", "--model", str(ckpt), "--spec", str(spec), "--out", str(tmp_path / "c"),
               str(scans[0]), "--device", "cpu"])  # fmt: skip
    assert rc == 2 and "own spec" in capsys.readouterr().err
    rc = main(["extract-features", "--model", str(ckpt), "--backbone", "astra-resnet152", "--out",
               str(tmp_path / "c"), str(scans[0])])  # fmt: skip
    assert rc == 2 and "exactly one" in capsys.readouterr().err


def test_extract_features_from_a_ctrate_root(capsys, tmp_path, ckpt, model, scans):
    """Original (non-fixed) CT-RATE files store raw values; the metadata's rescale must be applied."""
    ds = tmp_path / "ctrate" / "dataset"
    names = ["valid_1_a_1", "valid_2_a_1"]
    for n, name in enumerate(names):
        folder = ds / "valid" / f"valid_{n + 1}" / f"valid_{n + 1}_a"
        folder.mkdir(parents=True)
        raw = (_scan(n).astype(np.int32) + 1024).astype(np.int16)
        nib.save(nib.Nifti1Image(raw, AFFINE), folder / f"{name}.nii.gz")
    (ds / "radiology_text_reports").mkdir()
    rows = "".join(f'{nm}.nii.gz,"Findings {nm}.","Impression."\n' for nm in names)
    (ds / "radiology_text_reports" / "validation_reports.csv").write_text(
        "VolumeName,Findings_EN,Impressions_EN\n" + rows
    )
    (ds / "metadata").mkdir()
    meta = "".join(f"{nm}.nii.gz,1,-1024,3.0\n" for nm in names)
    (ds / "metadata" / "validation_metadata.csv").write_text(
        "VolumeName,RescaleSlope,RescaleIntercept,ZSpacing\n" + meta
    )
    out = tmp_path / "ctrate_cache"
    data = _run_json(capsys, ["extract-features", "--model", str(ckpt), "--out", str(out), "--ctrate",
                              str(tmp_path / "ctrate"), "--split", "valid", "--device", "cpu", "--json"])  # fmt: skip
    assert data["written"] == 2 and data["failed"] == {}
    store = FeatureStore.open(out)
    assert store.keys() == names
    cls, _, _ = _expected_features(model, scans[0])  # the HU scan the raw file was made from
    np.testing.assert_allclose(store.read("valid_1_a_1").cls.astype(np.float32), cls, rtol=2e-3, atol=2e-3)
