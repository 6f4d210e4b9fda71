"""Verifier checks for the model vectors: RoPE, patch fold, window encoder, combiner, heads, text, end to end,
and the state-dict layouts."""

from __future__ import annotations

import copy
import json
import re

import torch

from .pack import Check, ReferencePack, compare, compare_exact


def _prefixes(keys, suffix: str) -> list[str]:
    """Sorted unique `X` of keys `X<suffix>`."""
    return sorted({k[: -len(suffix)] for k in keys if k.endswith(suffix)})


def check_rope(pack: ReferencePack) -> list[Check]:
    from ..models.rope import rope_periods, rope_sin_cos

    f = pack.file("tv_rope.safetensors")
    cases = pack.file_info("tv_rope.safetensors").get("cases") or []
    out = []
    for c in cases:
        tag = c["tag"]
        head_dim = int(c.get("head_dim") or c["embed_dim"] // c["num_heads"])
        periods = rope_periods(head_dim, float(c["base"]))
        divs = None if c.get("H_div") is None else (c["H_div"], c["W_div"], c["D_div"])
        sin, cos = rope_sin_cos((c["H"], c["W"], c["D"]), periods, divs)
        tol = pack.tol_exact_tables
        out += [compare(f"rope.{tag}.periods", periods, f[f"{tag}.periods"], tol),
                compare(f"rope.{tag}.sin", sin, f[f"{tag}.sin"], tol),
                compare(f"rope.{tag}.cos", cos, f[f"{tag}.cos"], tol)]
    if not cases:
        out.append(Check("rope", None, "-", False, "manifest lists no tv_rope cases (their parameters are needed)"))
    return out


def check_patch_fold(pack: ReferencePack) -> list[Check]:
    from ..models.window_encoder import fold_patch_embed

    f = pack.file("tv_patch_fold.safetensors")
    out = []
    unfolded = [k for k in f.keys() if k.startswith("conv_weight_") and "folded" not in k]
    folded = [k for k in f.keys() if k.startswith("conv_weight_") and "folded" in k]
    for src, dst in zip(unfolded, folded, strict=False):
        out.append(compare(f"fold.{dst}", fold_patch_embed(f[src]), f[dst], pack.tol_exact_tables))
    if "conv_bias" in f and "conv_bias_after_fold" in f:
        out.append(compare_exact("fold.conv_bias_after_fold", f["conv_bias"], f["conv_bias_after_fold"],
                                 "the fold leaves the bias unchanged"))
    return out


def _window_input(pack: ReferencePack) -> torch.Tensor:
    default = "tv_preprocess.safetensors:p1_lps.pixel_values"
    ref = pack.file_info("tv_window_encoder.safetensors").get("input") or default
    return pack.tensor_ref(ref).float()


@torch.no_grad()
def check_window_encoder(pack: ReferencePack) -> list[Check]:
    model = pack.model()
    f = pack.file("tv_window_encoder.safetensors")
    x = _window_input(pack)
    enc = model.backbone_image
    tokens, inter = enc.forward_tokens(x, return_intermediates=True)
    feats = enc.features_from_tokens(tokens)
    via_forward = enc(x, chunk_size=max(1, x.shape[0] // 2))  # chunked path must agree too
    tol = pack.tol_model
    out = [compare("window.tokens", tokens, f["tokens"], tol),
           compare("window.cls", feats.cls, f["cls"], tol),
           compare("window.patch_average", feats.patch_average, f["patch_average"], tol),
           compare("window.axis2", feats.axis2, f["axis2"], tol),
           compare("window.axis2(chunked forward)", via_forward.axis2, f["axis2"], tol)]
    for key in ("patch_embed_out", "after_block0"):
        if key in f:
            ref = f[key]
            out.append(compare(f"window.{key}", inter[key][: ref.shape[0]], ref, tol))
    return out


def _valid_token_mask(window_mask: torch.Tensor) -> torch.Tensor:
    b = window_mask.shape[0]
    return torch.cat([torch.ones(b, 1, dtype=torch.bool), window_mask.reshape(b, -1).bool()], dim=1)


@torch.no_grad()
def check_combiner(pack: ReferencePack) -> list[Check]:
    model = pack.model()
    comb = model.feature_comb_image
    f = pack.file("tv_combiner.safetensors")
    tol = pack.tol_model
    out: list[Check] = []
    if "in.backbone_cls_padded" in f:
        mask, grid = f["in.window_mask"].bool(), f["in.grid_size"]
        g = comb.forward_global(f["in.backbone_cls_padded"], f["in.backbone_patch_average_padded"], mask, grid)
        z = torch.cat([g.cls, g.average], dim=-1)
        b = mask.shape[0]
        out += [
            compare("combiner.global.combiner_input", g.inputs, f["combiner_input"], tol, mask.reshape(b, -1)),
            compare("combiner.global.combiner_output_raw", g.tokens, f["combiner_output_raw"], tol,
                    _valid_token_mask(mask)),
            compare("combiner.global.cls", g.cls, f["cls"], tol),
            compare("combiner.global.spatial_3d", g.spatial, f["spatial_3d"], tol, mask),
            compare("combiner.global.masked_patch_average", g.average, f["masked_patch_average"], tol),
            compare("combiner.global.projection_input", z, f["projection_input"], tol),
            compare("combiner.global.image_embeddings", model.projection_image(z), f["image_embeddings"], tol),
            compare("combiner.global.image_embeddings_secondary", model.disease_head(z),
                    f["image_embeddings_secondary"], tol),
        ]
        if "single.in" in f:
            out += _check_single(pack, f, grid)
    variants = sorted({k.split(".")[1] for k in f.keys() if k.startswith("axis2.") and not k.startswith("axis2.in.")})
    for variant in variants:
        out += _check_axis2_variant(model, f, variant, tol)
    return out


def _check_single(pack, f, grids: torch.Tensor) -> list[Check]:
    comb = pack.model().feature_comb_image
    x = f["single.in"]
    n, width = x.shape[1], x.shape[2] // 2
    grid = next((tuple(int(v) for v in g) for g in grids.tolist() if g[0] * g[1] * g[2] == n), None)
    if grid is None:
        return [Check("combiner.single", None, "-", False, f"no grid in in.grid_size holds {n} windows")]
    cls = x[..., :width].reshape(1, *grid, width)
    avg = x[..., width:].reshape(1, *grid, width)
    nomask = comb.forward_global(cls, avg, None, [grid]).tokens
    mask = torch.ones(1, *grid, dtype=torch.bool)
    masked = comb.forward_global(cls, avg, mask, torch.tensor([grid])).tokens
    tol = pack.tol_model
    return [compare("combiner.single.out_nomask_tuple_grid", nomask, f["single.out_nomask_tuple_grid"], tol),
            compare("combiner.single.out_mask_tensor_grid", masked, f["single.out_mask_tensor_grid"], tol)]


def _check_axis2_variant(model, f, variant: str, tol) -> list[Check]:
    parts = variant.split("_")
    if len(parts) != 2 or parts[0] not in ("axisproj", "clsinput") or parts[1] not in ("physical", "regular"):
        return [Check(f"combiner.axis2.{variant}", None, "-", False, "unknown variant name")]
    mask, grid = f["axis2.in.window_mask"].bool(), f["axis2.in.grid_size"]
    d = model.feature_comb_image.forward_depth(
        f["axis2.in.backbone_cls_padded"], f["axis2.in.backbone_patch_axis2_padded"], mask, grid,
        axis_input=parts[0], rope_mode=parts[1],
    )
    z = torch.cat([d.cls.unsqueeze(1).expand(-1, d.perslice.shape[1], -1), d.perslice], dim=-1)
    slice_emb = model.disease_head(z)
    p = f"axis2.{variant}."
    n = "combiner." + p
    token_mask = mask.repeat_interleave(d.spatial.shape[3] // mask.shape[3], dim=3)
    out = [
        compare(n + "scan_slice_emb", slice_emb, f[p + "scan_slice_emb"], tol, d.valid_depth_mask),
        compare_exact(n + "scan_valid_depth_mask", d.valid_depth_mask, f[p + "scan_valid_depth_mask"]),
        compare(n + "cls", d.cls, f[p + "cls"], tol),
        compare(n + "perslice", d.perslice, f[p + "perslice"], tol, note="all depths (invalid ones are zero)"),
        compare(n + "spatial_3d", d.spatial, f[p + "spatial_3d"], tol, token_mask),
    ]
    if p + "local_cls" in f:  # dual-CLS is off in the release: the local CLS is the CLS
        out.append(compare(n + "local_cls", d.cls, f[p + "local_cls"], tol))
    return out


@torch.no_grad()
def check_heads(pack: ReferencePack) -> list[Check]:
    model = pack.model()
    f = pack.file("tv_heads.safetensors")
    out = []
    for name in _prefixes(f.keys(), ".in"):
        head = getattr(model, name, None)
        if head is None:
            out.append(Check(f"heads.{name}", None, "-", False, "the model has no such head"))
            continue
        x = f[f"{name}.in"]
        tol = pack.tol_model
        out += [compare(f"heads.{name}.bottleneck", head.bottleneck(x), f[f"{name}.bottleneck"], tol),
                compare(f"heads.{name}.out", head(x), f[f"{name}.out"], tol),
                compare(f"heads.{name}.last_layer_effective_weight", head.effective_weight(),
                        f[f"{name}.last_layer_effective_weight"], tol)]
    return out


def _text_outputs(model, backbone, ids, mask):
    from ..models.text import pool_hidden

    hidden = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    return hidden, pool_hidden(hidden, mask, model.config.text.pooling)


@torch.no_grad()
def check_text(pack: ReferencePack) -> list[Check]:
    model = pack.model()
    f = pack.file("tv_text.safetensors")
    tol = pack.tol_model
    out = []
    sides = sorted(k[len("ids_") :] for k in f.keys() if k.startswith("ids_"))
    for side in sides:
        ids, mask = f[f"ids_{side}"], f[f"mask_{side}"]
        hidden, pooled = _text_outputs(model, model.backbone_text, ids, mask)
        p = f"{side}."
        checks = [("last_hidden_state", hidden, mask), ("pooled", pooled, None),
                  ("projected_text", model.projection_text(pooled), None),
                  ("projected_text_copy", model.snippet_head(pooled), None),
                  ("encode_text", model.encode_text(ids, mask), None)]
        out += [compare(f"text.{p}{n}", v, f[p + n], tol, m) for n, v, m in checks if p + n in f]
    if "single.last_hidden_state" in f and sides:
        side = "right" if "right" in sides else sides[0]
        ids, mask = f[f"ids_{side}"][:1], f[f"mask_{side}"][:1]
        hidden, _ = _text_outputs(model, model.backbone_text, ids, mask)
        out.append(compare("text.single.last_hidden_state", hidden, f["single.last_hidden_state"], tol, mask))
    merged = [k for k in f.keys() if k.startswith("lora_merged_semantics.")]
    if merged:
        from ..models.lora import load_lora_base_state_dict

        base = copy.deepcopy(model.backbone_text).eval()
        prefix = next(p for p in ("model.backbone_text.", "backbone_text.")
                      if any(k.startswith(p) for k in pack.state_dict))
        text_sd = {k[len(prefix) :]: v for k, v in pack.state_dict.items() if k.startswith(prefix)}
        load_lora_base_state_dict(base, text_sd, strict=True)
        for side in sorted({k.split(".")[1] for k in merged}):
            ids, mask = f[f"ids_{side}"], f[f"mask_{side}"]
            hidden, pooled = _text_outputs(model, base, ids, mask)
            p = f"lora_merged_semantics.{side}."
            if p + "last_hidden_state" in f:
                out.append(compare("text." + p + "last_hidden_state", hidden, f[p + "last_hidden_state"], tol, mask))
            if p + "pooled" in f:
                out.append(compare("text." + p + "pooled", pooled, f[p + "pooled"], tol))
    return out


def _e2e_pixels(pack: ReferencePack) -> torch.Tensor:
    desc = pack.file_info("tv_e2e.safetensors").get("description", "")
    m = re.search(r"(tv_\w+)\['([\w.\-]+)'\]", desc)
    ref = f"{m.group(1)}.safetensors:{m.group(2)}" if m else "tv_preprocess.safetensors:p1_lps.pixel_values"
    return pack.tensor_ref(ref).float()


@torch.no_grad()
def check_e2e(pack: ReferencePack) -> list[Check]:
    model = pack.model()
    f = pack.file("tv_e2e.safetensors")
    pixels = _e2e_pixels(pack)
    tol = pack.tol_model
    out = []
    snippet = (f["snippet_ids"], f["snippet_mask"]) if "snippet_ids" in f else None
    report = (f["report_ids"], f["report_mask"]) if "report_ids" in f else None
    for x in _prefixes(f.keys(), ".window_index"):
        pix = pixels[f[f"{x}.window_index"]]
        grid = f[f"{x}.grid_size"]
        p = f"{x}."

        def cmp(key, value, mask=None, p=p):
            if p + key in f:
                out.append(compare(f"e2e.{p}{key}", value, f[p + key], tol, mask))

        cmp("encode_image_retrieval", model.encode_image_retrieval(pix, grid))
        cmp("encode_image_disease", model.encode_image_disease(pix, grid))
        feats = model.padded_window_features(pix, grid)
        g = model.feature_comb_image.forward_global(feats.cls, feats.patch_average, feats.window_mask, feats.grid_size)
        b = feats.window_mask.shape[0]
        cmp("combiner_input", g.inputs, feats.window_mask.reshape(b, -1))
        cmp("combiner_output", g.tokens, _valid_token_mask(feats.window_mask))
        if snippet is not None and p + "localize.scan_slice_emb" in f:
            loc = model.localize(pix, grid, *snippet)
            cmp("localize.scan_slice_emb", loc.scan_slice_emb, loc.scan_valid_depth_mask)
            out.append(compare_exact(f"e2e.{p}localize.scan_valid_depth_mask", loc.scan_valid_depth_mask,
                                     f[p + "localize.scan_valid_depth_mask"]))
            cmp("localize.snippet_emb", loc.snippet_emb)
        if report is not None and p + "forward.image_embeddings" in f:
            fwd = model(pixel_values=pix, input_ids=report[0], attention_mask=report[1], grid_size=grid)
            cmp("forward.image_embeddings", fwd["image_embeddings"])
            cmp("forward.text_embeddings", fwd["text_embeddings"])
    if report is not None and "encode_text.report" in f:
        out.append(compare("e2e.encode_text.report", model.encode_text(*report), f["encode_text.report"], tol))
    return out


def check_layouts(pack: ReferencePack) -> list[Check]:
    """The pack's weights load with no missing/unexpected keys, and the model's own layout equals keys_*.json."""
    model = pack.model()
    rep = pack.load_report
    out = [Check("layout.load_official_state_dict", float(len(rep.missing) + len(rep.unexpected)), "0 keys off",
                 rep.ok, rep.describe(5))]
    weights, _ = pack.weights_and_config()
    tag = weights.stem[len("model_") :]
    keys_file = pack.root / f"keys_{tag}.json"
    if keys_file.is_file():
        out.append(_compare_layout(f"layout.keys_{tag}", model.state_dict(), json.loads(keys_file.read_text())))
    real = pack.root / "keys_real.json"
    real_cfg = pack.root / "hf_config_real_expected.json"
    if real.is_file() and real_cfg.is_file():
        out.append(check_real_layout(real, real_cfg))
    return out


def _compare_layout(name: str, state_dict, expected: dict) -> Check:
    own = {"model." + k: list(v.shape) for k, v in state_dict.items()}
    exp = {k: list(v["shape"]) for k, v in expected.items()}
    missing = sorted(set(exp) - set(own))
    extra = sorted(set(own) - set(exp))
    shape = sorted(k for k in set(exp) & set(own) if exp[k] != own[k])
    bad = len(missing) + len(extra) + len(shape)
    note = f"{len(exp)} tensors" if not bad else (
        f"missing {missing[:3]}, extra {extra[:3]}, shape differs {shape[:3]}")
    return Check(name, float(bad), "0 keys off", bad == 0, note)


def check_real_layout(keys_path, config_path) -> Check:
    """Build the released architecture (from the expected release config) on the meta device and compare."""
    from ..models.official import config_from_official
    from ..models.radfinder import RadFinderModel

    cfg = config_from_official(json.loads(config_path.read_text()), None)
    with torch.device("meta"):
        model = RadFinderModel(cfg, text_weights=False)
    return _compare_layout("layout.keys_real(meta)", model.state_dict(), json.loads(keys_path.read_text()))
