"""Training objectives: global SigLIP (single and multi-process), disease-prompt BCE, intra-scan localization."""

from ._validate import LossInputError
from .combined import CombinedLoss, LossWeights, combine_losses
from .localization import GaussianLocalizationLoss, gaussian_localization_loss, gaussian_localization_loss_from_index
from .prompt import (
    DEFAULT_GROUP_WEIGHTS,
    pos_weight_from_labels,
    prompt_bce_loss,
    question_group_weights,
    select_prompts,
)
from .siglip import SigLipLoss, batch_bias_init, siglip_loss
from .siglip_dist import siglip_loss_distributed
from .siglip_terms import SiglipOutput

__all__ = [
    "DEFAULT_GROUP_WEIGHTS",
    "CombinedLoss",
    "GaussianLocalizationLoss",
    "LossInputError",
    "LossWeights",
    "SigLipLoss",
    "SiglipOutput",
    "batch_bias_init",
    "combine_losses",
    "gaussian_localization_loss",
    "gaussian_localization_loss_from_index",
    "pos_weight_from_labels",
    "prompt_bce_loss",
    "question_group_weights",
    "select_prompts",
    "siglip_loss",
    "siglip_loss_distributed",
]
