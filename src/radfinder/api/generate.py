"""`generate_report`: a findings and impression section for one scan, written by the offline `model` generator
(`radfinder.eval.generation.writer`) from the model's zero-shot probabilities and depth grounding, with sentences and
thresholds from a generator bank fitted on a training split (`fit_generator`, `radfinder generate-fit`).

    model = load_model("runs/demo/checkpoints/latest/model")
    report = generate_report(model, "scan.nii.gz")               # bank: <checkpoint>/generator_bank.json
    print(report.findings, report.impression, sep="\\n")

With a segmentation (`seg`, TotalSegmentator layout, on the scan's grid or any grid in world space) a finding is
only placed in depth cells holding its anatomy, and the classes found there are reported beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RadfinderError
from ..eval.generation.bank import BankError, GeneratorBank
from ..eval.generation.fit import check_bank_model, fit_generator_bank, writer_for, zero_shot_scores
from ..eval.generation.writer import GeneratedReport, ReportWriter, ScanOutputs
from ..eval.tasks import prompt_embeddings
from .encode import VolumeEncoding, encode_volume
from .model import ScanInput

BANK_FILE = "generator_bank.json"


def default_bank_path(model) -> Path:
    """`<checkpoint>/generator_bank.json` for a model loaded from a checkpoint directory."""
    src = str(getattr(model, "source", "") or "")
    if not src or src.startswith("preset:"):
        raise BankError("the model was not loaded from a checkpoint directory: pass the generator bank (--bank)")
    return Path(src) / BANK_FILE


def resolve_bank(model, bank: str | Path | GeneratorBank | None) -> GeneratorBank:
    if isinstance(bank, GeneratorBank):
        check_bank_model(bank, model)
        return bank
    path = Path(bank) if bank is not None else default_bank_path(model)
    out = GeneratorBank.load(path)
    check_bank_model(out, model, str(path))
    return out


def cell_classes(model, enc: VolumeEncoding, seg: str | Path) -> list[dict[str, list[str]]]:
    """Per depth cell of the encoded scan: {anatomy: [segmentation classes with voxels in that cell]}."""
    from ..data.anatomy import labels_on_grid, load_anatomy_groups, read_segmentation

    segm = read_segmentation(seg)
    pre = enc.preprocessed
    labels, _ = labels_on_grid(segm, model.preprocess_spec, image_shape=tuple(pre.source_shape),
                               image_affine=np.asarray(pre.source_affine))  # fmt: skip
    k = int(pre.depth_cell)
    groups = load_anatomy_groups()
    ids = segm.anatomy_ids(groups, lesions=False)
    names = {**{i: n for n, i in groups.classes.items()}, **segm.names}
    out = []
    for c in range(enc.n_depth_cells):
        slab = labels[:, :, c * k : (c + 1) * k]
        present = set(np.unique(slab).tolist()) if slab.size else set()
        out.append({a: [names.get(i, str(i)) for i in members if i in present] for a, members in ids.items()})
    return out


@dataclass
class ReportGenerator:
    """A bank with its sentences and prompts embedded by one model: pass it to `generate_report` as `generator=`
    to write many reports without re-embedding text (as `prompt_embeddings` does for `classify`)."""

    bank: GeneratorBank
    writer: ReportWriter
    prompts: tuple[np.ndarray, np.ndarray]


def prepare_generator(model, bank: str | Path | GeneratorBank | None = None) -> ReportGenerator:
    b = resolve_bank(model, bank)
    return ReportGenerator(b, writer_for(model, b, check=False), prompt_embeddings(model, b.findings))


def generate_report(
    model,
    scan: ScanInput | VolumeEncoding,
    bank: str | Path | GeneratorBank | None = None,
    *,
    seg: str | Path | None = None,
    generator: ReportGenerator | None = None,
    chunk_size: int = 8,
) -> GeneratedReport:
    """Findings and impression for one scan (path, `Volume`, `Preprocessed` or a `VolumeEncoding`); `bank`
    defaults to `<checkpoint>/generator_bank.json` and must have been fitted for these exact weights."""
    if generator is not None and bank is not None:
        raise RadfinderError("give a bank or a prepared generator, not both")
    gen = generator or prepare_generator(model, bank)
    enc = scan if isinstance(scan, VolumeEncoding) else encode_volume(model, scan, chunk_size=chunk_size)
    probs = zero_shot_scores(model, enc.disease[None], gen.bank.findings, gen.prompts)[0]
    classes = cell_classes(model, enc, seg) if seg is not None else None
    return gen.writer.write(ScanOutputs(probs, enc.depth, enc.depth_valid, enc.depth_z_mm, classes))


def fit_generator(
    model, train_records: Sequence[Any], out: str | Path | None = None, *, features: str | Path | None = None,
    min_df: float = 0.2, max_variants: int = 32, show_progress: bool = False,
) -> GeneratorBank:
    """Fit a generator bank on training records (see `radfinder.eval.generation.bank`); saved to `out` when given
    (default for the CLI: `<checkpoint>/generator_bank.json`)."""
    if not train_records:
        raise RadfinderError("no training records to fit a generator bank on")
    bank = fit_generator_bank(model, train_records, features=features, min_df=min_df, max_variants=max_variants,
                              show_progress=show_progress)  # fmt: skip
    if out is not None:
        bank.save(out)
    return bank
