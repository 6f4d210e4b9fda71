"""High-level inference on raw scans: load a model, embed scans and text, classify findings, localize sentences.

    model = load_model("checkpoints/radfinder")           # device "auto": CUDA when present
    model = load_model("lmb-freiburg/radfinder")           # or a Hugging Face id (ORG/NAME[@REV]), cached
    enc = encode_volume(model, "scan.nii.gz")              # retrieval / disease / per-depth-cell embeddings
    scores = classify(model, enc)                          # 18 CT-RATE findings, mean7 prompts
    where = localize(model, enc, ["Small nodule in the right lower lobe."])
    report = generate_report(model, enc)                   # findings + impression (a bank fitted on train)

Every scan goes through the checkpoint's own preprocessing spec (`model.preprocess_spec`). The CLI commands
`radfinder embed / classify / calibrate / localize / generate / generate-fit` mirror these functions.
"""

from .calibrate import calibrate
from .classify import FindingScore, PromptEmbeddings, calibrated_logits, classify, prompt_embeddings
from .depth import SourceSlice, cell_depths, nearest_source_slice, source_z_range
from .encode import VolumeEncoding, encode_query, encode_text, encode_volume, encode_window_array
from .generate import ReportGenerator, fit_generator, generate_report, prepare_generator
from .localize import SentenceLocation, depth_probabilities, localize
from .model import load_model, preprocess_for

__all__ = [
    "FindingScore",
    "PromptEmbeddings",
    "ReportGenerator",
    "SentenceLocation",
    "SourceSlice",
    "VolumeEncoding",
    "calibrate",
    "calibrated_logits",
    "cell_depths",
    "classify",
    "depth_probabilities",
    "encode_query",
    "encode_text",
    "encode_volume",
    "encode_window_array",
    "fit_generator",
    "generate_report",
    "load_model",
    "localize",
    "nearest_source_slice",
    "prepare_generator",
    "preprocess_for",
    "prompt_embeddings",
    "source_z_range",
]
