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
SHAPE = (48, 44, 40)
AFFINE = np.array([[-2.0, 0, 0, 40], [0, -2.0, 0, 50], [0, 0, 5.0, -120.0], [0, 0, 0, 1]])
_CACHE: dict[str, Path] = {}


def phantom(seed: int, shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    body = np.where(i**2 + j**2 < 0.8, 40.0, -1000.0)
    r = 0.08 + 0.04 * seed
    lungs = np.where(((np.abs(i) - 0.4) ** 2 + j**2 < r) & (k > -0.6), -850.0, body)
    return (lungs + rng.normal(0, 20, shape)).astype(np.int16)


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
