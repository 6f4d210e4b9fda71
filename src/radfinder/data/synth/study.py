"""Everything for one study, run inside a worker process: anatomy, findings, volumes, files, report, truth.

Random streams are keyed by (cohort seed, purpose, patient or study index), never by worker or order, so a
study comes out the same whichever process renders it and whatever else is in the cohort.

Streams: the demo/evaluation cohort ("cohort") draws from SeedSequence([seed, purpose, index]); the encoder's
pre-training cohort ("pretrain") and the feature-probe cohort ("probe") draw from SeedSequence([salt, seed,
purpose, index]) with a salt of their own. Entropy of another length and value gives an unrelated stream, so no
`--seed` of a demo can regenerate a pre-training phantom (and vice versa); their study ids carry the stream's
prefix too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...text.findings import CTRATE_FINDINGS
from .anatomy import sample_anatomy
from .export import metadata_row, stable_uid, write_nifti, write_series
from .findings import plan_findings
from .render import render_volumes, scan_geometry
from .reports import write_report

ANATOMY, FINDINGS, NOISE, TEXT = 1, 2, 3, 4
# Salts of the streams other than the demo/evaluation cohort's (ASCII of the names, as integers).
STREAMS: dict[str, tuple[int, ...]] = {
    "cohort": (),
    "pretrain": (int.from_bytes(b"radfinder-pretrain", "big"),),
    "probe": (int.from_bytes(b"radfinder-probe", "big"),),
}
STREAM_PREFIX = {"cohort": "", "pretrain": "pretrain-", "probe": "probe-"}


def rng_for(seed: int, purpose: int, index: int, stream: str = "cohort") -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([*STREAMS[stream], seed, purpose, index]))


def render_study(plan: dict[str, Any], res: str, seed: int, stream: str = "cohort"):
    """Anatomy, lesions, geometry and the rendered volumes with their segmentations of one planned study."""
    A = sample_anatomy(rng_for(seed, ANATOMY, plan["patient_index"], stream))  # one body for a patient's studies
    rng = rng_for(seed, FINDINGS, plan["index"], stream)
    labels = np.array(plan["labels"], dtype=np.int8)
    lesions, ops = plan_findings(rng, A, labels)
    g = scan_geometry(rng, A, res)
    thin, thick, seg_thin, seg_thick = render_volumes(A, ops, g, res, rng_for(seed, NOISE, plan["index"], stream))
    arrays = {
        "thin": (thin, g.affine(g.zs_thin), g.thin, seg_thin),
        "thick": (thick, g.affine(g.zs_thick), g.thin * g.m, seg_thick),
    }
    return A, lesions, labels, g, arrays


def _anatomy_truth(A) -> dict[str, float]:
    return {
        "carina_z_mm": round(A.zc, 2),
        "apex_z_mm": round(A.z_apex, 2),
        "right_dome_z_mm": round(A.z_dome_r, 2),
    }


def run_volume_study(plan: dict[str, Any], out: str, res: str, seed: int, stream: str) -> dict[str, Any]:
    """Only what encoder pre-training and feature probes need: the exported volumes, their segmentations and
    the truth (labels, lesions, anatomy); no DICOM, no report."""
    out_p = Path(out)
    A, lesions, labels, g, arrays = render_study(plan, res, seed, stream)
    volumes = []
    for n, role in enumerate(plan["export"], 1):
        arr, aff, _, seg = arrays[role]
        name = f"{plan['study']}_{n}.nii.gz"
        nbytes = write_nifti(arr, aff, out_p / "volumes" / name)
        write_nifti(seg, aff, out_p / "masks" / name, dtype=np.uint8)
        volumes.append({"name": name, "path": f"volumes/{name}", "mask": f"masks/{name}", "role": role,
                        "shape": list(arr.shape), "bytes": nbytes})  # fmt: skip
    truth = {
        "study": plan["study"],
        "patient": plan["patient"],
        "split": plan["split"],
        "index": plan["index"],
        "stream": stream,
        "volumes": volumes,
        "labels": {f: int(y) for f, y in zip(CTRATE_FINDINGS, labels, strict=True)},
        "lesions": [les.to_json() for les in lesions],
        "anatomy": _anatomy_truth(A),
    }
    return {"truth": truth}


def run_study(plan: dict[str, Any], out: str, res: str, seed: int, preview: bool) -> dict[str, Any]:
    out_p = Path(out)
    study = plan["study"]
    A, lesions, labels, g, arrays = render_study(plan, res, seed)
    thin = arrays["thin"][0]
    study_uid = stable_uid("radfinder-synth", seed, study)
    extra = {
        "PatientSex": plan["sex"],
        "PatientAge": f"{plan['age']:03d}Y",
        "StudyTime": plan["time"].replace(":", "") + "00",
        "StudyDescription": "CT THORAX NATIVE",
        "AccessionNumber": f"SYN{plan['index']:07d}",
    }
    series, series_json = [], []
    for role in ("thin", "thick"):
        arr, aff, thk, _ = arrays[role]
        num = plan["series_numbers"][role]
        order = plan["instance_order"][role]
        d = out_p / "dicom" / study / str(num)
        s = write_series(
            arr,
            aff,
            d,
            number=num,
            role=role,
            study_uid=study_uid,
            patient_id=plan["patient"],
            order=order,
            thickness=thk,
            date=plan["date"],
            transfer_syntax=plan["transfer_syntax"],
            uid_seed=f"radfinder-synth|{seed}|{study}|{num}",
            extra={**extra, "ConvolutionKernel": plan["kernel"][role]},
        )
        series.append(s)
        series_json.append(
            {
                "number": num,
                "role": role,
                "spacing_mm": round(float(thk), 4),
                "slice_thickness_mm": round(float(thk), 4),
                "n_slices": int(arr.shape[2]),
                "instance_order": order,
                "dicom_dir": str(d.relative_to(out_p)),
                "rows": int(arr.shape[1]),
                "columns": int(arr.shape[0]),
                "pixel_spacing_mm": g.dx,
                "z_range_mm": [round(float(s.zs.min()), 3), round(float(s.zs.max()), 3)],
                "transfer_syntax": plan["transfer_syntax"],
                "series_uid_seed": f"radfinder-synth|{seed}|{study}|{num}",
            }
        )
    meta = {
        "age": plan["age"],
        "sex": plan["sex"],
        "date": plan["date"],
        "time": plan["time"],
        "dlp": plan["dlp"],
        "followup": plan["followup"],
        "prior_date": plan["prior_date"],
        "prior_date_de": plan["prior_date_de"],
        "kernel": plan["kernel"],
    }
    rep = write_report(rng_for(seed, TEXT, plan["index"]), lesions, labels, series, meta)
    volumes, meta_rows = [], []
    for n, role in enumerate(plan["export"], 1):
        arr, aff, _, seg = arrays[role]
        name = f"{study}_{n}"
        rel = Path("dataset") / f"{plan['split']}_fixed" / plan["patient"] / study / f"{name}.nii.gz"
        nbytes = write_nifti(arr, aff, out_p / rel)
        write_nifti(seg, aff, out_p / "masks" / f"{name}.nii.gz", dtype=np.uint8)
        s = series[0] if role == "thin" else series[1]
        volumes.append(
            {
                "name": f"{name}.nii.gz",
                "path": str(rel),
                "mask": f"masks/{name}.nii.gz",
                "series_number": s.number,
                "role": role,
                "shape": list(arr.shape),
                "bytes": nbytes,
            }
        )
        meta_rows.append(metadata_row(f"{name}.nii.gz", s, arr, aff, meta))
    if preview:
        from .preview import study_gallery

        study_gallery(thin, g, lesions, out_p / "preview" / f"{study}.png", title=f"{study} ({plan['split']})")
    truth = {
        "study": study,
        "patient": plan["patient"],
        "split": plan["split"],
        "index": plan["index"],
        "study_uid": study_uid,
        "volumes": volumes,
        "series": series_json,
        "labels": {f: int(y) for f, y in zip(CTRATE_FINDINGS, labels, strict=True)},
        "lesions": [les.to_json() for les in lesions],
        "references": rep["refs"],
        "distractors": rep["distractors"],
        "texts": {
            "en": {k: rep[k] for k in ("ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN")},
            "de": {k: rep[k] for k in ("Klinische_Angaben", "Technik", "Befund", "Beurteilung")},
        },
        "anatomy": _anatomy_truth(A),
    }
    return {
        "truth": truth,
        "report": {
            k: rep[k]
            for k in (
                "ClinicalInformation_EN",
                "Technique_EN",
                "Findings_EN",
                "Impressions_EN",
                "Klinische_Angaben",
                "Technik",
                "Befund",
                "Beurteilung",
            )
        },
        "metadata": meta_rows,
    }
