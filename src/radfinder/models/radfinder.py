"""`RadFinderModel`: window encoder + feature combiner + projection heads + text tower + SigLIP scale.

Children and their names follow the official state-dict layout (`backbone_image`, `feature_comb_image`,
`projection_image`, `backbone_text`, `projection_text`, `criterion`, `projection_image_copy`,
`projection_text_copy`), so `state_dict()` equals an official checkpoint minus its `model.` prefix.

Two entry levels: from windows (`encode_image*`, `localize`: run the window encoder, then the rest) and from cached
window features (`encode_features_global`, `encode_features_depth`: what training on a frozen-feature cache uses).
Outputs are never L2-normalised; callers take cosines.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..preprocess.spec import resolve_spec
from ..text.sentences import split_sentences
from ..text.vocabulary import CTRATE18, read_vocabulary
from .anatomy_head import AnatomyEmbeddings, AnatomyHead, FvlmTemperature
from .calibration import read_calibration
from .combiner import FeatureCombiner, pad_feature_grids, windows_to_grids
from .config import AnatomyHeadConfig, RadFinderConfig, resolve_model_config
from .heads import ProjectionHead, SigLIPScale
from .hub import resolve_weights
from .lora import add_lora
from .pretrained_files import load_pretrained_weights, read_pretrained_dir, save_pretrained
from .text import build_text_backbone, has_tokenizer_files, load_tokenizer, minilm_dir, pool_hidden, text_hidden_size
from .window_encoder import WINDOW_ENCODERS, WindowEncoder, WindowFeatures


@dataclass
class ImageEmbeddings:
    retrieval: torch.Tensor  # (B, P) from projection_image: compare with report embeddings
    disease: torch.Tensor  # (B, P) from projection_image_copy: compare with disease prompt embeddings


@dataclass
class DepthEmbeddings:
    slice_emb: torch.Tensor  # (B, T*Dm, P), one per depth cell (12 mm for RadFinder); invalid rows are not zero
    valid_depth_mask: torch.Tensor  # (B, T*Dm) bool


@dataclass
class LocalizationOutput:
    scan_slice_emb: torch.Tensor
    scan_valid_depth_mask: torch.Tensor
    snippet_emb: torch.Tensor  # (S, P)


@dataclass
class PaddedWindowFeatures:
    cls: torch.Tensor  # (B, Hm, Wm, Dm, F)
    patch_average: torch.Tensor  # (B, Hm, Wm, Dm, F)
    axis2: torch.Tensor  # (B, Hm, Wm, Dm, T, F)
    window_mask: torch.Tensor  # (B, Hm, Wm, Dm) bool
    grid_size: torch.Tensor  # (B, 3)


def build_window_encoder(cfg) -> WindowEncoder:
    if cfg.kind not in WINDOW_ENCODERS:
        try:  # backbones register themselves when their module is imported (e.g. kind "resnet3d")
            importlib.import_module(f"{__package__}.{cfg.kind}")
        except ImportError:
            pass
    if cfg.kind not in WINDOW_ENCODERS:
        raise ConfigError(f"unknown window encoder kind {cfg.kind!r} (known: {', '.join(sorted(WINDOW_ENCODERS))})")
    return WINDOW_ENCODERS[cfg.kind](cfg)


def pad_window_features(features: WindowFeatures, grid_size) -> PaddedWindowFeatures:
    """Per-window features of scans concatenated in batch order -> zero-padded grids plus window mask."""
    cls, mask, grids = pad_feature_grids(windows_to_grids(features.cls, grid_size))
    avg, _, _ = pad_feature_grids(windows_to_grids(features.patch_average, grid_size))
    axis2, _, _ = pad_feature_grids(windows_to_grids(features.axis2, grid_size))
    return PaddedWindowFeatures(cls, avg, axis2, mask, grids)


class RadFinderModel(nn.Module):
    def __init__(self, config: RadFinderConfig | str | None = None, tokenizer=None, text_weights: bool = True):
        """Build from a config or preset name. `text_weights`: load the text encoder's pretrained weights from its
        local directory (MiniLM / hf sources); checkpoint loaders pass False and fill every weight themselves."""
        super().__init__()
        cfg = resolve_model_config(config)
        self.config = cfg
        self.backbone_image = build_window_encoder(cfg.window_encoder)
        ec, p, hc = cfg.combiner.embed_dim, cfg.projection_dim, cfg.heads
        self.feature_comb_image = FeatureCombiner(
            feature_dim=self.backbone_image.feature_dim,
            embed_dim=ec,
            depth=cfg.combiner.depth,
            num_heads=cfg.combiner.num_heads,
            mlp_ratio=cfg.combiner.mlp_ratio,
            rope_base=cfg.combiner.rope_base,
            init_values=cfg.combiner.init_values,
            axis_patch_proj=cfg.combiner.axis_patch_proj,
            axis_input=cfg.combiner.axis_input,
            rope_mode=cfg.combiner.rope_mode,
        )
        if cfg.combiner.axis_patch_proj:
            self.feature_comb_image.init_axis_patch_proj_from_patch_proj()
        self.projection_image = ProjectionHead(2 * ec, p, hc.hidden_dim, hc.bottleneck_dim)
        # repo id + commit of every part loaded by Hugging Face id (`models.hub`): recorded wherever results are
        self.hub_sources: dict[str, dict[str, str]] = {}
        tc = cfg.text
        self._text_dir = self._resolve_text_dir(tc.path, "text") if tc.source == "hf" else tc.path
        self.backbone_text = build_text_backbone(tc.source, self._text_dir, tc.hf_config, load_weights=text_weights)
        hidden = text_hidden_size(self.backbone_text)
        if hidden != tc.hidden_size:
            raise ConfigError(f"text.hidden_size is {tc.hidden_size} but the text encoder has width {hidden}")
        if tc.lora is not None:
            add_lora(self.backbone_text, tc.lora.targets, tc.lora.r, tc.lora.alpha, tc.lora.dropout)
        self.projection_text = ProjectionHead(hidden, p, hc.hidden_dim, hc.bottleneck_dim)
        self.criterion = SigLIPScale(cfg.t_init, cfg.b_init)
        self.projection_image_copy = (
            ProjectionHead(2 * ec, p, hc.hidden_dim, hc.bottleneck_dim) if cfg.copy_image_head else None
        )
        self.projection_text_copy = (
            ProjectionHead(hidden, p, hc.hidden_dim, hc.bottleneck_dim) if cfg.copy_text_head else None
        )
        if self.projection_image_copy is not None:  # the copies start equal to the originals, as in the release
            self.projection_image_copy.load_state_dict(self.projection_image.state_dict())
        if self.projection_text_copy is not None:
            self.projection_text_copy.load_state_dict(self.projection_text.state_dict())
        self.anatomy_head: AnatomyHead | None = None
        self.anatomy_temperature: FvlmTemperature | None = None
        self.anatomy_text_proj: nn.Linear | None = None
        if cfg.anatomy is not None:
            self.add_anatomy_head(cfg.anatomy)
        self.preprocess_spec = resolve_spec(None)  # replaced by the checkpoint's own spec on load
        self.label_vocabulary = CTRATE18  # what each position of a label vector means (saved as labels.json)
        # per-finding zero-shot calibration fitted after training on a train split (models.calibration); it is
        # read from the checkpoint's calibration.json and never written by save_pretrained: new weights need a
        # new fit
        self.calibration = None
        self._tokenizer = tokenizer
        if self._tokenizer is None and text_weights:
            self._tokenizer = self._default_tokenizer()

    # ---------------------------------------------------------------- text
    def _resolve_text_dir(self, path: str | None, role: str) -> str | None:
        if path is None:
            return None
        resolved = resolve_weights(path, "text")
        if resolved.source is not None:
            self.hub_sources[role] = resolved.source.as_dict()
        return str(resolved.path)

    def _default_tokenizer(self):
        tc = self.config.text
        path = self._resolve_text_dir(tc.tokenizer, "tokenizer") or self._text_dir or (
            str(minilm_dir()) if tc.source == "minilm" else None)
        if path is not None and has_tokenizer_files(path):
            return load_tokenizer(path)
        return None

    @property
    def tokenizer(self):
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        self._tokenizer = value

    def tokenize(self, texts: str | Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        if self._tokenizer is None:
            why = getattr(self, "_tokenizer_error", None)
            raise ConfigError(
                "this model has no tokenizer (the official export names a hub tokenizer that is not available "
                "offline): set model.tokenizer, or pass input_ids/attention_mask" + (f"; {why}" if why else "")
            )
        texts = [texts] if isinstance(texts, str) else list(texts)
        limit = max_length or self.config.text.max_length
        enc = self._tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        device = self.criterion.t.device
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled text-encoder states (B, hidden), before any projection head."""
        top = getattr(self, "_text_top", None)
        if top is not None:
            return top.features(input_ids, attention_mask)
        cache = getattr(self, "_text_cache", None)
        if cache is None:
            out = self.backbone_text(input_ids=input_ids, attention_mask=attention_mask)
            return pool_hidden(out.last_hidden_state, attention_mask, self.config.text.pooling)
        keys = [ids[m.bool()].cpu().numpy().tobytes() for ids, m in zip(input_ids, attention_mask, strict=True)]
        todo = sorted({i for i, k in enumerate(keys) if k not in cache}, key=lambda i: keys[i])
        todo = [i for n, i in enumerate(todo) if n == 0 or keys[i] != keys[todo[n - 1]]]
        if todo:
            was_training = self.backbone_text.training
            self.backbone_text.eval()
            with torch.no_grad():
                ids, mask = input_ids[todo], attention_mask[todo]
                out = self.backbone_text(input_ids=ids, attention_mask=mask)
                pooled = pool_hidden(out.last_hidden_state, mask, self.config.text.pooling)
            self.backbone_text.train(was_training)
            for i, row in zip(todo, pooled, strict=True):
                cache[keys[i]] = row.detach()
        return torch.stack([cache[k] for k in keys])

    def cache_text_features(self, enabled: bool = True) -> None:
        """For a frozen text tower: run it in eval mode (no dropout) and keep each token sequence's pooled
        features, so training re-uses report and prompt features instead of re-encoding them every step.
        Only valid while the text-tower weights do not change; the projection heads still train."""
        self._text_cache = {} if enabled else None

    def cache_text_lower_layers(self, k: int | None) -> None:
        """For `text_train: top<k>`: keep the frozen bottom layers' outputs per token sequence and run only the top
        k layers on each call (`radfinder.models.text_topk`); None returns to the plain full forward. Only valid
        while the bottom layers' weights do not change."""
        from .text_topk import TopLayerText

        self._text_top = None if k is None else TopLayerText(self.backbone_text, k, self.config.text.pooling)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Report / prompt embeddings (B, P) from projection_text."""
        return self.projection_text(self.text_features(input_ids, attention_mask))

    def encode_snippet(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Localization snippet embeddings (S, P) from projection_text_copy."""
        return self.snippet_head(self.text_features(input_ids, attention_mask))

    @property
    def snippet_head(self) -> ProjectionHead:
        return self.projection_text_copy if self.projection_text_copy is not None else self.projection_text

    @property
    def disease_head(self) -> ProjectionHead:
        return self.projection_image_copy if self.projection_image_copy is not None else self.projection_image

    # ---------------------------------------------------------------- image, from cached window features
    def encode_features_global(self, cls, patch_average, window_mask=None, grid_size=None) -> ImageEmbeddings:
        """Padded window features (B, Hm, Wm, Dm, F) -> retrieval and disease embeddings."""
        cls_c, avg_c = self.feature_comb_image.encode_global(cls, patch_average, window_mask, grid_size)
        z = torch.cat([cls_c, avg_c], dim=-1)
        return ImageEmbeddings(retrieval=self.projection_image(z), disease=self.disease_head(z))

    def encode_features_depth(self, cls, axis2, window_mask=None, grid_size=None) -> DepthEmbeddings:
        """Padded window cls (B, Hm, Wm, Dm, F) and axis2 (B, Hm, Wm, Dm, T, F) -> one embedding per depth cell."""
        cls_a, perslice, valid = self.feature_comb_image.encode_depth(cls, axis2, window_mask, grid_size)
        z = torch.cat([cls_a.unsqueeze(1).expand(-1, perslice.shape[1], -1), perslice], dim=-1)
        return DepthEmbeddings(slice_emb=self.disease_head(z), valid_depth_mask=valid)

    def add_anatomy_head(self, anatomy: AnatomyHeadConfig) -> None:
        """Attach (or replace) fVLM's anatomy head and its temperature, freshly initialised; the model's config
        records the section, so `save_pretrained` / `from_pretrained` keep them."""
        a = AnatomyHeadConfig.model_validate(anatomy.model_dump() if isinstance(anatomy, AnatomyHeadConfig)
                                             else anatomy)  # fmt: skip
        ref = self.criterion.t
        self.anatomy_head = AnatomyHead(self.backbone_image.feature_dim, self.config.projection_dim, a.names, a.dim,
                                        a.num_heads, a.dropout, a.coverage_bias).to(ref.device, ref.dtype)
        self.anatomy_temperature = FvlmTemperature(a.temperature_init).to(ref.device, ref.dtype)
        self.anatomy_text_proj = None
        if a.text_head == "linear":
            hidden = text_hidden_size(self.backbone_text)
            self.anatomy_text_proj = nn.Linear(hidden, self.config.projection_dim).to(ref.device, ref.dtype)
        self.config = self.config.model_copy(update={"anatomy": a})

    def anatomy_text_head(self, features: torch.Tensor) -> torch.Tensor:
        """Text-tower features (B, hidden) -> anatomy text embeddings (B, P): fVLM's own linear projection when the
        anatomy config asks for it (`text_head: linear`), else the report head."""
        head = self.anatomy_text_proj if self.anatomy_text_proj is not None else self.projection_text
        return head(features)

    def encode_anatomy_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, P) of tokenised texts through the anatomy text head (each text in one pass)."""
        return self.anatomy_text_head(self.text_features(input_ids, attention_mask))

    def encode_anatomy_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings (N, P) of per-anatomy texts or anatomy-level prompts, pooled as the anatomy config says
        (`text_pooling`: the whole text, or the mean of its sentences' features); identical texts and sentences
        are encoded once."""
        texts = list(texts)
        pooling = self.config.anatomy.text_pooling if self.config.anatomy is not None else "text"
        parts = [[t] for t in texts]
        if pooling == "sentences":
            parts = [[x for x in (s.strip() for s in split_sentences(t)) if x] or [t] for t in texts]
        uniq = list(dict.fromkeys(x for p in parts for x in p))
        index = {x: i for i, x in enumerate(uniq)}
        tok = self.tokenize(uniq)
        feats = self.text_features(tok["input_ids"], tok["attention_mask"])
        if pooling == "sentences":
            pooled = torch.stack([feats[[index[x] for x in p]].mean(0) for p in parts])
        else:
            pooled = feats[torch.tensor([index[p[0]] for p in parts], device=feats.device)]
        return self.anatomy_text_head(pooled)

    def encode_anatomy(self, tokens: torch.Tensor, coverage: torch.Tensor) -> AnatomyEmbeddings:
        """fVLM anatomy embeddings (B, A, P), L2-normalised, from spatial tokens (B, N, F) and their anatomy
        coverage (B, A, N) (see `radfinder.models.anatomy_head`); needs a model config with `anatomy`."""
        if self.anatomy_head is None:
            raise ConfigError("this model has no anatomy head (its config has no `anatomy` section)")
        return self.anatomy_head(tokens, coverage)

    # ---------------------------------------------------------------- image, from windows
    def encode_windows(self, pixel_values: torch.Tensor, chunk_size: int | None = None) -> WindowFeatures:
        return self.backbone_image(pixel_values, chunk_size=chunk_size)

    def padded_window_features(self, pixel_values, grid_size, chunk_size: int | None = None) -> PaddedWindowFeatures:
        return pad_window_features(self.encode_windows(pixel_values, chunk_size), grid_size)

    def encode_image(self, pixel_values, grid_size, chunk_size: int | None = None) -> ImageEmbeddings:
        f = self.padded_window_features(pixel_values, grid_size, chunk_size)
        return self.encode_features_global(f.cls, f.patch_average, f.window_mask, f.grid_size)

    def encode_image_retrieval(self, pixel_values, grid_size, chunk_size: int | None = None) -> torch.Tensor:
        return self.encode_image(pixel_values, grid_size, chunk_size).retrieval

    def encode_image_disease(self, pixel_values, grid_size, chunk_size: int | None = None) -> torch.Tensor:
        return self.encode_image(pixel_values, grid_size, chunk_size).disease

    def encode_image_depth(self, pixel_values, grid_size, chunk_size: int | None = None) -> DepthEmbeddings:
        f = self.padded_window_features(pixel_values, grid_size, chunk_size)
        return self.encode_features_depth(f.cls, f.axis2, f.window_mask, f.grid_size)

    def localize(self, pixel_values, grid_size, input_ids, attention_mask, chunk_size=None) -> LocalizationOutput:
        depth = self.encode_image_depth(pixel_values, grid_size, chunk_size)
        snippets = self.encode_snippet(input_ids, attention_mask)
        return LocalizationOutput(depth.slice_emb, depth.valid_depth_mask, snippets)

    def forward(self, pixel_values=None, input_ids=None, attention_mask=None, grid_size=None) -> dict:
        out = {"image_embeddings": None, "text_embeddings": None}
        if pixel_values is not None:
            if grid_size is None:
                raise ValueError("grid_size is required with pixel_values")
            out["image_embeddings"] = self.encode_image_retrieval(pixel_values, grid_size)
        if input_ids is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            out["text_embeddings"] = self.encode_text(input_ids, attention_mask)
        if pixel_values is None and input_ids is None:
            raise ValueError("give pixel_values and/or input_ids")
        return out

    # ---------------------------------------------------------------- misc
    @property
    def logit_scale(self) -> torch.Tensor:
        return self.criterion.t.exp()

    @property
    def logit_bias(self) -> torch.Tensor:
        return self.criterion.b

    def save_pretrained(self, directory, preprocess=None) -> None:
        """Write a self-describing checkpoint directory (see `radfinder.models.pretrained_files`)."""
        save_pretrained(self, directory, preprocess=preprocess)

    @classmethod
    def from_pretrained(cls, directory, device=None, dtype=None) -> RadFinderModel:
        """Load a directory written by `save_pretrained` or an official HF export, in eval mode; `directory` may be a
        Hugging Face id `ORG/NAME[@REV]` (its repo id and commit are then in `model.hub_sources["checkpoint"]`)."""
        parts = read_pretrained_dir(directory)
        model = cls(parts.config, tokenizer=parts.tokenizer, text_weights=False)
        model.eval()  # before loading: LoRA state dicts hold merged (effective) weights, which eval mode keeps
        load_pretrained_weights(model, parts.weights)
        model.preprocess_spec = parts.spec
        model.label_vocabulary = read_vocabulary(parts.directory)
        model.calibration = read_calibration(parts.directory)
        model.checkpoint_dir = parts.directory
        if parts.source is not None:
            model.hub_sources["checkpoint"] = parts.source.as_dict()
        if parts.tokenizer_source is not None:
            model.hub_sources["tokenizer"] = parts.tokenizer_source.as_dict()
        model._tokenizer_error = parts.tokenizer_error
        model.derived_from = dict(parts.derived_from or {})
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return model
