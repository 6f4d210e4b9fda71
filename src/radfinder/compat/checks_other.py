"""Verifier checks for the losses and the preprocessing (implemented in radfinder.losses / radfinder.preprocess;
imported lazily so that a missing piece shows up as a failed "not available" check, not a crash)."""

from __future__ import annotations

import re

import numpy as np
import torch

from .pack import Check, ReferencePack, Tolerance, compare, compare_exact


@torch.no_grad()
def check_losses(pack: ReferencePack) -> list[Check]:
    from ..losses.localization import gaussian_localization_loss
    from ..losses.prompt import prompt_bce_loss, select_prompts
    from ..losses.siglip import siglip_loss

    f = pack.file("tv_losses.safetensors")
    tol = pack.tol_loss
    out: list[Check] = []
    keys = f.keys()

    for case in sorted({m.group(1) for k in keys if (m := re.match(r"siglip\.(case\w+)\.loss$", k))}):
        p = f"siglip.{case}."
        res = siglip_loss(f["siglip.zimg"], f["siglip.ztxt"], f[p + "t"], f[p + "b"])
        for name in ("loss", "pos_loss", "neg_loss"):
            if p + name in f:
                out.append(compare(f"losses.{p}{name}", getattr(res, name), f[p + name], tol))

    for k in keys:
        m = re.match(r"loc\.sigma([0-9.]+)_tau([0-9.]+)\.loss$", k)
        if not m:
            continue
        loss = gaussian_localization_loss(
            f["loc.slice_emb"], f["loc.snippet_emb"], f["loc.target_depth_mask"].bool(),
            f["loc.valid_depth_mask"].bool(), sigma=float(m.group(1)), tau=float(m.group(2)),
        )
        out.append(compare(f"losses.{k}", loss, f[k], tol))

    for k in keys:
        m = re.match(r"prompt\.(\w+)\.(qw|noqw)\.ls([0-9.]+)\.loss$", k)
        if not m:
            continue
        mode, qw, ls = m.group(1), m.group(2) == "qw", float(m.group(3))
        img = f["prompt.img_emb"]
        sampled = f"prompt.{mode}.sampled_prompt_emb"
        if sampled in f:  # random modes: the draw is stored, so no RNG replication is needed
            selected = f[sampled]
        else:
            selected = select_prompts(f["prompt.prompt_emb"], mode, img.shape[0])
        loss = prompt_bce_loss(
            img, selected, f["prompt.labels"], f["prompt.t"], f["prompt.b"], f["prompt.pos_weight"],
            question_weight=f["prompt.question_weight"] if qw else None, label_smoothing=ls,
        )
        out.append(compare(f"losses.{k}", loss, f[k], tol))
    if "prompt.prompt_emb" in f:
        f["prompt.prompt_emb"]  # noqa: B018 - consumed by select_prompts for the non-random modes
    return out


def _cases(pack: ReferencePack, f) -> dict[str, dict]:
    cases = dict(pack.file_info("tv_preprocess.safetensors").get("cases") or {})
    for k in f.keys():
        cases.setdefault(k.split(".")[0], {})
    return cases


def check_preprocess(pack: ReferencePack) -> list[Check]:
    from ..io import load_volume
    from ..preprocess import apply_spec, spaced_volume

    f = pack.file("tv_preprocess.safetensors")
    spec = pack.preprocess_spec()
    out: list[Check] = []
    fine = pack.tol_exact_tables  # affines: float64 geometry, 1e-6 mm
    for case, info in sorted(_cases(pack, f).items()):
        path = pack.root / info.get("nifti_file", f"{case}.nii.gz")
        p = f"{case}."
        if not path.is_file():
            out.append(Check(f"preprocess.{case}", None, "-", False, f"{path.name} missing"))
            continue
        vol = load_volume(path)
        if p + "raw_int16" in f:
            slope, inter = info.get("scl_slope_inter", (1.0, 0.0))
            hu = f[p + "raw_int16"].double() * slope + inter
            out.append(compare(f"preprocess.{p}raw_as_hu", torch.as_tensor(np.asarray(vol.array, dtype=np.float64)),
                               hu, fine, note="volume voxels = raw * slope + inter"))
        if p + "input_affine" in f:
            # NIfTI headers hold the affine in float32, the reference the intended float64 values: allow 2 ulps.
            header_tol = Tolerance(fine.atol, 2.4e-7)
            out.append(compare(f"preprocess.{p}input_affine", torch.as_tensor(vol.affine), f[p + "input_affine"],
                               header_tol, note="float32 header storage"))
        pre = apply_spec(vol, spec)
        if p + "pixel_values" in f:
            win = torch.from_numpy(np.ascontiguousarray(pre.windows()))
            ref = f[p + "pixel_values"]
            exact = tuple(win.shape) == tuple(ref.shape) and torch.equal(win.to(ref.dtype), ref)
            out.append(compare(f"preprocess.{p}pixel_values", win, ref, pack.tol_preprocess,
                               note="bit-exact" if exact else "not bit-exact"))
        if p + "grid_size" in f:
            out.append(compare_exact(f"preprocess.{p}grid_size", torch.tensor([pre.grid]), f[p + "grid_size"]))
        if p + "output_affine" in f:
            out.append(compare(f"preprocess.{p}output_affine", torch.as_tensor(pre.affine), f[p + "output_affine"],
                               fine))
        if p + "window_locations" in f:
            out.append(compare_exact(f"preprocess.{p}window_locations", torch.as_tensor(pre.window_locations()),
                                     f[p + "window_locations"]))
        expected_shape = info.get("spaced_shape_after_orientation_and_spacing")
        if expected_shape is not None:
            out.append(compare_exact(f"preprocess.{p}spaced_shape", torch.tensor(pre.spaced_shape),
                                     torch.tensor(expected_shape)))
        if p + "spaced_affine" in f or p + "spaced_volume_float32" in f:
            spaced, spaced_affine = spaced_volume(vol, spec)
            if p + "spaced_affine" in f:
                out.append(compare(f"preprocess.{p}spaced_affine", torch.as_tensor(spaced_affine),
                                   f[p + "spaced_affine"], fine))
            if p + "spaced_volume_float32" in f:
                out.append(compare(f"preprocess.{p}spaced_volume_float32", torch.from_numpy(spaced),
                                   f[p + "spaced_volume_float32"], pack.tol_model))
    return out
