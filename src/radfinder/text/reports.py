"""Report-table readers: CT-RATE CSVs, Merlin tables, INSPECT impressions, CT-CLIP labelled reports, plain text.

Every reader returns `Report` records with findings and impression separated, so that the text layer never needs
to know where a report came from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import RadfinderError
from .sections import detect_language, split_sections

CTRATE_COLUMNS = ("VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN")
MERLIN_COLUMNS = ("study id", "Findings")


class ReportReadError(RadfinderError):
    """A report file is missing, unreadable or lacks the expected columns."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


@dataclass(frozen=True)
class Report:
    """One report. `raw` is the text as stored; `source` names the reader ("ctrate", "merlin", ...)."""

    id: str
    findings: str
    impressions: str
    language: str = "en"
    raw: str = ""
    source: str = ""
    split: str = ""

    @property
    def text(self) -> str:
        """Findings and impression in the query format used for CT-RATE retrieval."""
        return f"Findings: {self.findings}\nImpressions: {self.impressions}\n"


def _clean(v: object) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    return str(v).strip()


def _not_utf8(path: Path) -> str:
    """Where a table stops being UTF-8 (pandas reports the offset inside its read buffer, not the file)."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return f"not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} (re-save the table as UTF-8)"
    return "not UTF-8 text (re-save the table as UTF-8)"


def _read_table(path: Path, sep: str | None = None) -> pd.DataFrame:
    if not path.is_file():
        raise ReportReadError(path, "file not found")
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            try:
                import openpyxl  # noqa: F401
            except ImportError as exc:
                raise ReportReadError(
                    path, "reading .xlsx needs openpyxl (pip install openpyxl) or a CSV export"
                ) from exc
            return pd.read_excel(path, dtype=str)
        if sep is None:
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except ReportReadError:
        raise
    except UnicodeDecodeError as exc:
        raise ReportReadError(path, _not_utf8(path)) from exc
    except Exception as exc:  # pandas raises many types for a malformed table
        raise ReportReadError(path, f"cannot read table ({exc})") from exc


def _require(df: pd.DataFrame, cols: Iterable[str], path: Path, what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ReportReadError(path, f"not a {what} table: missing column(s) {missing}; has {list(df.columns)[:10]}")


def read_ctrate_reports(path: str | Path) -> list[Report]:
    """CT-RATE `radiology_text_reports/*.csv`: one report per VolumeName (findings and impressions columns)."""
    path = Path(path)
    df = _read_table(path)
    _require(df, ("VolumeName", "Findings_EN", "Impressions_EN"), path, "CT-RATE report")
    out = []
    for row in df.itertuples(index=False):
        r = row._asdict() if hasattr(row, "_asdict") else dict(zip(df.columns, row, strict=True))
        f, i = _clean(r.get("Findings_EN")), _clean(r.get("Impressions_EN"))
        out.append(Report(_clean(r["VolumeName"]), f, i, "en", f"{f}\n{i}".strip(), "ctrate"))
    return out


def read_merlin_reports(path: str | Path, split: str | None = None) -> list[Report]:
    """Merlin `reports_final.xlsx` (or a CSV export): `study id`, `Split`, `Findings` (= the full report)."""
    path = Path(path)
    df = _read_table(path)
    _require(df, MERLIN_COLUMNS, path, "Merlin report")
    out = []
    for sid, full, sp in zip(df["study id"], df["Findings"], df.get("Split", [""] * len(df)), strict=True):
        sp = _clean(sp)
        if split is not None and sp != split:
            continue
        raw = _clean(full)
        sec = split_sections(raw)
        out.append(Report(_clean(sid), sec.findings, sec.impressions, detect_language(raw), raw, "merlin", sp))
    return out


def read_inspect_impressions(path: str | Path) -> list[Report]:
    """INSPECT `impressions_*.tsv`: an id column and an impression column (findings are not released)."""
    path = Path(path)
    df = _read_table(path, sep="\t" if path.suffix.lower() != ".csv" else ",")
    lower = {c.lower(): c for c in df.columns}
    id_col = next((lower[c] for c in ("impression_id", "image_id", "id", "study_id", "person_id") if c in lower), None)
    txt_col = next((lower[c] for c in ("impressions", "impression", "text", "report") if c in lower), None)
    if id_col is None or txt_col is None:
        raise ReportReadError(
            path, f"not an INSPECT impressions table: need an id and an impression column, has {list(df.columns)}"
        )
    return [
        Report(_clean(i), "", _clean(t), "en", _clean(t), "inspect")
        for i, t in zip(df[id_col], df[txt_col], strict=True)
    ]


def read_ctclip_labeled(path: str | Path) -> tuple[list[Report], pd.DataFrame]:
    """CT-CLIP's report-classifier CSV (`AccessionNo`, `report_text`, 18 manual labels).

    `report_text` is findings followed by impression sentences, each impression sentence introduced by a
    double quote, so the text is split at the first quote. Returns the reports and the label table (AccessionNo
    plus the label columns, as int).
    """
    path = Path(path)
    df = _read_table(path)
    _require(df, ("AccessionNo", "report_text"), path, "CT-CLIP labelled report")
    reports = []
    for acc, raw in zip(df["AccessionNo"], df["report_text"], strict=True):
        raw = _clean(raw)
        cut = raw.find('"')
        f, i = (raw, "") if cut < 0 else (raw[:cut].strip(), raw[cut:].replace('"', " ").strip())
        reports.append(Report(_clean(acc), f, " ".join(i.split()), "en", raw, "ctclip"))
    labels = df.drop(columns=["report_text"]).copy()
    for c in labels.columns[1:]:
        labels[c] = pd.to_numeric(labels[c], errors="coerce").fillna(-1).astype(int)
    return reports, labels


def read_text_report(path: str | Path) -> Report:
    """A plain-text report; its id is the file stem, sections are found by their headers."""
    path = Path(path)
    if not path.is_file():
        raise ReportReadError(path, "file not found")
    try:
        raw = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ReportReadError(path, f"cannot read ({exc})") from exc
    sec = split_sections(raw)
    return Report(path.stem, sec.findings, sec.impressions, detect_language(raw), raw, "text")


def read_reports(path: str | Path, fmt: str = "auto") -> list[Report]:
    """Read any supported report file; `fmt` is auto|ctrate|merlin|inspect|ctclip|text."""
    path = Path(path)
    if fmt == "auto":
        fmt = sniff_format(path)
    readers = {
        "ctrate": read_ctrate_reports,
        "merlin": read_merlin_reports,
        "inspect": read_inspect_impressions,
        "ctclip": lambda p: read_ctclip_labeled(p)[0],
        "text": lambda p: [read_text_report(p)],
    }
    if fmt not in readers:
        raise ReportReadError(path, f"unknown report format {fmt!r}; choose one of {sorted(readers)}")
    return readers[fmt](path)


def sniff_format(path: Path) -> str:
    """Guess the report format from the suffix and the header row."""
    if not path.is_file():
        raise ReportReadError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xls"):
        return "merlin"
    if suffix not in (".csv", ".tsv"):
        return "text"
    with path.open(encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
    if "VolumeName" in header and "Findings_EN" in header:
        return "ctrate"
    if "study id" in header:
        return "merlin"
    if "report_text" in header and "AccessionNo" in header:
        return "ctclip"
    if "impression" in header.lower():
        return "inspect"
    raise ReportReadError(path, f"cannot tell the report format from its header: {header.strip()[:200]!r}")
