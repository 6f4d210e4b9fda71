"""Pieces a run is assembled from: the model, the prompt tokens, label statistics and the run fingerprint."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..losses.prompt import pos_weight_from_labels
from ..losses.registry import LossSettings, Objective, active_objectives, needed_batch_fields, objective_names
from ..models.config import PRESETS, RadFinderConfig, resolve_model_config
from ..models.lora import add_lora
from ..models.pretrained_files import weights_origin
from ..text.findings import CTRATE_FINDINGS
from ..text.vocabulary import DEFAULT_VOCABULARY, resolve_vocabulary
from .config import RESUME_FREE, ModelSection, TrainConfig
from .data import TrainSource
from .fields import check_batch_fields


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def is_checkpoint_dir(init: str) -> bool:
    """A checkpoint folder, or a Hugging Face id `ORG/NAME[@REV]` of one (`radfinder.models.hub`)."""
    from ..models.hub import looks_like_hub_id

    return (Path(init).is_dir() and (Path(init) / "config.json").is_file()) or looks_like_hub_id(init)


def build_model(section: ModelSection):
    """A RadFinderModel in train mode, from a preset/YAML plus overrides, or from a checkpoint directory."""
    from ..models.pretrained import from_pretrained
    from ..models.radfinder import RadFinderModel

    if is_checkpoint_dir(section.init):
        if section.overrides:
            raise ConfigError("model.overrides cannot change a checkpoint's architecture; leave it empty when "
                              f"model.init is a checkpoint directory ({section.init})")
        if section.spectre:
            raise ConfigError("model.spectre initialises a preset or YAML model; model.init is already a checkpoint "
                              f"({section.init})")
        model = from_pretrained(section.init)
    else:
        if section.init not in PRESETS and not Path(section.init).is_file():
            raise ConfigError(f"model.init {section.init!r} is neither a preset ({', '.join(PRESETS)}), a model YAML, "
                              "a checkpoint directory nor a Hugging Face id (ORG/NAME[@REV])")
        base = resolve_model_config(section.init).model_dump()
        try:
            cfg = RadFinderConfig.model_validate(_deep_merge(base, section.overrides))
        except Exception as exc:
            raise ConfigError(f"invalid model.overrides:\n{exc}") from exc
        model = RadFinderModel(cfg)
        if section.spectre:
            from ..models.spectre import load_spectre

            load_spectre(model, section.spectre)
    if section.anatomy is not None and model.config.anatomy != section.anatomy:
        model.add_anatomy_head(section.anatomy)
    if section.text_lora is not None and model.config.text.lora is None:
        lc = section.text_lora
        add_lora(model.backbone_text, lc.targets, lc.r, lc.alpha, lc.dropout)
        model.config = model.config.model_copy(update={"text": model.config.text.model_copy(update={"lora": lc})})
    if section.preprocess is not None:
        from ..preprocess.spec import resolve_spec

        model.preprocess_spec = resolve_spec(section.preprocess)
    if model.tokenizer is None:
        raise ConfigError("the model's text tower has no tokenizer files; training needs one (text.tokenizer)")
    # training changes the weights: released ones it starts from are its origin (saved as `derived_from` in every
    # checkpoint's config.json), no longer what the model is
    model.derived_from = weights_origin(model)
    model.hub_sources = {}
    return model.train()


def prompt_texts(bank_path: str | None, findings: Sequence[str] = CTRATE_FINDINGS,
                 ) -> tuple[list[str], tuple[int, int, int]]:
    """All disease prompts of the vocabulary's `findings` in (finding, phrasing, positive/negative) order, and that
    shape."""
    from ..text.prompts import load_prompt_bank

    bank = load_prompt_bank(bank_path)
    texts: list[str] = []
    n_var = None
    for finding in findings:
        pos, neg = bank.disease_prompts(finding)
        if len(pos) != len(neg):
            raise ConfigError(f"prompt bank: {finding!r} has {len(pos)} positive but {len(neg)} negative prompts")
        n_var = n_var or len(pos)
        if len(pos) != n_var:
            raise ConfigError("prompt bank: every finding needs the same number of phrasings")
        for p, n in zip(pos, neg, strict=True):
            texts += [p, n]
    return texts, (len(findings), int(n_var or 0), 2)


def training_labels(sources: list[TrainSource]) -> torch.Tensor:
    import numpy as np

    labels = np.concatenate([np.stack([np.asarray(r.labels, dtype=np.float32) for r in s.records]) for s in sources])
    return torch.from_numpy(labels.astype(np.int64))


def pos_weight(sources: list[TrainSource], cap: float) -> torch.Tensor:
    return pos_weight_from_labels(training_labels(sources), cap=cap)


def loss_setup(cfg: TrainConfig, model, sources: list[TrainSource], prompt_shape: tuple[int, int, int], vocab,
               device) -> tuple[list[Objective], list[str], LossSettings]:
    """The active objectives (registry), the extra batch fields they read, and the run's `LossSettings`."""
    objectives = active_objectives(cfg.losses.weights)
    if not objectives:
        raise ConfigError("losses.weights gives no objective a non-zero weight; nothing to train "
                          f"(registered objectives: {', '.join(objective_names())})")
    fields = check_batch_fields(needed_batch_fields(objectives))
    settings = LossSettings(
        weights=cfg.losses.weights, sigma=model.config.localization_sigma, tau=model.config.localization_tau,
        prompt_mode=cfg.losses.prompt_mode, pos_weight=pos_weight(sources, cfg.losses.pos_weight_cap).to(device),
        question_weight=torch.full((prompt_shape[0],), cfg.losses.prompt_question_weight, device=device),
        siglip_chunk=cfg.losses.siglip_chunk, label_names=vocab.findings,
        options={k: dict(v) for k, v in cfg.losses.options.items()},
    )
    return objectives, fields, settings


def _drop(data: dict, dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if head not in data:
        return
    if rest:
        if isinstance(data[head], dict):
            _drop(data[head], rest)
    else:
        del data[head]


PATH_FIELDS = ("root", "features", "pairs", "labels_csv")


def fingerprint(cfg: TrainConfig, model, sources: list[TrainSource], feature_identity: list[dict] | None,
                world_size: int) -> dict[str, Any]:
    """What must be equal for a checkpoint to be resumed by this run: contents, not file locations. The starting
    weights count by their hash (`model.init` is a path): a run re-started from another initial model (e.g. a
    re-standardised combiner) must not resume the old run's checkpoints."""
    from ..features import state_dict_hash

    conf = cfg.model_dump(mode="json")
    for key in RESUME_FREE:
        _drop(conf, key)
    _drop(conf, "model.init")
    for d in conf["data"]["datasets"]:
        for k in PATH_FIELDS:
            d.pop(k, None)
    conf["data"].pop("prompt_bank", None)
    if not conf["losses"].get("options"):  # absent before the objective registry: old runs still resume
        conf["losses"].pop("options", None)
    data = []
    for i, s in enumerate(sources):
        entry = {"name": s.name, "records": len(s.records), "content": s.fingerprint()}
        if feature_identity is not None:
            entry["feature_cache"] = feature_identity[i]
        data.append(entry)
    vocab = resolve_vocabulary(cfg.data.vocabulary)
    if vocab.name == DEFAULT_VOCABULARY and vocab.findings == CTRATE_FINDINGS:
        conf["data"].pop("vocabulary", None)  # absent before vocabularies: old runs still resume
    else:
        conf["data"]["vocabulary"] = vocab.model_dump(mode="json")  # its content, not a file location
    texts, _ = prompt_texts(cfg.data.prompt_bank, vocab.findings)
    model_conf = model.config.model_dump(mode="json")
    for k in ("path", "tokenizer"):  # locations of the text files, not their contents
        model_conf["text"].pop(k, None)
    return {
        "config": conf,
        "model": model_conf,
        "data": data,
        "prompts": hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16],
        "init_weights": state_dict_hash(model),
        "world_size": world_size,
    } | ({"init_source": model.derived_from} if getattr(model, "derived_from", None) else {})
