"""A tiny scan library shared by tests/test_library_*.py: built once per test session.

Five small phantom NIfTI volumes with short, clearly different reports (a manifest), a tiny random checkpoint,
and the library built from them. The reports are distinct so that a report search has one right answer; the
untrained model's scan embeddings are random, so image-side checks use `--like` (a scan finds itself first).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

REPORTS = {
    "effusion": "Large right pleural effusion with compressive atelectasis of the right lower lobe (series 2, "
    "image 12). No pneumothorax.",
    "emphysema": "Severe centrilobular emphysema in both upper lobes. No nodule.",
    "hernia": "Large hiatal hernia. Heart size normal.",
    "nodule": "Solid pulmonary nodule of 9 mm in the left upper lobe (image 30). Follow-up CT advised.",
    "normal": "Normal chest CT. Lungs clear, no mass or lymph node enlargement.",
}
SHAPE = (96, 88, 40)
# LPS-stored (array i runs to the patient's right, j to posterior), 1 x 1 x 5 mm, superior at the last slice.
AFFINE = np.array([[-1.0, 0, 0, 48], [0, -1.0, 0, 44], [0, 0, 5.0, -120.0], [0, 0, 0, 1]])
_CACHE: dict = {}


def phantom(seed: int, shape=SHAPE) -> np.ndarray:
    """A chest-like phantom in HU: body with a fat rim, two lungs (size varies with the seed), heart, aorta, spine."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    body = (i / 0.92) ** 2 + (j / 0.72) ** 2
    vol = np.where(body < 1.0, -100.0, -1000.0)
    vol = np.where(body < 0.8, 40.0, vol)
    r = 0.26 + 0.02 * seed
    lungs = (((np.abs(i) - 0.42) / r) ** 2 + (j / 0.5) ** 2 < 1.0) & (k > -0.7)
    vol = np.where(lungs, -850.0, vol)
    heart = (((i + 0.08) / 0.26) ** 2 + ((j + 0.22) / 0.24) ** 2 < 1.0) & (k > -0.55) & (k < 0.35)
    vol = np.where(heart, 45.0, vol)
    vol = np.where((i + 0.1) ** 2 + (j - 0.3) ** 2 < 0.006, 60.0, vol)  # aorta
    vol = np.where(i**2 + (j - 0.52) ** 2 < 0.012, 700.0, vol)  # vertebral body
    return (vol + rng.normal(0, 15, shape)).astype(np.int16)


def write_nifti(path: Path, seed: int) -> Path:
    nib.save(nib.Nifti1Image(phantom(seed), AFFINE), path)
    return path


def make_checkpoint(root: Path) -> Path:
    import torch

    from radfinder.models import RadFinderModel

    torch.manual_seed(0)
    model = RadFinderModel("tiny").eval()
    with torch.no_grad():  # the copy heads start equal to the originals; make them differ as after training
        for head in (model.projection_image_copy, model.projection_text_copy):
            head.layers[0].bias.normal_()
    model.save_pretrained(root)
    return root


def make_manifest(root: Path, names=tuple(REPORTS)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, name in enumerate(names):
        write_nifti(root / f"{name}.nii.gz", n)
        rows.append({"id": name, "volume": f"{name}.nii.gz", "findings": REPORTS[name], "impressions": "",
                     "split": "test",
                     "labels": {"Pleural effusion": int(name == "effusion"),
                                "Lung nodule": int(name == "nodule")}})  # fmt: skip
    path = root / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_library(tmp_path_factory) -> dict:
    """{"ckpt", "manifest", "library", "model", "prompts"} built once per session (treat as read-only; copy to
    modify). `model` is the checkpoint loaded on the CPU, `prompts` its zero-shot prompt embeddings."""
    if "library" not in _CACHE:
        from radfinder.api import load_model, prompt_embeddings
        from radfinder.library import build_library

        base = tmp_path_factory.getbasetemp() / "tiny_library"
        ckpt = make_checkpoint(base / "ckpt")
        manifest = make_manifest(base / "data")
        model = load_model(ckpt, device="cpu")
        prompts = prompt_embeddings(model)
        build_library(ckpt, manifest, base / "lib", kind="manifest", model=model, prompts=prompts,
                      show_progress=False)  # fmt: skip
        _CACHE.update(ckpt=ckpt, manifest=manifest, library=base / "lib", model=model, prompts=prompts)
    return dict(_CACHE)


def copy_library(paths: dict[str, Path], dst: Path) -> Path:
    shutil.copytree(paths["library"], dst)
    return dst
