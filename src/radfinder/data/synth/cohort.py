"""`make_cohort`: plan patients and studies from a seed, render them in worker processes, write the tables.

Output (``out``):
  dicom/<study>/<SeriesNumber>/*.dcm          two reconstructions per study
  dataset/{train,valid}_fixed/<patient>/<study>/<volume>.nii.gz, radiology_text_reports/, multi_abnormality_labels/,
  metadata/                                    the CT-RATE layout and CSV schemas
  reports_de.csv                               German reports (Befund / Beurteilung), keyed by VolumeName
  masks/<volume>.nii.gz, masks/classes.json    segmentation of every exported volume (TotalSegmentator v2
                                               multilabel ids, lesions 201-218: see segmentation.py)
  truth.jsonl                                  one line per study: geometry, labels, lesions, reference spans
  cohort.json                                  the parameters and counts (no timings, so reruns are identical)
  preview/*.png                                with ``preview=True``

The "pretrain" and "probe" streams (see study.py) write only volumes/, masks/, truth.jsonl and cohort.json: what
encoder pre-training and a feature probe need, at a fraction of the time (no DICOM, no reports).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import RadfinderError
from ...progress import progress
from ...text.findings import CTRATE_FINDINGS
from .export import METADATA_COLUMNS
from .priors import FOLLOWUP_RESAMPLE, sample_labels, sample_studies_per_patient
from .render import RES
from .segmentation import SEG_CLASSES
from .study import STREAM_PREFIX, STREAMS, rng_for, run_study, run_volume_study

REPORT_COLUMNS = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
DE_COLUMNS = ["VolumeName", "Klinische_Angaben", "Technik", "Befund", "Beurteilung"]
_OWNED = ("dicom", "dataset", "preview", "truth.jsonl", "reports_de.csv", "cohort.json", "masks", "volumes")


def plan_cohort(
    n_studies: int, seed: int, *, valid_fraction: float = 0.2, res: str = "demo", transfer_syntax: str | None = None,
    stream: str = "cohort",
) -> list[dict[str, Any]]:
    """Patients, splits, labels and per-study choices; cheap and fully determined by the seed.

    Each patient draws from its own stream, so a smaller cohort is a prefix of a larger one with the same seed
    (up to the last patient's number of studies and the at-least-one-per-split rule for tiny cohorts)."""
    rngs: list[np.random.Generator] = []
    sizes: list[int] = []
    while sum(sizes) < n_studies:
        rngs.append(rng_for(seed, 0, len(rngs), stream))
        sizes.append(min(sample_studies_per_patient(rngs[-1]), n_studies - sum(sizes)))
    splits = ["valid" if r.random() < valid_fraction else "train" for r in rngs]
    if len(sizes) >= 2 and valid_fraction > 0 and "valid" not in splits:
        splits[-1] = "valid"
    if "train" not in splits:
        splits[0] = "train"
    ts = transfer_syntax or ("rle" if res == "demo" else "explicit_le")
    counters = {"train": 0, "valid": 0}
    plans: list[dict[str, Any]] = []
    for p_idx, (k, split, rng) in enumerate(zip(sizes, splits, rngs, strict=True)):
        counters[split] += 1
        patient = f"{STREAM_PREFIX[stream]}{split}_{counters[split]}"
        age, sex = int(rng.integers(30, 88)), str(rng.choice(["M", "F"]))
        date = dt.date(2016, 1, 1) + dt.timedelta(days=int(rng.integers(0, 6 * 365)))
        first = sample_labels(rng, 1)[0]
        prior = date - dt.timedelta(days=int(rng.integers(60, 900)))
        for j in range(k):
            labels = first if j == 0 else np.where(rng.random(18) < FOLLOWUP_RESAMPLE, sample_labels(rng, 1)[0], first)
            thin_no = int(rng.choice([2, 3, 4, 5, 201]))
            thick_no = int(rng.choice([n for n in (2, 3, 4, 5, 6, 202) if n != thin_no]))
            export = [["thin"], ["thick"], ["thin", "thick"], ["thick", "thin"]][
                int(rng.choice(4, p=[0.4, 0.35, 0.15, 0.1]))
            ]
            plans.append(
                {
                    "index": len(plans),
                    "patient_index": p_idx,
                    "patient": patient,
                    "split": split,
                    "study": f"{patient}_{chr(ord('a') + j)}",
                    "labels": [int(v) for v in labels],
                    "followup": j > 0,
                    "age": age + (date.year - 2016) // 3,
                    "sex": sex,
                    "date": date.strftime("%Y%m%d"),
                    "prior_date": prior.strftime("%m/%d/%Y"),
                    "prior_date_de": prior.strftime("%d.%m.%Y"),
                    "time": f"{int(rng.integers(7, 19)):02d}:{int(rng.integers(0, 60)):02d}",
                    "dlp": int(rng.integers(90, 600)),
                    "series_numbers": {"thin": thin_no, "thick": thick_no},
                    "instance_order": {
                        r: str(rng.choice(["ascending", "descending"], p=[0.6, 0.4])) for r in ("thin", "thick")
                    },
                    "export": export,
                    "transfer_syntax": ts,
                    "kernel": {
                        "thin": str(rng.choice(["B70f", "LUNG", "YC", "FC86"])),
                        "thick": str(rng.choice(["B31f", "STANDARD", "FC13"])),
                    },
                }
            )
            prior, date = date, date + dt.timedelta(days=int(rng.integers(60, 700)))
    return plans


def make_cohort(
    out: str | Path,
    n_studies: int,
    seed: int,
    res: str = "demo",
    *,
    preview: bool = False,
    n_preview: int = 6,
    workers: int | None = None,
    valid_fraction: float = 0.2,
    transfer_syntax: str | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    stream: str = "cohort",
) -> dict[str, Any]:
    """Generate a synthetic CT-RATE-like cohort with DICOM, NIfTI, EN/DE reports, segmentations and ground truth
    (stream "cohort"), or the volumes, segmentations and truth of a pre-training or probe cohort.

    Deterministic for a seed: reports, labels, truth, NIfTI and DICOM bytes repeat exactly. Returns a summary
    (paths, counts, bytes on disk)."""
    if res not in RES:
        raise RadfinderError(f"res must be one of {', '.join(RES)}, got {res!r}")
    if stream not in STREAMS:
        raise RadfinderError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
    if n_studies < 1:
        raise RadfinderError(f"n_studies must be at least 1, got {n_studies}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RadfinderError(f"{out}: output folder is not empty (use overwrite to replace a previous cohort)")
        for name in _OWNED:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_cohort(
        n_studies, seed, valid_fraction=valid_fraction, res=res, transfer_syntax=transfer_syntax, stream=stream
    )
    workers = max(1, min(workers or os.cpu_count() or 1, n_studies))
    results: list[dict[str, Any] | None] = [None] * len(plans)
    if stream == "cohort":
        fn, jobs = run_study, [(p, str(out), res, seed, preview and p["index"] < n_preview) for p in plans]
    else:
        fn, jobs = run_volume_study, [(p, str(out), res, seed, stream) for p in plans]
    if workers == 1:
        for job in progress(jobs, total=len(jobs), desc=f"synth {stream}", enabled=show_progress):
            results[job[0]["index"]] = fn(*job)
    else:
        import multiprocessing as mp

        # spawn: workers must not inherit a parent's threads (torch, tqdm) mid-lock.
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(fn, *job): job[0]["index"] for job in jobs}
            for fut in progress(as_completed(futs), total=len(futs), desc=f"synth {stream}", enabled=show_progress):
                results[futs[fut]] = fut.result()
    (out / "masks").mkdir(exist_ok=True)
    (out / "masks" / "classes.json").write_text(json.dumps({str(k): v for k, v in SEG_CLASSES.items()}, indent=1))
    if stream == "cohort":
        _write_tables(out, plans, results)
    else:
        with (out / "truth.jsonl").open("w", encoding="utf-8") as fh:
            for r in results:
                fh.write(json.dumps(r["truth"], sort_keys=True) + "\n")
    summary = {
        "seed": seed,
        "stream": stream,
        "res": res,
        "n_studies": len(plans),
        "n_patients": len({p["patient"] for p in plans}),
        "n_volumes": sum(len(r["truth"]["volumes"]) for r in results),
        "splits": {s: sum(p["split"] == s for p in plans) for s in ("train", "valid")},
        "n_references": sum(len(r["truth"].get("references", [])) for r in results),
        "label_counts": {f: int(sum(p["labels"][i] for p in plans)) for i, f in enumerate(CTRATE_FINDINGS)},
    }
    (out / "cohort.json").write_text(json.dumps(summary, indent=2) + "\n")  # no paths/timings: reruns identical
    summary["out"] = str(out)
    summary["bytes"] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return summary


def _csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _write_tables(out: Path, plans: list[dict], results: list[dict]) -> None:
    ds = out / "dataset"
    rows: dict[str, dict[str, list[dict]]] = {s: {"rep": [], "lab": [], "meta": []} for s in ("train", "valid")}
    de_rows = []
    with (out / "truth.jsonl").open("w", encoding="utf-8") as fh:
        for plan, r in zip(plans, results, strict=True):
            t = r["truth"]
            fh.write(json.dumps(t, ensure_ascii=False, sort_keys=True) + "\n")
            for v, m in zip(t["volumes"], r["metadata"], strict=True):
                name = v["name"]
                rows[plan["split"]]["rep"].append({"VolumeName": name, **r["report"]})
                rows[plan["split"]]["lab"].append({"VolumeName": name, **t["labels"]})
                rows[plan["split"]]["meta"].append(m)
                de_rows.append({"VolumeName": name, **r["report"]})
    for split, long in (("train", "train"), ("valid", "validation")):
        _csv(ds / "radiology_text_reports" / f"{long}_reports.csv", REPORT_COLUMNS, rows[split]["rep"])
        _csv(
            ds / "multi_abnormality_labels" / f"{split}_predicted_labels.csv",
            ["VolumeName", *CTRATE_FINDINGS],
            rows[split]["lab"],
        )
        _csv(ds / "metadata" / f"{long}_metadata.csv", METADATA_COLUMNS, rows[split]["meta"])
    _csv(out / "reports_de.csv", DE_COLUMNS, de_rows)
