"""Report generation from a RadFinder model's outputs.

- `bank`: the generator bank fitted on the training split (thresholds, sentence banks), saved as JSON;
- `writer`: one report from a scan's zero-shot probabilities and depth-cell embeddings (the `model` generator);
- `fit`: fitting a bank with a model on a dataset and generating for records.
The neural path (volume and depth-cell tokens as a prefix to a causal language model with LoRA) is
`radfinder.models.prefix_lm` + `radfinder.train.prefix_lm`: tested with a tiny random language model only, never
presented as a result.
"""

from .bank import BankError, GeneratorBank, f1_threshold, fit_bank
from .writer import GeneratedReport, ReportWriter, ScanOutputs

__all__ = ["BankError", "GeneratedReport", "GeneratorBank", "ReportWriter", "ScanOutputs", "f1_threshold", "fit_bank"]
