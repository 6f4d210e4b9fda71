"""radfinder.api: embeddings, zero-shot classification and localization on raw scans with a checkpoint's own spec."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from radfinder.api import classify, encode_query, encode_text, encode_volume, load_model, localize, prompt_embeddings
from radfinder.api.depth import nearest_source_slice, source_z_range
from radfinder.errors import ConfigError, RadfinderError
from radfinder.eval.zero_shot import MEAN7_TEMPLATES
from radfinder.io import load_volume, write_dicom_series
from radfinder.models import RadFinderModel
from radfinder.preprocess import PreprocessSpec, apply_spec, plan_geometry
from radfinder.text.findings import CTRATE_FINDINGS

# A scan stored inferior-first along a flipped z axis (array axis 2 runs head -> feet), 2 x 2 x 5 mm.
SHAPE = (48, 44, 40)
AFFINE = np.array([[-2.0, 0, 0, 40], [0, -2.0, 0, 50], [0, 0, -5.0, 120.0], [0, 0, 0, 1]])
COARSE = PreprocessSpec(name="coarse-z", spacing=(0.75, 0.75, 1.5))


def _phantom(shape=SHAPE, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    body = np.where(i**2 + j**2 < 0.8, 40.0, -1000.0)
    lungs = np.where(((np.abs(i) - 0.4) ** 2 + j**2 < 0.1) & (k > -0.3), -850.0, body)
    return (lungs + rng.normal(0, 20, shape)).astype(np.int16)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    torch.manual_seed(0)
    model = RadFinderModel("tiny").eval()
    with torch.no_grad():  # the copy heads start equal to the originals; make them differ as after training
        for head in (model.projection_image_copy, model.projection_text_copy):
            head.layers[0].bias.normal_()
    root = tmp_path_factory.mktemp("api_ckpt")
    model.save_pretrained(root / "default")
    model.save_pretrained(root / "coarse", preprocess=COARSE)
    return root


@pytest.fixture(scope="module")
def model(ckpts):
    return load_model(ckpts / "default", device="cpu")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("api_scan") / "phantom.nii.gz"
    nib.save(nib.Nifti1Image(_phantom(), AFFINE), path)
    return path


@pytest.fixture(scope="module")
def encoding(model, scan):
    return encode_volume(model, scan)


@pytest.fixture(scope="module")
def dicom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("api_dicom") / "series"
    affine = np.array([[-2.0, 0, 0, 40], [0, -2.0, 0, 50], [0, 0, 5.0, -80.0], [0, 0, 0, 1]])
    write_dicom_series(_phantom(seed=1), affine, out, series_number=3, study_uid="1.2.3", patient_id="p1",
                       instance_order="descending", uid_seed="api-test")  # fmt: skip
    return out


def test_model_carries_the_checkpoint_spec(ckpts, model):
    assert model.preprocess_spec.hash() == PreprocessSpec().hash()
    assert not model.training and model.criterion.t.device.type == "cpu"
    coarse = load_model(ckpts / "coarse", device="cpu")
    assert coarse.preprocess_spec == COARSE


def test_non_default_spec_changes_the_grid(ckpts, scan, encoding):
    coarse = load_model(ckpts / "coarse", device="cpu")
    enc = encode_volume(coarse, scan)
    expected = plan_geometry(SHAPE, AFFINE, COARSE).grid
    assert enc.grid == expected and enc.grid != encoding.grid
    assert enc.spec_hash == COARSE.hash()
    assert enc.n_depth_cells == 8 * expected[2]
    assert encoding.grid == plan_geometry(SHAPE, AFFINE, PreprocessSpec()).grid


def test_encode_volume_matches_the_model_wrappers(model, scan, encoding):
    pre = apply_spec(load_volume(scan), model.preprocess_spec)
    windows = torch.from_numpy(pre.windows()).float()
    with torch.no_grad():
        img = model.encode_image(windows, [pre.grid])
        depth = model.encode_image_depth(windows, [pre.grid])
    np.testing.assert_allclose(encoding.retrieval, img.retrieval[0].numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(encoding.disease, img.disease[0].numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(encoding.depth, depth.slice_emb[0].numpy(), rtol=1e-4, atol=1e-7)
    assert encoding.depth_valid.all() == depth.valid_depth_mask[0].all().item()
    assert not np.allclose(encoding.retrieval, encoding.disease)  # separate heads


def test_encoding_is_deterministic_and_chunk_independent(model, scan, encoding):
    again = encode_volume(model, scan, chunk_size=1)
    np.testing.assert_allclose(again.retrieval, encoding.retrieval, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(again.depth, encoding.depth, rtol=1e-4, atol=1e-7)
    same = encode_volume(model, scan)
    np.testing.assert_array_equal(same.retrieval, encoding.retrieval)


def test_accepts_volume_and_preprocessed(model, scan, encoding):
    vol = load_volume(scan)
    np.testing.assert_array_equal(encode_volume(model, vol).disease, encoding.disease)
    pre = apply_spec(vol, model.preprocess_spec)
    np.testing.assert_array_equal(encode_volume(model, pre).disease, encoding.disease)
    with pytest.raises(ConfigError, match="model expects"):
        encode_volume(model, apply_spec(vol, COARSE))
    with pytest.raises(RadfinderError):
        encode_volume(model, scan.parent / "missing.nii.gz")


def test_depth_cells_cover_the_scan(encoding):
    lo, hi = source_z_range(SHAPE, AFFINE)
    z = encoding.depth_z_mm
    assert np.all(np.diff(z) > 0) and np.allclose(np.diff(z), 12.0)
    assert lo - 1.5 <= z.min() and z.max() <= hi + 1.5
    assert np.all((encoding.depth_bounds_mm[:, 0] < z) & (z < encoding.depth_bounds_mm[:, 1]))


def test_classify_is_mean7_softmax(model, encoding):
    scores = classify(model, encoding, ["Emphysema", "Lung nodule"])
    assert [s.finding for s in scores] == ["Emphysema", "Lung nodule"]
    # independent reference: embed the 7 template pairs directly, average normalised embeddings, renormalise
    img = encoding.disease / np.linalg.norm(encoding.disease)
    for s in scores:
        emb = []
        for side in (0, 1):
            texts = [pair[side].format(a=s.finding) for pair in MEAN7_TEMPLATES]
            with torch.no_grad():
                e = model.encode_text(**model.tokenize(texts)).numpy().astype(np.float64)
            m = (e / np.linalg.norm(e, axis=1, keepdims=True)).mean(0)
            emb.append(m / np.linalg.norm(m))
        cp, cn = img @ emb[0], img @ emb[1]
        assert s.margin == pytest.approx(cp - cn, abs=1e-5)
        assert s.probability == pytest.approx(np.exp(cp) / (np.exp(cp) + np.exp(cn)), abs=1e-6)
        assert 0.0 <= s.probability <= 1.0


@pytest.mark.slow  # 26 s in the full suite (--durations)
def test_classify_defaults_to_ctrate_and_reuses_prompts(model, scan, encoding, tmp_path):
    prompts = prompt_embeddings(model)
    scores = classify(model, encoding, prompts=prompts)
    assert tuple(s.finding for s in scores) == CTRATE_FINDINGS
    direct = classify(model, scan, findings=["Cardiomegaly"])
    assert direct[0].margin == pytest.approx(scores[CTRATE_FINDINGS.index("Cardiomegaly")].margin, abs=1e-5)
    bank = tmp_path / "bank.yaml"
    pairs = "\n".join(f'  - ["{a} is clearly visible.", "There is definitely no {a}."]' for a in ["{a}"] * 7)
    bank.write_text(f"zero_shot_templates:\n{pairs}\n")
    custom = classify(model, encoding, ["Cardiomegaly"], prompt_bank=bank)
    assert custom[0].margin != pytest.approx(direct[0].margin, abs=1e-6)
    with pytest.raises(ConfigError, match="twice"):
        classify(model, encoding, ["Emphysema", "Emphysema"])


def test_localize_profile_depth_and_slice(model, encoding):
    sentences = ["Small nodule in the right lung apex.", "Calcified plaque in the abdominal aorta."]
    locs = localize(model, encoding, sentences)
    assert [loc.sentence for loc in locs] == sentences
    lo, hi = source_z_range(SHAPE, AFFINE)
    inv = np.linalg.inv(AFFINE)
    for loc in locs:
        assert loc.probabilities.sum() == pytest.approx(1.0)
        assert loc.temperature == pytest.approx(model.config.localization_tau)
        assert loc.cell == int(np.nanargmax(loc.cosine)) == int(np.argmax(loc.probabilities))
        assert lo <= loc.world_z_mm <= hi
        assert loc.cell_bounds_mm[0] < loc.world_z_mm < loc.cell_bounds_mm[1]
        # independent: the voxel index along the (flipped) z axis from the inverse affine
        k = inv[2, :3] @ np.array([0.0, 0.0, loc.world_z_mm]) + inv[2, 3]
        assert loc.slice_axis == 2 and loc.slice_index == int(np.clip(np.round(k), 0, SHAPE[2] - 1))
        assert abs(loc.slice_z_mm - loc.world_z_mm) <= 5.0 / 2 + 1e-9
        assert (AFFINE @ [0, 0, loc.slice_index, 1])[2] == pytest.approx(loc.slice_z_mm)
        assert loc.instance_number is None
    # the temperature sharpens or flattens the profile but never moves the argmax
    flat = localize(model, encoding, sentences[:1], temperature=10.0)[0]
    assert flat.cell == locs[0].cell and flat.probability < locs[0].probability


def test_localize_dicom_returns_instance_numbers(model, dicom_dir):
    vol = load_volume(dicom_dir)
    enc = encode_volume(model, vol)
    (loc,) = localize(model, enc, "Consolidation in the left lower lobe.")
    numbers = {inst.instance_number for inst in vol.meta["instances"]}
    assert loc.instance_number in numbers
    # independent: the instance whose ImagePositionPatient z is nearest the predicted depth
    nearest = min(vol.meta["instances"], key=lambda inst: abs(inst.position[2] - loc.world_z_mm))
    assert loc.instance_number == nearest.instance_number
    assert loc.sop_instance_uid == nearest.sop_instance_uid
    assert abs(nearest.position[2] - loc.world_z_mm) <= 2.5 + 1e-6


def test_nearest_source_slice_picks_the_si_axis():
    # axis 0 of this array runs along z (a sagittal-stack style layout)
    aff = np.array([[0, 0, 1.0, 0], [0, 1.0, 0, 0], [2.0, 0, 0, -10.0], [0, 0, 0, 1]])
    sl = nearest_source_slice((20, 30, 40), aff, 7.2)
    assert (sl.axis, sl.index, sl.z_mm) == (0, 9, 8.0)
    assert nearest_source_slice((20, 30, 40), aff, -1000).index == 0


def test_encode_text_heads_differ_and_errors(model):
    rep = encode_text(model, ["Emphysema.", "No effusion."])
    snip = encode_text(model, ["Emphysema.", "No effusion."], snippet=True)
    assert rep.shape == snip.shape == (2, model.config.projection_dim)
    with pytest.raises(RadfinderError):
        encode_text(model, [])
    # one pass of the text tower for both heads gives what the two separate encodings give
    q_rep, q_snip = encode_query(model, ["Emphysema.", "No effusion."])
    np.testing.assert_allclose(q_rep, rep, atol=1e-6)
    np.testing.assert_allclose(q_snip, snip, atol=1e-6)
    assert not np.allclose(rep, snip)
    with pytest.raises(RadfinderError):
        encode_query(model, ["ok", "  "])
    with pytest.raises(ConfigError, match="neither a checkpoint"):
        load_model("no-such-model", device="cpu")


@pytest.mark.slow  # 15 s alone, 24 s in the full suite on 2 shared cores
def test_real_ct_classify_and_localize(real_data):
    path = real_data / "totalsegmentator_ct" / "aorta_crop" / "ct_cropped.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    model = load_model("tiny", device="cpu")
    vol = load_volume(path)
    enc = encode_volume(model, vol)
    scores = classify(model, enc)
    assert len(scores) == 18 and all(0.0 <= s.probability <= 1.0 for s in scores)
    (loc,) = localize(model, enc, "Calcification of the aortic arch.")
    lo, hi = source_z_range(vol.shape, vol.affine)
    assert lo - 1.5 <= loc.world_z_mm <= hi + 1.5
    assert abs(loc.slice_z_mm - loc.world_z_mm) <= vol.spacing[loc.slice_axis] / 2 + 1e-6
