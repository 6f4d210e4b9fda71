"""Choosing one series out of a DICOM folder, and saying clearly what else was there."""

from __future__ import annotations

from pathlib import Path

from ..errors import VolumeReadError
from .dicom_index import SeriesInfo


def is_localizer(series: SeriesInfo) -> bool:
    return any("LOCALIZER" in str(t).upper() for i in series.instances for t in i.image_type)


def is_volume_candidate(series: SeriesInfo) -> bool:
    """A series that could stack into a volume: positioned images that are not scouts/localizers."""
    return all(i.has_geometry for i in series.instances) and not is_localizer(series)


def _listing(series: list[SeriesInfo]) -> str:
    return "; ".join(s.label() for s in series)


def select_series(
    series: list[SeriesInfo], selector: str | int | None, *, allow_non_ct: bool, where: Path
) -> SeriesInfo:
    """Pick the series to load.

    selector: an int or all-digit string matches SeriesNumber; otherwise an exact SeriesInstanceUID, else a
    case-insensitive substring of SeriesDescription. None picks the CT series with the most images (ties: the
    lower SeriesNumber), leaving out localizers and images without patient-space geometry.
    Every failure lists the series that were found.
    """
    if not series:
        raise VolumeReadError(where, "no DICOM image series found")
    if selector is None:
        pool = [s for s in series if is_volume_candidate(s)]
        ct = [s for s in pool if s.modality == "CT"]
        if not ct and not allow_non_ct:
            if any(s.modality == "CT" for s in series):
                why = "the CT series are localizers or lack ImagePositionPatient/ImageOrientationPatient"
            else:
                mods = sorted({s.modality or "?" for s in series})
                why = f"modalities present: {', '.join(mods)}; pass allow_non_ct=True to load another modality"
            raise VolumeReadError(
                where, f"no CT series that stacks into a volume ({why}). Series found: {_listing(series)}"
            )
        pool = ct or pool
        if not pool:
            raise VolumeReadError(
                where, f"no series with positioned images (ImagePositionPatient etc.) to stack: {_listing(series)}"
            )
        return max(pool, key=lambda s: (len(s.instances), -(s.number if s.number is not None else 1 << 30)))

    text = str(selector).strip()
    if isinstance(selector, int) or text.lstrip("-").isdigit():
        matches = [s for s in series if s.number == int(text)]
        how = f"SeriesNumber {int(text)}"
    else:
        matches = [s for s in series if s.uid == text]
        how = f"SeriesInstanceUID {text}"
        if not matches:
            matches = [s for s in series if text.lower() in s.description.lower()]
            how = f"a SeriesDescription containing {text!r}"
    if not matches:
        raise VolumeReadError(where, f"no series with {how}. Series found: {_listing(series)}")
    if len(matches) > 1:
        raise VolumeReadError(
            where,
            f"{len(matches)} series match {how}; be more specific (a SeriesInstanceUID works): " + _listing(matches),
        )
    chosen = matches[0]
    if chosen.modality != "CT" and not allow_non_ct:
        raise VolumeReadError(
            where, f"{chosen.label()} has modality {chosen.modality or 'unknown'}, not CT; pass allow_non_ct=True"
        )
    return chosen
