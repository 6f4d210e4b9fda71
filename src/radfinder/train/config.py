"""`TrainConfig`: everything a training run needs, as one typed, YAML-loadable object.

Loaded with `radfinder.config.load_config(TrainConfig, path, overrides)`; the resolved config is written to
`<out>/config.yaml`. Field defaults follow the paper's recipe (method notes 1.5-1.6) where they are batch-size
independent; the demo and official presets in `configs/train/` set the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import load_config
from ..losses.combined import LossWeights
from ..losses.registry import check_objective_names
from ..models.config import AnatomyHeadConfig, LoraConfig
from ..models.hub import parse_hub_id
from ..models.text_topk import top_layers
from ..text.vocabulary import DEFAULT_VOCABULARY, LabelVocabulary


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Strict):
    # A preset name (tiny, small, radfinder-vitl), a model YAML, a checkpoint directory, or a Hugging Face id
    # ORG/NAME[@REV] of one (e.g. lmb-freiburg/radfinder) to start from.
    init: str = "tiny"
    # SPECTRE component files (a folder or a hub id, e.g. cclaess/SPECTRE) that initialise a preset / YAML model:
    # RadFinder's own starting point (`radfinder.models.spectre`). Not with a checkpoint `init`.
    spectre: str | None = None
    # Deep-merged over the preset's RadFinderConfig, e.g. {"text": {"source": "hf", "path": "/models/bert"}}.
    # Ignored (must be empty) when `init` is a checkpoint directory: a checkpoint carries its own config.
    overrides: dict[str, Any] = Field(default_factory=dict)
    # Which text-tower parameters train: all; only the LoRA adapters (the model config must have text.lora);
    # only the last k transformer layers (`top<k>`, e.g. top2: the frozen layers below are computed once per text,
    # radfinder.models.text_topk); or none (the text projection heads still train).
    text_train: str = "all"
    # Preprocessing spec for raw-volume training (preset name or file); default: the model's own spec.
    preprocess: str | None = None
    # fVLM's anatomy head (model config section `anatomy`): added, freshly initialised, to a model that has none
    # (e.g. a RadFinder checkpoint), or replacing one with other settings; None keeps the model's own.
    anatomy: AnatomyHeadConfig | None = None
    # LoRA adapters added to the text tower of an initial model that has none (e.g. a checkpoint with a plain MiniLM),
    # so `text_train: lora` can adapt it; recorded in the model's config (text.lora), so checkpoints keep them.
    text_lora: LoraConfig | None = None

    @field_validator("text_train")
    @classmethod
    def _text_train(cls, value: str) -> str:
        if value in ("all", "lora", "frozen") or top_layers(value) is not None:
            return value
        raise ValueError(f"must be all, lora, frozen or top<k> (e.g. top2), got {value!r}")


class DatasetSection(_Strict):
    kind: Literal["ctrate", "manifest"]
    root: str  # CT-RATE folder (ctrate) or the manifest CSV/JSONL file (manifest)
    split: str = "trainnodev"
    mode: Literal["first_all", "dup_all"] = "first_all"  # CT-RATE only
    weight: float = Field(1.0, gt=0.0)  # share of each epoch drawn from this dataset, relative to the others
    features: str | None = None  # frozen-feature cache directory (features mode)
    pairs: str | None = None  # snippet-pairs file (pairs.jsonl) for the localization loss
    labels_csv: str | None = None  # labels override (e.g. written by `radfinder label`); CT-RATE column names
    name: str | None = None  # used in logs and checkpoints; default: kind + index


class AugmentSection(_Strict):
    # Random crop of the preprocessed volume, in windows (H, W, D); smaller axes keep the whole volume.
    crop_windows: tuple[int, int, int] = (3, 3, 4)
    flip_prob: float = Field(0.5, ge=0.0, le=1.0)  # per axis
    encoder_batch: int = Field(8, ge=1)  # windows per frozen-encoder forward
    preprocessed_cache: str | None = None  # keep preprocessed volumes on disk between epochs


class DataSection(_Strict):
    datasets: list[DatasetSection] = Field(default_factory=list)
    # features: train the combiner on the frozen-feature caches (the paper's recipe);
    # raw: read volumes, augment (random crop + flips) and run the frozen window encoder on the fly.
    source: Literal["features", "raw"] = "features"
    augment: AugmentSection = Field(default_factory=AugmentSection)
    samples_per_epoch: int | None = None  # default: the number of training records over all datasets
    max_snippets_per_scan: int = Field(4, ge=0)  # snippets drawn per scan and step (0 disables localization data)
    prompt_bank: str | None = None  # prompt YAML merged over the built-in bank
    # The label vocabulary (what each position of the label vector means; saved in every checkpoint): a name
    # (ctrate18, the 18 CT-RATE findings), a YAML/JSON file or an inline {name, findings}. Another vocabulary than
    # ctrate18 needs each dataset's labels_csv with its columns and prompts for its findings in the prompt bank.
    vocabulary: str | LabelVocabulary = DEFAULT_VOCABULARY

    @model_validator(mode="after")
    def _check(self) -> DataSection:
        names = [d.name for d in self.datasets if d.name]
        if len(names) != len(set(names)):
            raise ValueError("dataset names must be unique")
        return self


class LossSection(_Strict):
    # Objective weights by name (registry: radfinder.losses.registry); an objective not listed has weight 0.
    # Default: RadFinder's {siglip: 1, localization: 1, prompt: 8}.
    weights: LossWeights = Field(default_factory=LossWeights)
    # Settings of registered objectives by name (e.g. swca: {alpha: 1, beta: 0.5, gamma: 0.5}); RadFinder's
    # objectives keep their own fields below.
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # SigLIP scale and bias at the start: None keeps the model's (a preset's t_init = ln 10 and b_init = -10, or the
    # values a checkpoint learned: fine-tuning must not reset them unless asked)
    t_init: float | None = None
    b_init: float | None = None
    # Localization target width (cells) and temperature live in the model's config (saved with every checkpoint and
    # used by evaluation and inference); a value here replaces the model's for this run and is saved with it.
    localization_sigma: float | None = Field(None, ge=0.0)
    localization_tau: float | None = Field(None, gt=0.0)
    prompt_mode: Literal["first_only", "mean_all", "random_1", "random_1_to_n"] = "random_1"
    pos_weight_cap: float = Field(20.0, gt=0.0)
    # Question-group weight of the 18 CT-RATE findings (method notes 1.5: ctrate 5.0 vs RATE questions 1.0).
    prompt_question_weight: float = Field(5.0, gt=0.0)
    siglip_chunk: int | None = None  # column chunking of the SigLIP logits (memory O(B * chunk))

    @model_validator(mode="after")
    def _check_options(self) -> LossSection:
        check_objective_names(list(self.options))
        return self


class OptimSection(_Strict):
    lr: float = Field(2e-4, gt=0.0)
    min_lr: float = Field(1e-6, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
    warmup_steps: int | None = None  # overrides warmup_epochs
    grad_clip: float | None = 1.0


class BatchSection(_Strict):
    micro: int = Field(16, ge=1)  # samples per forward with a graph (memory)
    accum: int = Field(256, ge=1)  # micro-batches per optimizer step; SigLIP negatives span all of them


class ScheduleSection(_Strict):
    epochs: float = Field(10.0, gt=0.0)
    max_steps: int | None = None  # stop earlier (the lr schedule still follows `epochs`)


class LoggingSection(_Strict):
    log_every: int = Field(1, ge=1)  # TensorBoard scalars every N steps (log.jsonl always has every step)
    tensorboard: bool = True
    progress: bool = True


class CheckpointSection(_Strict):
    every_steps: int = Field(500, ge=1)
    keep_last: int = Field(3, ge=1)
    final: bool = True  # also save at the end of training


class RetrievalEvalSection(_Strict):
    dataset: DatasetSection  # held-out split with its feature cache (e.g. CT-RATE valid or traindev)
    ks: tuple[int, ...] = (1, 5, 10)
    max_samples: int | None = None
    batch: int = Field(32, ge=1)


class EvalSection(_Strict):
    every_steps: int | None = None  # None: no periodic evaluation
    at_end: bool = True
    retrieval: RetrievalEvalSection | None = None


class DistributedSection(_Strict):
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    timeout_s: float = Field(600.0, gt=0.0)


class TrainConfig(_Strict):
    seed: int = 42
    device: str = "auto"
    precision: Literal["auto", "bf16", "fp32", "fp64"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the training step (worth it on long CUDA runs; first step compiles)
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    losses: LossSection = Field(default_factory=LossSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    batch: BatchSection = Field(default_factory=BatchSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    distributed: DistributedSection = Field(default_factory=DistributedSection)


# Sections that may change between a checkpoint and its resumption without changing the loss trajectory.
RESUME_FREE = ("logging", "checkpoint", "eval", "schedule.max_steps", "device", "distributed", "compile",
               "data.augment.encoder_batch", "data.augment.preprocessed_cache")


def load_train_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Load a YAML train config with `a.b=c` overrides; relative data paths resolve against the YAML's folder."""
    cfg = load_config(TrainConfig, path, overrides)
    if path is None:
        return cfg
    return resolve_paths(cfg, Path(path).resolve().parent)


def _resolve(value: str | None, base: Path) -> str | None:
    if value is None or value == "":
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _resolve_vocab(value, base: Path):
    if isinstance(value, str) and (value.endswith((".yaml", ".yml", ".json")) or "/" in value):
        return _resolve(value, base)
    return value


def _resolve_dataset(d: DatasetSection, base: Path) -> DatasetSection:
    upd = {k: _resolve(getattr(d, k), base) for k in ("root", "features", "pairs", "labels_csv")}
    return d.model_copy(update=upd)


def resolve_paths(cfg: TrainConfig, base: Path) -> TrainConfig:
    data = cfg.data.model_copy(update={
        "datasets": [_resolve_dataset(d, base) for d in cfg.data.datasets],
        "prompt_bank": _resolve(cfg.data.prompt_bank, base),
        "vocabulary": _resolve_vocab(cfg.data.vocabulary, base),
        "augment": cfg.data.augment.model_copy(
            update={"preprocessed_cache": _resolve(cfg.data.augment.preprocessed_cache, base)}),
    })
    model = cfg.model
    init = Path(model.init).expanduser()
    hub_id = parse_hub_id(model.init) is not None and not (base / init).exists()  # ORG/NAME[@REV], not a path
    if not init.is_absolute() and not hub_id and ("/" in model.init or (base / init).exists()):  # not a preset
        model = model.model_copy(update={"init": str((base / init).resolve())})
    spectre = model.spectre
    if spectre and (parse_hub_id(spectre) is None or (base / Path(spectre).expanduser()).exists()):  # a folder
        model = model.model_copy(update={"spectre": str((base / Path(spectre).expanduser()).resolve())})
    ev = cfg.eval
    if ev.retrieval is not None:
        ev = ev.model_copy(update={"retrieval": ev.retrieval.model_copy(
            update={"dataset": _resolve_dataset(ev.retrieval.dataset, base)})})
    return cfg.model_copy(update={"data": data, "model": model, "eval": ev})
