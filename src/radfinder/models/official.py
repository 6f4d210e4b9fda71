"""Official checkpoint layouts: the HF export (`model.`-prefixed keys + config.json with `radfinder_model_config`)
and the SPECTRE component state dicts.

Sizes come from the config where it has them and from the weight shapes otherwise (the export hard-codes the head
widths and the Qwen3 sizes, so a non-release export only reveals them through its tensors).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from .config import CombinerConfig, HeadConfig, LoraConfig, RadFinderConfig, TextConfig, WindowEncoderConfig
from .lora import load_lora_base_state_dict
from .text import QWEN3_EMBEDDING_06B
from .window_encoder import fold_patch_embed

PREFIX = "model."
Shapes = Mapping[str, tuple[int, ...]]


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mapped: list[str] = field(default_factory=list)  # notes on keys that were renamed or transformed

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def describe(self, limit: int = 20) -> str:
        parts = []
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                more = f" ... (+{len(keys) - limit})" if len(keys) > limit else ""
                parts.append(f"{len(keys)} {name} key(s): {', '.join(keys[:limit])}{more}")
        return "; ".join(parts) or "all keys matched"


def _shape_of(shapes: Shapes | None, key: str) -> tuple[int, ...] | None:
    if shapes is None:
        return None
    for k in (key, PREFIX + key):
        if k in shapes:
            return tuple(shapes[k])
    return None


def infer_qwen3_sizes(shapes: Shapes, prefix: str = "backbone_text.") -> dict:
    """Qwen3 sizes from tensor shapes: vocab/hidden from embed_tokens, head size from q_norm, heads from q_proj
    rows / head size, KV heads from k_proj, intermediate from gate_proj, layers from the layer indices."""
    def get(name):
        shape = _shape_of(shapes, prefix + name)
        if shape is None:
            raise CheckpointError(f"cannot infer the text-encoder size: no tensor {prefix + name}")
        return shape

    vocab, hidden = get("embed_tokens.weight")
    head_dim = get("layers.0.self_attn.q_norm.weight")[0]
    layer_ids = {
        int(m.group(1)) for k in shapes if (m := re.search(re.escape(prefix) + r"layers\.(\d+)\.", k))
    }
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "head_dim": head_dim,
        "num_attention_heads": get("layers.0.self_attn.q_proj.weight")[0] // head_dim,
        "num_key_value_heads": get("layers.0.self_attn.k_proj.weight")[0] // head_dim,
        "intermediate_size": get("layers.0.mlp.gate_proj.weight")[0],
        "num_hidden_layers": max(layer_ids) + 1,
        "max_window_layers": max(layer_ids) + 1,
    }


def config_from_official(hf_config: Mapping, shapes: Shapes | None = None) -> RadFinderConfig:
    """Translate an official `config.json` (the dict) into a RadFinderConfig; `shapes` (key -> shape) fill in what
    the config does not state (head widths, Qwen3 sizes)."""
    rc = hf_config.get("radfinder_model_config")
    if not isinstance(rc, Mapping):
        raise ConfigError("not an official RadFinder config: 'radfinder_model_config' is missing")
    if hf_config.get("model_settings"):
        raise ConfigError(
            f"model_settings={hf_config['model_settings']!r} selects a non-released global path; only the released "
            "'low_res' path (model_settings null) is supported"
        )
    bk = rc.get("backbone_kwargs") or {}
    patch = list(bk.get("patch_size", (16, 16, 8)))
    if bk.get("half_patch_embed", False):
        patch[2] //= 2
    conv = _shape_of(shapes, "backbone_image.patch_embed.proj.weight")
    if conv is not None and tuple(conv[2:]) != tuple(patch):
        raise CheckpointError(f"patch embedding weight has kernel {tuple(conv[2:])}, config implies {tuple(patch)}")
    window = WindowEncoderConfig(
        kind="vit",
        embed_dim=int(bk.get("embed_dim", rc.get("image_backbone_embed_dim", 1080))),
        depth=int(bk.get("depth", 24)),
        num_heads=int(bk.get("num_heads", 12)),
        mlp_ratio=float(bk.get("mlp_ratio", 4.0)),
        patch_size=tuple(patch),
        window_size=tuple(bk.get("sliding_window_size", (128, 128, 32))),
        rope_base=float((bk.get("rope_kwargs") or {}).get("base", 1000.0)),
        init_values=float(bk.get("init_values") or 1.0),
    )
    fk = rc.get("feature_combiner_kwargs") or {}
    snip = hf_config.get("do_snippet_alignment") or {}
    axis_loc = bool(snip.get("enabled")) and snip.get("snippet_mode") == "axis_localization"
    has_axis_proj = axis_loc or _shape_of(shapes, "feature_comb_image.axis_patch_proj.weight") is not None
    combiner = CombinerConfig(
        embed_dim=int(rc.get("feature_comb_embed_dim", 1080)),
        depth=int(rc.get("feature_comb_num_layers", 4)),
        num_heads=int(rc.get("feature_comb_num_heads", 12)),
        mlp_ratio=float(fk.get("mlp_ratio", 4.0)),
        rope_base=float((fk.get("rope_kwargs") or {}).get("base", 100.0)),
        init_values=float(fk.get("init_values") or 1.0),
        axis_patch_proj=has_axis_proj,
        axis_input="axisproj" if axis_loc else "clsinput",
        rope_mode=snip.get("rope_mode") or "regular",
    )
    l0 = _shape_of(shapes, "projection_image.layers.0.weight")
    l4 = _shape_of(shapes, "projection_image.layers.4.weight")
    heads = HeadConfig(hidden_dim=l0[0] if l0 else 2048, bottleneck_dim=l4[0] if l4 else 256)
    tk = rc.get("text_backbone_kwargs") or {}
    text_hidden = int(rc.get("text_hidden_size", 1024))
    if shapes is not None and _shape_of(shapes, "backbone_text.embed_tokens.weight") is not None:
        sizes = infer_qwen3_sizes(shapes)
    elif text_hidden == QWEN3_EMBEDDING_06B["hidden_size"]:
        sizes = {}
    else:
        raise CheckpointError(f"text_hidden_size {text_hidden} is not the release's; the weights are needed to size it")
    if sizes and sizes["hidden_size"] != text_hidden:
        raise CheckpointError(f"text_hidden_size is {text_hidden} but the weights have width {sizes['hidden_size']}")
    overrides = {k: v for k, v in sizes.items() if QWEN3_EMBEDDING_06B.get(k) != v}
    lora = None
    if tk.get("use_lora", False):
        lora = LoraConfig(
            r=int(tk.get("lora_r", 16)),
            alpha=float(tk.get("lora_alpha", 64.0)),
            dropout=float(tk.get("lora_dropout", 0.05)),
            targets=list(tk.get("lora_target_keywords", ["q_proj", "k_proj", "v_proj", "o_proj"])),
        )
    text = TextConfig(
        source="qwen3",
        hf_config=overrides or None,
        hidden_size=text_hidden,
        pooling="last",
        lora=lora,
        max_length=int(tk.get("tokenizer_max_length", 1024)),
    )
    return RadFinderConfig(
        name=str(rc.get("model_name", "radfinder")),
        window_encoder=window,
        combiner=combiner,
        heads=heads,
        text=text,
        projection_dim=int(rc.get("projection_dim", 512)),
        copy_image_head=axis_loc and snip.get("projector_mode_image") == "copy",
        copy_text_head=axis_loc and snip.get("projector_mode_text") == "copy",
        localization_sigma=float(snip.get("localization_sigma", 2.0)),
        localization_tau=float(snip.get("localization_tau", 0.1)),
    )


def _normalise_keys(state_dict: Mapping[str, torch.Tensor], model: nn.Module, report: LoadReport) -> dict:
    """Strip the `model.` prefix, rename legacy weight-norm keys, fold an unfolded 16x16x8 patch embedding."""
    out = {}
    stripped = 0
    for key, value in state_dict.items():
        if key.startswith(PREFIX):
            key = key[len(PREFIX) :]
            stripped += 1
        for old, new in (("last_layer.weight_g", "last_layer.parametrizations.weight.original0"),
                         ("last_layer.weight_v", "last_layer.parametrizations.weight.original1")):
            if key.endswith(old):
                report.mapped.append(f"{key} -> {key[: -len(old)] + new}")
                key = key[: -len(old)] + new
        out[key] = value
    if stripped:
        report.mapped.append(f"stripped prefix '{PREFIX}' from {stripped} keys")
    conv_key = "backbone_image.patch_embed.proj.weight"
    target = dict(model.named_parameters()).get(conv_key)
    if conv_key in out and target is not None:
        w = out[conv_key]
        if w.dim() == 5 and w.shape[-1] == 2 * target.shape[-1] and w.shape[:-1] == target.shape[:-1]:
            out[conv_key] = fold_patch_embed(w)
            report.mapped.append(f"{conv_key}: folded depth kernel {w.shape[-1]} -> {target.shape[-1]}")
    return out


def load_official_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True
) -> LoadReport:
    """Load an official-layout state dict (with or without the `model.` prefix) into a RadFinderModel.

    LoRA weights follow the HF-export semantics: `weight` is the effective weight (see models.lora). Shape
    mismatches always raise; with strict=True missing or unexpected keys raise too (CheckpointError naming them).
    """
    report = LoadReport()
    sd = _normalise_keys(state_dict, model, report)
    own = model.state_dict()
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError("shape mismatch for " + "; ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))
    result = model.load_state_dict(sd, strict=False)
    report.missing = list(result.missing_keys)
    report.unexpected = list(result.unexpected_keys)
    if strict and not report.ok:
        raise CheckpointError(f"state dict does not match the model: {report.describe()}")
    return report


@torch.no_grad()
def load_spectre_components(
    model: nn.Module,
    backbone: Mapping[str, torch.Tensor] | None = None,
    combiner: Mapping[str, torch.Tensor] | None = None,
    image_head: Mapping[str, torch.Tensor] | None = None,
    text_head: Mapping[str, torch.Tensor] | None = None,
    text: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, LoadReport]:
    """Initialise a RadFinderModel from SPECTRE component state dicts (already read by the caller), with the
    official rules: backbone non-strict and folded to 16x16x4; combiner strict, axis_patch_proj initialised from
    patch_proj; heads strict and copied into the `_copy` twins; text with base-weight LoRA semantics."""
    reports: dict[str, LoadReport] = {}
    if backbone is not None:
        rep = LoadReport()
        sd = _normalise_keys({"backbone_image." + k: v for k, v in backbone.items()}, model, rep)
        sd = {k[len("backbone_image.") :]: v for k, v in sd.items()}
        own = set(model.backbone_image.state_dict())
        res = model.backbone_image.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
        rep.missing, rep.unexpected = list(res.missing_keys), sorted(set(sd) - own)
        reports["backbone"] = rep
    if combiner is not None:
        comb = model.feature_comb_image
        res = comb.load_state_dict(dict(combiner), strict=False)
        missing = [k for k in res.missing_keys if not k.startswith("axis_patch_proj.")]
        if missing or res.unexpected_keys:
            raise CheckpointError(f"combiner component: missing {missing}, unexpected {list(res.unexpected_keys)}")
        if comb.axis_patch_proj is not None and "axis_patch_proj.weight" not in combiner:
            comb.init_axis_patch_proj_from_patch_proj()
        reports["combiner"] = LoadReport(mapped=["axis_patch_proj initialised from patch_proj"])
    for name, sd, twin in (("projection_image", image_head, "projection_image_copy"),
                           ("projection_text", text_head, "projection_text_copy")):
        if sd is None:
            continue
        rep = LoadReport()
        head_sd = {k[len(name) + 1 :]: v for k, v in _normalise_keys({name + "." + k: v for k, v in sd.items()},
                                                                   model, rep).items()}
        getattr(model, name).load_state_dict(head_sd, strict=True)
        if getattr(model, twin, None) is not None:
            getattr(model, twin).load_state_dict(head_sd, strict=True)
        reports[name] = rep
    if text is not None:
        res = load_lora_base_state_dict(model.backbone_text, dict(text), strict=True)
        reports["text"] = LoadReport(missing=list(res.missing_keys), unexpected=list(res.unexpected_keys))
    return reports
