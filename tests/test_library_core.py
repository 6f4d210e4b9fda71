"""radfinder.library: build (resume, shards), text / scan search with filters, indexes against numpy, checkpoint hash
refusal, slice orientation against nibabel, and the CLI (`library build/info/index`, `search --json`)."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pytest

from helpers_library import REPORTS, make_manifest, phantom, tiny_library
from radfinder.api import encode_text, encode_volume, load_model
from radfinder.cli import main
from radfinder.errors import CheckpointError, ConfigError
from radfinder.library import Library, LibraryError, build_index, build_library, finding_precision, rebuild_index
from radfinder.library import build as build_mod
from radfinder.library.index import search as index_search
from radfinder.library.slices import WINDOWS, SliceLayout, apply_window, render_slice

QUERIES = {
    "effusion": "large right pleural effusion",
    "emphysema": "emphysema in the upper lobes",
    "hernia": "hiatal hernia",
    "nodule": "pulmonary nodule in the left upper lobe",
    "normal": "normal chest CT",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_library(tmp_path_factory)


@pytest.fixture(scope="module")
def lib(tiny):
    return Library(tiny["library"], model=tiny["model"])


def _json(capsys, args):
    capsys.readouterr()
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def _vectors_by_key(root):
    db = sqlite3.connect(root / "library.sqlite")
    rows = db.execute("SELECT key, retrieval, depth, probabilities FROM studies").fetchall()
    db.close()
    return {k: (np.frombuffer(r, "<f4"), np.frombuffer(d, "<f4"), json.loads(p)) for k, r, d, p in rows}


def test_build_stores_every_volume_with_its_metadata(tiny, lib):
    info = lib.info()
    assert info["studies"] == len(REPORTS) and not info["failures"]
    assert info["indexes"] == {"image": {"vectors": 5, "kind": "flat"}, "report": {"vectors": 5, "kind": "flat"}}
    row = lib.study(1)
    assert row.key == "effusion" and row.findings_text == REPORTS["effusion"]
    assert row.spacing == [1.0, 1.0, 5.0] and row.source_shape == [96, 88, 40]
    assert set(row.probabilities) == set(info["findings"]) and len(info["findings"]) == 18
    assert row.labels[info["findings"].index("Pleural effusion")] == 1.0
    assert np.isclose(np.linalg.norm(row.retrieval), 1.0, atol=1e-5)
    # "series 2, image 12" of a NIfTI: the 12th slice from the superior end (z grows with the index here).
    (ref,) = row.refs
    assert ref["images"] == [12] and ref["slices"] == [40 - 12] and ref["exact"] is False
    assert lib.store.thumbnail(1)[:8] == b"\x89PNG\r\n\x1a\n"


def test_scores_are_cosines_of_an_independent_encoding(tiny, lib):
    model = load_model(tiny["ckpt"], device="cpu")  # its own load: nothing shared with the library's model
    enc = encode_volume(model, tiny["manifest"].parent / "nodule.nii.gz")
    q = encode_text(model, QUERIES["nodule"])[0]
    snip = encode_text(model, QUERIES["nodule"], snippet=True)[0]
    want = float(enc.retrieval @ q / np.linalg.norm(enc.retrieval) / np.linalg.norm(q))
    res = lib.search(QUERIES["nodule"], k=5)["results"]
    (hit,) = [r for r in res if r["study"] == "nodule"]
    assert hit["score"] == pytest.approx(want, abs=1e-5)
    cos = enc.depth @ snip / np.linalg.norm(enc.depth, axis=1) / np.linalg.norm(snip)
    best = int(np.argmax(np.where(enc.depth_valid, cos, -np.inf)))
    assert hit["cell"] == best and hit["world_z_mm"] == pytest.approx(float(enc.depth_z_mm[best]))
    assert hit["depth_mm"] == pytest.approx((best + 0.5) * 12.0)  # from the start edge of cell 0
    assert [r["score"] for r in res] == sorted((r["score"] for r in res), reverse=True)


@pytest.mark.parametrize("study", sorted(QUERIES))
def test_report_search_ranks_the_matching_report_first(lib, study):
    assert lib.search(QUERIES[study], k=3, over="report")["results"][0]["study"] == study


def test_search_like_finds_the_scan_itself(tiny, lib):
    res = lib.search_like(tiny["manifest"].parent / "hernia.nii.gz", k=2)["results"]
    assert res[0]["study"] == "hernia" and res[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert res[0]["depth_mm"] is None


def test_filters_keep_only_matching_studies(lib):
    probs = {r.key: r.probabilities["Lung nodule"] for r in lib.store.rows(list(range(1, 6)))}
    cut = float(np.median(list(probs.values())))
    res = lib.search("nodule", k=5, filters=[f"lung_nodule>={cut}"])["results"]
    assert {r["study"] for r in res} == {k for k, p in probs.items() if p >= cut}
    both = lib.search("nodule", k=5, filters=[f"Lung nodule>={cut}", f"Lung nodule<{cut}"])["results"]
    assert both == []
    for bad in ("Lung nodule", "Unicorn>0.5", "Lung nodule>2"):
        with pytest.raises(ConfigError):
            lib.search("nodule", filters=[bad])
    for k in (0, 101):
        with pytest.raises(ConfigError, match="between 1 and 100"):
            lib.search("nodule", k=k)


def test_cli_search_json_matches_the_api_and_reports_errors(tiny, lib, capsys):
    out = _json(capsys, ["search", str(tiny["library"]), QUERIES["hernia"], "--over", "report", "--top", "2",
                         "--device", "cpu", "--json"])  # fmt: skip
    assert out == {"results": lib.search(QUERIES["hernia"], k=2, over="report")["results"], "ranking": "similarity",
                   "finding": None, "present": None, "calibrated": False}  # fmt: skip
    assert set(out["results"][0]) >= {"study", "score", "depth_mm", "findings"}
    named = _json(capsys, ["search", str(tiny["library"]), "Hiatal hernia.", "--top", "2", "--device", "cpu",
                           "--json"])  # fmt: skip
    assert (named["ranking"], named["finding"], named["present"]) == ("finding", "Hiatal hernia", True)
    assert [r["study"] for r in named["results"]] == [r["study"] for r in lib.search("Hiatal hernia.", 2)["results"]]
    like = _json(capsys, ["search", str(tiny["library"]), "--like", str(tiny["manifest"].parent / "normal.nii.gz"),
                          "--top", "1", "--device", "cpu", "--json"])  # fmt: skip
    assert like["results"][0]["study"] == "normal"
    assert main(["search", str(tiny["library"]), "x", "--filter", "nonsense", "--device", "cpu"]) == 2
    assert main(["search", str(tiny["library"]), "--device", "cpu"]) == 2
    assert "error:" in capsys.readouterr().err
    info = _json(capsys, ["library", "info", str(tiny["library"]), "--json"])
    assert info["studies"] == 5


def test_changed_checkpoint_is_refused(tiny, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny["ckpt"], ckpt)
    lib_dir = tmp_path / "lib"
    shutil.copytree(tiny["library"], lib_dir)
    db = sqlite3.connect(lib_dir / "library.sqlite")
    db.execute("UPDATE meta SET value = ? WHERE name = 'checkpoint'", (json.dumps(str(ckpt)),))
    db.commit()
    db.close()
    assert Library(lib_dir, device="cpu").search("effusion", k=1)["results"]
    with (ckpt / "config.json").open("a") as fh:
        fh.write(" ")
    with pytest.raises(CheckpointError, match="changed since the library was built"):
        Library(lib_dir, device="cpu").search("effusion", k=1)
    assert main(["search", str(lib_dir), "effusion", "--device", "cpu"]) == 2
    assert "changed since" in capsys.readouterr().err
    with pytest.raises(LibraryError, match="built with checkpoint"):
        build_library(ckpt, tiny["manifest"], lib_dir, kind="manifest", model=tiny["model"], show_progress=False)


def test_interrupted_sharded_build_resumes_to_the_same_library(tiny, tmp_path, monkeypatch):
    out = tmp_path / "lib"
    real_row, calls = build_mod._row, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_row(*args, **kwargs)

    monkeypatch.setattr(build_mod, "_row", flaky)
    kw = dict(kind="manifest", model=tiny["model"], prompts=tiny["prompts"], show_progress=False)
    with pytest.raises(KeyboardInterrupt):
        build_library(tiny["ckpt"], tiny["manifest"], out, shard=(0, 2), **kw)
    monkeypatch.setattr(build_mod, "_row", real_row)
    first = build_library(tiny["ckpt"], tiny["manifest"], out, shard=(0, 2), **kw)
    assert (first["skipped_existing"], first["added"], first["indexes"]) == (1, 2, None)
    assert first["waiting_for"] == 2
    monkeypatch.setenv("RANK", "1")  # the second process as torchrun would start it
    monkeypatch.setenv("WORLD_SIZE", "2")
    second = build_library(tiny["ckpt"], tiny["manifest"], out, **kw)
    assert second["shard"] == "1/2" and second["added"] == 2 and second["indexes"]["image"]["vectors"] == 5
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    ref, got = _vectors_by_key(tiny["library"]), _vectors_by_key(out)
    assert set(ref) == set(got)
    for key in ref:
        np.testing.assert_allclose(got[key][0], ref[key][0], atol=1e-5)
        np.testing.assert_allclose(got[key][1], ref[key][1], atol=1e-5)
    again = build_library(tiny["ckpt"], tiny["manifest"], out, **kw)
    assert again["added"] == 0 and again["skipped_existing"] == 5


def test_add_refuses_a_key_with_another_volume(tiny, tmp_path):
    lib_dir = tmp_path / "lib"
    shutil.copytree(tiny["library"], lib_dir)
    other = make_manifest(tmp_path / "other", names=("effusion",))
    with pytest.raises(LibraryError, match="already in"):
        build_mod.add_to_library(lib_dir, other, kind="manifest", device="cpu", show_progress=False)


def test_indexes_against_numpy_brute_force():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(2000, 32)).astype(np.float32)
    ids = np.arange(2000, dtype=np.int64) + 7
    queries = rng.normal(size=(20, 32)).astype(np.float32)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.argsort(-(qn @ unit.T), axis=1)[:, :10] + 7
    scores, got = index_search(build_index(vecs, ids, "flat"), queries, 10)
    np.testing.assert_array_equal(got, truth)
    np.testing.assert_allclose(scores, np.sort(qn @ unit.T, axis=1)[:, ::-1][:, :10], atol=1e-5)
    for kind in ("pq", "hnsw", "ivf"):
        _, approx = index_search(build_index(vecs, ids, kind), queries, 10)
        recall = np.mean([len(set(a) & set(t)) / 10 for a, t in zip(approx, truth, strict=True)])
        assert recall >= 0.9, kind
    with pytest.raises(ConfigError):
        build_index(vecs, ids, "annoy")


def test_exact_search_merges_blocks_like_one_sort(monkeypatch):
    """The blocked torch search must equal a full sort whatever the block size, for one query and for batches, with
    non-contiguous ids and k larger than a block."""
    from radfinder.library import index as index_module

    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(1037, 16)).astype(np.float32)
    ids = rng.permutation(5000)[:1037].astype(np.int64)
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    full = qn @ unit.T
    order = np.argsort(-full, axis=1)[:, :25]
    index = build_index(vecs, ids, "flat")
    for block_bytes in (4 * 7 * 10, 4 * 7 * 100, 2**30):  # blocks of 10 and 100 rows, and one block
        monkeypatch.setattr(index_module, "EXACT_BLOCK_BYTES", block_bytes)
        for q in (queries[:1], queries):
            scores, got = index_search(index, q, 25)
            np.testing.assert_array_equal(got, ids[order[: len(q)]])
            np.testing.assert_allclose(scores, np.take_along_axis(full, order, 1)[: len(q)], atol=1e-5)
    scores, got = index_search(index, queries[:1], 5000)  # k above the size: every vector once
    assert sorted(got[0]) == sorted(ids)


def test_pq_index_needs_an_even_dimension_and_enough_vectors(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="even dimension"):
        build_index(rng.normal(size=(100, 15)).astype(np.float32), np.arange(100), "pq")
    with pytest.raises(LibraryError, match="at least 16"):
        build_index(rng.normal(size=(10, 16)).astype(np.float32), np.arange(10), "pq")


def test_rebuilt_hnsw_index_answers_like_the_exact_one(tiny, tmp_path):
    lib_dir = tmp_path / "lib"
    shutil.copytree(tiny["library"], lib_dir)
    assert rebuild_index(lib_dir, "hnsw")["image"]["kind"] == "hnsw"
    res = Library(lib_dir, model=tiny["model"]).search_like(tiny["manifest"].parent / "emphysema.nii.gz", k=1)
    assert res["results"][0]["study"] == "emphysema"


def test_finding_precision_against_a_hand_count(lib):
    out = finding_precision(lib, k=2, over="report")
    assert set(out["findings"]) == {"Pleural effusion", "Lung nodule"}  # the only findings with both labels
    for name, study in (("Pleural effusion", "effusion"), ("Lung nodule", "nodule")):
        f = out["findings"][name]
        top2 = [r["study"] for r in lib.search(f["sentence"], k=2, over="report")["results"]]
        assert f["precision"] == (study in top2) / 2 and f["chance"] == pytest.approx(0.2) and f["k"] == 2
    assert finding_precision(lib, k=2, split="nonexistent")["findings"] == {}


@pytest.mark.parametrize(
    "affine",
    [
        np.array([[-2.0, 0, 0, 40], [0, -2.0, 0, 50], [0, 0, 5.0, -120.0], [0, 0, 0, 1]]),  # LPS
        np.array([[2.0, 0, 0, 40], [0, 2.0, 0, 50], [0, 0, -5.0, -120.0], [0, 0, 0, 1]]),  # RAI
        np.array([[0, 2.0, 0, 40], [0, 0, -5.0, 50], [-2.0, 0, 0, -120.0], [0, 0, 0, 1]]),  # axes permuted
    ],
)
def test_slices_match_nibabel_canonical_orientation(affine):
    data = phantom(1, (30, 24, 20)).astype(np.float32) + np.arange(30)[:, None, None] * 3
    img = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    canon, caff = np.asarray(img.dataobj), img.affine
    layout = SliceLayout.of(data.shape, affine)
    for k in (0, 3, canon.shape[2] - 1):
        z = float(caff[2, 2] * k + caff[2, 3])
        idx = layout.nearest_slice(z)
        assert layout.z_mm[idx] == pytest.approx(z)
        # RAS canonical: axis 0 runs to the patient's left, axis 1 to anterior. Display: anterior up, left right.
        np.testing.assert_array_equal(layout.slice_hu(data, idx), canon[:, ::-1, k].T)


def test_rendered_png_decodes_to_the_windowed_slice():
    data = phantom(2, (32, 32, 12))
    layout = SliceLayout.of(data.shape, np.diag([1.0, 1.0, 2.0, 1.0]))
    for window in WINDOWS:
        png = render_slice(data, layout, 5, window)
        got = (plt.imread(io.BytesIO(png)) * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(got, apply_window(layout.slice_hu(data, 5), window))
    with pytest.raises(ConfigError):
        render_slice(data, layout, 12)
    with pytest.raises(ConfigError):
        render_slice(data, layout, 0, "brain")


def test_cli_build_and_bad_inputs(tiny, tmp_path, capsys):
    assert main(["library", "build", str(tiny["ckpt"]), "--data", str(tiny["manifest"]), "--kind", "manifest",
                 "--out", str(tiny["library"].parent / "data"), "--device", "cpu"]) == 2  # fmt: skip
    assert "not a library" in capsys.readouterr().err
    assert main(["search", str(tmp_path), "x"]) == 2
    assert "not a radfinder library" in capsys.readouterr().err
    out = _json(capsys, ["library", "index", str(shutil.copytree(tiny["library"], tmp_path / "l")), "--json"])
    assert out["image"]["kind"] == "flat"


def test_a_library_of_one_study_finds_it(tiny, tmp_path):
    manifest = make_manifest(tmp_path / "data", names=("hernia",))
    build_library(tiny["ckpt"], manifest, tmp_path / "lib", kind="manifest", model=tiny["model"],
                  prompts=tiny["prompts"], show_progress=False)  # fmt: skip
    one = Library(tmp_path / "lib", model=tiny["model"])
    for over in ("image", "report"):
        res = one.search(QUERIES["hernia"], k=5, over=over)["results"]
        assert [r["study"] for r in res] == ["hernia"], over
    like = one.search_like(manifest.parent / "hernia.nii.gz", k=3)["results"]
    assert [r["study"] for r in like] == ["hernia"] and like[0]["score"] == pytest.approx(1.0, abs=1e-4)
