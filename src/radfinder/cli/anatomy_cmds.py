"""`radfinder anatomy`: per-anatomy voxel counts and volumes of an organ segmentation."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .app import app
from .common import print_json


@app.command("anatomy")
def anatomy(
    seg: Path = typer.Argument(..., help="Multilabel segmentation NIfTI, or a folder of <class name>.nii.gz masks."),
    groups: Path = typer.Option(
        None, "--groups", help="Anatomy-groups YAML (default: fVLM's lung/heart/esophagus/aorta)."
    ),
    spec: str = typer.Option(
        None, "--spec", help="Also count on this preprocessing spec's grid (preset or YAML) and flag crop cuts."
    ),
    no_lesions: bool = typer.Option(False, "--no-lesions", help="Do not count lesion classes in their anatomy."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Voxels and volume (ml) per anatomy; zero for an anatomy that is not present."""
    from ..data.anatomy import (
        anatomy_masks_on_grid,
        anatomy_volumes,
        load_anatomy_groups,
        read_segmentation,
        touches_border,
    )

    g = load_anatomy_groups(groups)
    s = read_segmentation(seg, g)
    result = {"source": str(seg), "mask_hash": s.hash(), "anatomies": anatomy_volumes(s, g, lesions=not no_lesions)}
    if spec is not None:
        masks, _ = anatomy_masks_on_grid(s, g, spec, lesions=not no_lesions)
        for a, m in masks.items():
            result["anatomies"][a]["grid_voxels"] = int(m.sum())
            result["anatomies"][a]["cut_by_crop"] = touches_border(m)
    if json_out:
        print_json(result)
        return
    for name, v in result["anatomies"].items():
        extra = f"\t{v['grid_voxels']} grid voxels{' (cut by the crop)' if v['cut_by_crop'] else ''}" if spec else ""
        typer.echo(f"{name}\t{v['voxels']} voxels\t{v['ml']:.1f} ml{extra}")


@app.command("anatomy-text")
def anatomy_text(
    file: str = typer.Argument(..., help="Plain-text report ('-' for stdin); findings and impression are split."),
    lang: str = typer.Option("auto", "--lang", help="en, de or auto."),
    backend: str = typer.Option("rules", "--backend", help="rules (offline) or llm (OpenAI-compatible API)."),
    rules: Path = typer.Option(None, "--rules", help="Anatomy text-rules YAML (default: the built-in EN/DE rules)."),
    llm_base_url: str = typer.Option(None, "--llm-base-url", help="Default: $RADFINDER_LLM_BASE_URL."),
    llm_model: str = typer.Option(None, "--llm-model", help="Default: $RADFINDER_LLM_MODEL."),
    llm_cache: Path = typer.Option(None, "--llm-cache", help="Answer cache folder (default: none)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Per-anatomy report text (fVLM convention), the abnormal flag per anatomy, and each sentence's anatomy."""
    from ..errors import ConfigError
    from ..text.anatomy import LLMAssigner, RuleAssigner, anatomy_texts, assign_sentences, load_text_rules
    from ..text.sections import detect_language, split_sections

    if file == "-":
        text = sys.stdin.read()
    elif Path(file).is_file():
        text = Path(file).read_text(encoding="utf-8", errors="replace")
    else:
        raise ConfigError(f"input file not found: {file}")
    secs = split_sections(text)
    language = detect_language(text) if lang == "auto" else lang
    if language not in ("en", "de"):
        raise ConfigError(f"--lang must be en, de or auto, got {lang!r}")
    rule_set = load_text_rules(rules)
    if backend == "rules":
        assigner = RuleAssigner(rule_set)
    elif backend == "llm":
        from ..text.llm import LLMConfig

        cfg = LLMConfig.from_env(base_url=llm_base_url, model=llm_model, cache_dir=llm_cache)
        assigner = LLMAssigner(cfg, fallback=RuleAssigner(rule_set))
    else:
        raise ConfigError(f"unknown backend {backend!r}; choose rules or llm")
    texts = anatomy_texts(secs.findings, secs.impressions, language, assigner, rule_set)
    sents = assign_sentences(secs.findings, secs.impressions, language, assigner)
    result = {
        "lang": language,
        "anatomies": {a: {"abnormal": t.abnormal, "text": t.text} for a, t in texts.items()},
        "sentences": [
            {
                "section": s.section,
                "text": s.text,
                "anatomy": s.anatomy,
                "anatomies": list(s.anatomies),
                "abnormal": s.abnormal,
            }
            for s in sents
        ],  # fmt: skip
    }
    if json_out:
        print_json(result)
        return
    for a, v in result["anatomies"].items():
        typer.echo(f"{a}\t{'abnormal' if v['abnormal'] else 'normal'}\t{v['text']}")


@app.command("anatomy-text-accuracy")
def anatomy_text_accuracy(
    cohort: Path = typer.Argument(..., help="Synthetic cohort folder (with truth.jsonl) from `radfinder synth`."),
    rules: Path = typer.Option(None, "--rules", help="Anatomy text-rules YAML (default: the built-in EN/DE rules)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Sentence-to-anatomy accuracy of the rule assigner against the generator's lesion truth (EN and DE)."""
    from ..eval.anatomy_text import measure_sentence_anatomy
    from ..text.anatomy import RuleAssigner, load_text_rules

    res = measure_sentence_anatomy(cohort, RuleAssigner(load_text_rules(rules)))
    if json_out:
        print_json(res)
        return
    for lang in ("en", "de"):
        r = res[lang]
        typer.echo(
            f"{lang}: sentence accuracy {r['sentence_accuracy']:.4f} ({r['finding_sentences']} finding sentences), "
            f"abnormal flag {r['abnormal_flag_accuracy']:.4f}, negations {r['negation_accuracy']:.4f} "
            f"({r['negation_sentences']}), per-anatomy flag {r['anatomy_flag_accuracy']:.4f}, "
            f"unaligned studies {r['unaligned_studies']}"
        )
