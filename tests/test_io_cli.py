"""`radfinder inspect` (JSON, text, PNG) and the preview's anatomical orientation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers_dicom import make_affine, random_hu, write_series
from radfinder.cli import main
from radfinder.io import Volume, load_volume
from radfinder.io.preview import preview_panels


@pytest.fixture
def study(tmp_path):
    write_series(tmp_path / "a", random_hu((24, 20, 10), 1), make_affine(spacing=(0.7, 0.7, 1.0)), series_number=4,
                 series_description="LUNG")  # fmt: skip
    write_series(tmp_path / "b", random_hu((24, 20, 4), 2), make_affine(spacing=(0.7, 0.7, 2.5)), series_number=5,
                 series_description="MEDIASTINUM")  # fmt: skip
    return tmp_path


def test_inspect_json(study, capsys):
    assert main(["inspect", str(study), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    vol = load_volume(study)
    assert info["shape"] == [24, 20, 10] and info["format"] == "dicom" and info["source"] == str(study)
    np.testing.assert_allclose(info["affine"], vol.affine, atol=1e-6)
    assert info["spacing"] == pytest.approx([0.7, 0.7, 1.0]) and info["orientation"] == vol.orientation
    assert (info["hu_min"], info["hu_max"]) == (float(vol.array.min()), float(vol.array.max()))
    assert info["series"]["number"] == 4 and info["series"]["description"] == "LUNG"
    assert [s["number"] for s in info["other_series"]] == [5]


def test_inspect_series_option_and_text(study, capsys):
    assert main(["inspect", str(study), "--series", "mediast"]) == 0
    out = capsys.readouterr().out
    assert "24 x 20 x 4" in out and "#5 'MEDIASTINUM'" in out and "also:      #4 'LUNG'" in out


def test_inspect_png(study, tmp_path, capsys):
    png = tmp_path / "out" / "preview.png"
    assert main(["inspect", str(study), "--json", "--png", str(png), "--window", "-500,500"]) == 0
    assert json.loads(capsys.readouterr().out)["png"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    h, w = mpimg.imread(png).shape[:2]
    assert w > h > 100


def test_inspect_errors_exit_2(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert f"error: {tmp_path}: no DICOM images found" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path), "--window", "5,1"]) == 2


def test_preview_panels_put_anatomy_where_radiologists_expect():
    # A bright block in the patient's Right-Anterior-Superior corner of an LPS-stored volume.
    arr = np.full((20, 30, 40), -1000, np.int16)
    vol = Volume(arr, np.diag([-1.0, -2.0, 0.5, 1.0]))  # LPS, anisotropic
    ras_corner = np.array([5.0, 10.0, 7.0])  # +R, +A, +S of the centre
    centre = vol.world_of((np.array(arr.shape) - 1) / 2)
    ijk = np.rint(np.linalg.solve(vol.affine, np.append(centre + ras_corner, 1))[:3]).astype(int)
    lo = np.maximum(ijk - 2, 0)
    arr[lo[0] : ijk[0] + 3, lo[1] : ijk[1] + 3, :] = 1000  # column through all z: visible in axial
    arr[lo[0] : ijk[0] + 3, :, lo[2] : ijk[2] + 3] = 1000  # slab through all y: visible in coronal
    arr[:, lo[1] : ijk[1] + 3, lo[2] : ijk[2] + 3] = 1000  # bar through all x: visible in sagittal
    panels, oblique = preview_panels(vol)
    assert not oblique
    by = {p.name: p for p in panels}

    def bright_centroid(p):  # (fraction from viewer's left, fraction from bottom)
        rows, cols = np.nonzero(p.image > 0)
        return cols.mean() / p.image.shape[1], rows.mean() / p.image.shape[0]

    x, y = bright_centroid(by["axial"])
    assert x < 0.5 and y > 0.5  # patient Right on the viewer's left, Anterior up
    x, y = bright_centroid(by["coronal"])
    assert x < 0.5 and y > 0.5  # Right on the left, Superior up
    x, y = bright_centroid(by["sagittal"])
    assert x < 0.5 and y > 0.5  # Anterior on the left, Superior up
    assert by["axial"].width_mm == pytest.approx(20) and by["axial"].height_mm == pytest.approx(60)
    assert by["sagittal"].height_mm == pytest.approx(20)
