"""Training objectives: global SigLIP (single and multi-process), disease-prompt BCE, intra-scan localization,
fVLM's anatomy-level contrast, and the soft-target contrastive loss (SCALE-VLP style)."""

from . import fvlm_objective as _fvlm_objective  # noqa: F401  (registers fvlm after the built-in objectives)
from . import objectives as _builtin_objectives  # noqa: F401  (registers the built-in objectives)
from ._validate import LossInputError
from .combined import RADFINDER_WEIGHTS, CombinedLoss, LossWeights, combine_losses
from .fvlm import (
    FvlmLoss,
    FvlmOutput,
    FvlmTemperature,
    anatomy_finding_ids,
    finding_set_ids,
    fvlm_loss,
    fvlm_loss_terms,
    fvlm_text_ids,
)
from .localization import GaussianLocalizationLoss, gaussian_localization_loss, gaussian_localization_loss_from_index
from .prompt import (
    DEFAULT_GROUP_WEIGHTS,
    pos_weight_from_labels,
    prompt_bce_loss,
    question_group_weights,
    select_prompts,
)
from .registry import (
    LossSettings,
    Objective,
    ObjectiveContext,
    StepTerm,
    get_objective,
    objective_names,
    register_leaves,
    register_objective,
)
from .siglip import SigLipLoss, batch_bias_init, siglip_loss
from .siglip_dist import siglip_loss_distributed
from .siglip_terms import SiglipOutput
from .soft_contrastive import soft_contrastive_loss
from .soft_targets import VolumeProfiles, report_soft_targets, soft_target_pair, soft_targets, spatial_similarity

__all__ = [
    "DEFAULT_GROUP_WEIGHTS",
    "CombinedLoss",
    "FvlmLoss",
    "FvlmOutput",
    "FvlmTemperature",
    "GaussianLocalizationLoss",
    "LossInputError",
    "LossSettings",
    "LossWeights",
    "Objective",
    "ObjectiveContext",
    "RADFINDER_WEIGHTS",
    "StepTerm",
    "SigLipLoss",
    "SiglipOutput",
    "anatomy_finding_ids",
    "batch_bias_init",
    "combine_losses",
    "finding_set_ids",
    "fvlm_loss",
    "fvlm_loss_terms",
    "fvlm_text_ids",
    "gaussian_localization_loss",
    "get_objective",
    "objective_names",
    "gaussian_localization_loss_from_index",
    "pos_weight_from_labels",
    "prompt_bce_loss",
    "question_group_weights",
    "register_leaves",
    "register_objective",
    "report_soft_targets",
    "VolumeProfiles",
    "select_prompts",
    "siglip_loss",
    "siglip_loss_distributed",
    "soft_contrastive_loss",
    "soft_target_pair",
    "soft_targets",
    "spatial_similarity",
]
