"""Frozen window-encoder features: extraction once per dataset, and the compressed on-disk cache."""

from .collate import FeatureBatch, collate_features
from .extract import ExtractItem, ExtractSummary, extract_features, items_from_paths, parse_shard, select_shard
from .stats import feature_statistics
from .store import FeatureCacheError, FeatureRecord, FeatureStore, state_dict_hash

__all__ = [
    "FeatureBatch",
    "collate_features",
    "ExtractItem",
    "ExtractSummary",
    "FeatureCacheError",
    "FeatureRecord",
    "FeatureStore",
    "extract_features",
    "feature_statistics",
    "items_from_paths",
    "parse_shard",
    "select_shard",
    "state_dict_hash",
]
