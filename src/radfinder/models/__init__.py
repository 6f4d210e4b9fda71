"""RadFinder model: window encoders, feature combiner, projection heads, text tower, checkpoints."""

from .astra import load_astra_resnet152
from .combiner import (
    DepthOutput,
    FeatureCombiner,
    GlobalOutput,
    grids_from_mask,
    masked_mean,
    pad_feature_grids,
    window_mask_from_grids,
    windows_to_grids,
)
from .config import (
    PRESETS,
    CombinerConfig,
    HeadConfig,
    LoraConfig,
    RadFinderConfig,
    TextConfig,
    WindowEncoderConfig,
    resolve_model_config,
)
from .filterbank import FilterBankWindowEncoder
from .heads import ProjectionHead, SigLIPScale
from .histogram import HistogramWindowEncoder
from .light3d import Light3DWindowEncoder
from .lora import LoRALinear, add_lora, load_lora_base_state_dict, lora_parameters
from .official import LoadReport, config_from_official, load_official_state_dict, load_spectre_components
from .pretrained import from_pretrained, save_pretrained
from .radfinder import (
    DepthEmbeddings,
    ImageEmbeddings,
    LocalizationOutput,
    PaddedWindowFeatures,
    RadFinderModel,
    build_window_encoder,
    pad_window_features,
)
from .resnet3d import ResNet3dWindowEncoder
from .rope import Rope3D, apply_rope, rope_periods, rope_sin_cos
from .text import minilm_dir, pool_hidden, qwen3_config
from .window_encoder import (
    WINDOW_ENCODERS,
    ViTWindowEncoder,
    WindowEncoder,
    WindowFeatures,
    fold_patch_embed,
    register_window_encoder,
)

__all__ = [
    "PRESETS",
    "WINDOW_ENCODERS",
    "CombinerConfig",
    "DepthEmbeddings",
    "DepthOutput",
    "FeatureCombiner",
    "GlobalOutput",
    "HeadConfig",
    "ImageEmbeddings",
    "LoRALinear",
    "LoadReport",
    "LocalizationOutput",
    "LoraConfig",
    "PaddedWindowFeatures",
    "ProjectionHead",
    "RadFinderConfig",
    "RadFinderModel",
    "Rope3D",
    "SigLIPScale",
    "TextConfig",
    "ViTWindowEncoder",
    "WindowEncoder",
    "WindowEncoderConfig",
    "WindowFeatures",
    "ResNet3dWindowEncoder",
    "FilterBankWindowEncoder",
    "HistogramWindowEncoder",
    "load_astra_resnet152",
    "Light3DWindowEncoder",
    "add_lora",
    "apply_rope",
    "build_window_encoder",
    "config_from_official",
    "fold_patch_embed",
    "grids_from_mask",
    "from_pretrained",
    "load_lora_base_state_dict",
    "load_official_state_dict",
    "load_spectre_components",
    "lora_parameters",
    "masked_mean",
    "minilm_dir",
    "pad_feature_grids",
    "pad_window_features",
    "pool_hidden",
    "qwen3_config",
    "register_window_encoder",
    "resolve_model_config",
    "rope_periods",
    "rope_sin_cos",
    "save_pretrained",
    "window_mask_from_grids",
    "windows_to_grids",
]
