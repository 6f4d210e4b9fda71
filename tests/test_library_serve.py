"""radfinder.serve: the JSON API, the offline page, security (only registered files, path traversal, upload limits,
nothing written to the library) and uploads of NIfTI and zipped DICOM."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from helpers_library import phantom, tiny_library, write_nifti
from radfinder.cli import main
from radfinder.io import write_dicom_series
from radfinder.library import Library
from radfinder.serve import UploadLimits, create_app, is_loopback

SRC = Path(__file__).resolve().parents[1] / "src" / "radfinder"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_library(tmp_path_factory)


@pytest.fixture(scope="module")
def lib(tiny):
    return Library(tiny["library"], model=tiny["model"])


@pytest.fixture(scope="module")
def client(lib):
    return TestClient(create_app(lib))


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def test_search_api_shape_and_k_limits(client, lib):
    r = client.get("/api/search", params={"q": "large right pleural effusion", "over": "report"})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 5 and results[0]["study"] == "effusion"  # k defaults to 10, 5 studies exist
    assert set(results[0]) >= {"study", "score", "depth_mm", "findings"} and len(results[0]["findings"]) == 18
    res = lib.search("large right pleural effusion", k=10, over="report")
    assert r.json() == {"results": res["results"], "ranking": "similarity", "finding": None, "present": None,
                        "calibrated": False}  # = `radfinder search --json`
    named = client.get("/api/search", params={"q": "No pleural effusion.", "k": 3}).json()
    want = lib.search("No pleural effusion.", k=3)
    assert (named["ranking"], named["finding"], named["present"]) == ("finding", "Pleural effusion", False)
    assert [r["study"] for r in named["results"]] == [r["study"] for r in want["results"]]
    assert len(client.get("/api/search", params={"q": "x", "k": 2}).json()["results"]) == 2
    for k in (0, 101):
        bad = client.get("/api/search", params={"q": "x", "k": k})
        assert bad.status_code == 400 and "between 1 and 100" in bad.json()["error"]
    assert client.get("/api/search").status_code == 400
    assert client.get("/api/search", params={"q": "x", "k": "ten"}).status_code == 400
    f = client.get("/api/search", params={"q": "x", "filter": "Unicorn>0.5"})
    assert f.status_code == 400 and "unknown finding" in f.json()["error"]


def test_study_heat_and_slices(client, lib):
    s = client.get("/api/study/1").json()
    assert s["study"] == "effusion" and "path" not in s and s["n_slices"] == 40
    assert s["references"][0]["slices"] == [28] and len(s["slice_z_mm"]) == 40
    heat = client.get("/api/study/1/heat", params={"q": "pleural effusion"}).json()
    assert len(heat["cells"]) == len(s["depth_z_mm"])
    valid = [c for c in heat["cells"] if c["valid"]]
    assert sum(c["probability"] for c in valid) == pytest.approx(1.0)
    assert heat["best_cell"] == max(valid, key=lambda c: c["cosine"])["cell"]
    assert heat == lib.heat(1, "pleural effusion")
    png = client.get("/api/study/1/slice/28", params={"window": "bone"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    assert client.get("/api/study/1/thumbnail").content[:4] == b"\x89PNG"
    assert client.get("/api/study/1/slice/40").status_code == 400
    assert client.get("/api/study/1/slice/3", params={"window": "brain"}).status_code == 400
    assert client.get("/api/study/99").status_code == 404
    assert client.get("/api/study/99/thumbnail").status_code == 404


def test_page_and_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>radfinder library</title>" in page.text
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert urls and all(u.startswith("/static/") for u in urls)
    for name in ("app.js", "style.css"):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and "http://" not in asset.text and "https://" not in asset.text


@pytest.mark.parametrize(
    "url",
    [
        "/static/../../../etc/passwd",
        "/static/..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/app.py",
        "/static/../serve/app.py",
        "/api/study/..%2F..%2Fetc%2Fpasswd/slice/0",
        "/api/study/1/slice/..%2F..%2Fetc%2Fpasswd",
        "/api/upload/..%2F..%2Fetc%2Fpasswd/slice/0",
        "/etc/passwd",
    ],
)
def test_path_traversal_is_refused(client, url):
    r = client.get(url)
    assert r.status_code in (400, 404, 405)
    assert "root:" not in r.text and "import " not in r.text


def test_upload_nifti_classifies_and_localizes(client, tiny, tmp_path):
    before = _tree_digest(tiny["library"])
    path = write_nifti(tmp_path / "scan.nii.gz", 3)
    with path.open("rb") as fh:
        r = client.post("/api/upload", files={"file": ("scan.nii.gz", fh)}, data={"q": "nodule"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["findings"]) == 18 and out["n_slices"] == 40
    assert out["heat"]["query"] == "nodule" and 0 <= out["heat"]["best_slice"] < 40
    png = client.get(f"/api/upload/{out['token']}/slice/{out['heat']['best_slice']}")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert client.get("/api/upload/0123456789abcdef01234567/slice/0").status_code == 404
    assert _tree_digest(tiny["library"]) == before
    assert Library(tiny["library"], model=tiny["model"]).info()["studies"] == 5


def test_upload_zipped_dicom(client, tmp_path):
    series = tmp_path / "series"
    affine = np.array([[-2.0, 0, 0, 40], [0, -2.0, 0, 50], [0, 0, 5.0, -80.0], [0, 0, 0, 1]])
    write_dicom_series(phantom(4), affine, series, series_number=3, study_uid="1.2.3", patient_id="p1",
                       uid_seed="library-upload")  # fmt: skip
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(series.iterdir()):
            zf.write(f, f"../../evil/{f.name}")  # hostile member names: never used as paths
    r = client.post("/api/upload", files={"file": ("series.zip", buf.getvalue())})
    assert r.status_code == 200, r.text
    assert r.json()["n_slices"] == 40 and r.json()["heat"] is None
    assert not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize(
    ("name", "payload", "status", "message"),
    [
        ("scan.nii.gz", b"\x1f\x8b" + b"not really gzip" * 20, 400, "damaged gzip"),
        ("scan.nii.gz", b"plain text, not a scan" * 30, 400, "not gzip"),
        ("scan.nii", b"\x00" * 400, 400, "no NIfTI header"),
        ("notes.txt", b"hello", 415, "unsupported file type"),
        ("series.zip", b"PK\x03\x04 broken", 400, "zip"),
        ("scan.nii.gz", b"", 400, "empty"),
    ],
)
def test_bad_uploads_get_clear_errors_and_write_nothing(client, tiny, name, payload, status, message):
    before = _tree_digest(tiny["library"])
    r = client.post("/api/upload", files={"file": (name, payload)})
    assert r.status_code == status and message in r.json()["error"]
    assert _tree_digest(tiny["library"]) == before


def test_upload_size_limit(lib, tmp_path):
    small = TestClient(create_app(lib, limits=UploadLimits(max_bytes=10_000)))
    path = write_nifti(tmp_path / "scan.nii.gz", 1)
    r = small.post("/api/upload", files={"file": ("scan.nii.gz", path.read_bytes())})
    assert r.status_code == 413 and "too large" in r.json()["error"]
    assert small.post("/api/upload", files={"file": ("x.nii", b"\x00")}).status_code == 400


def test_serve_binds_localhost_by_default(capsys):
    assert main(["serve", "--help"]) == 0
    assert "127.0.0.1" in capsys.readouterr().out
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_no_pickle_in_library_or_server():
    for folder in ("library", "serve"):
        for f in (SRC / folder).glob("*.py"):
            text = f.read_text()
            assert not re.search(r"^\s*(import|from)\s+(pickle|dill|joblib|shelve)\b", text, re.M), f
            assert "torch.load(" not in text and "allow_pickle=True" not in text, f


def _series_zip(tmp_path, extra=()) -> bytes:
    """A zipped 40-slice DICOM series; `extra`: (ZipInfo, bytes) members appended after the slices."""
    series = tmp_path / "series"
    affine = np.array([[-2.0, 0, 0, 40], [0, -2.0, 0, 50], [0, 0, 5.0, -80.0], [0, 0, 0, 1]])
    write_dicom_series(phantom(4), affine, series, series_number=3, study_uid="1.2.3", patient_id="p1",
                       uid_seed="library-upload")  # fmt: skip
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(series.iterdir()):
            zf.write(f, f.name)
        for info, data in extra:
            zf.writestr(info, data)
    return buf.getvalue()


def _symlink_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix: the high 16 bits of external_attr are st_mode
    info.external_attr = 0o120777 << 16
    return info


def test_zip_member_cap_and_unpack_ratio_are_enforced(lib, tmp_path):
    data = _series_zip(tmp_path)
    n = len(zipfile.ZipFile(io.BytesIO(data)).infolist())
    assert n == 40
    capped = TestClient(create_app(lib, limits=UploadLimits(max_members=n - 1)))
    r = capped.post("/api/upload", files={"file": ("series.zip", data)})
    assert r.status_code == 400 and f"holds {n} files; at most {n - 1} allowed" in r.json()["error"]
    exact = TestClient(create_app(lib, limits=UploadLimits(max_members=n)))
    assert exact.post("/api/upload", files={"file": ("series.zip", data)}).status_code == 200

    # a zip bomb in miniature: 4 MB of zeros compress to a few kB, under the 64 kB upload limit, over 8 x 64 kB
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("slice.dcm", b"\0" * (4 * 2**20))
    assert len(bomb.getvalue()) < 64 * 2**10
    small = TestClient(create_app(lib, limits=UploadLimits(max_bytes=64 * 2**10, unpack_ratio=8)))
    r = small.post("/api/upload", files={"file": ("bomb.zip", bomb.getvalue())})
    assert r.status_code == 413 and "unpacks to more than the upload limit" in r.json()["error"]
    # the same limits accept the real (well compressible) series: the ratio, not the size, refused the bomb
    roomy = TestClient(create_app(lib, limits=UploadLimits(max_bytes=len(data) + 1, unpack_ratio=64)))
    assert roomy.post("/api/upload", files={"file": ("series.zip", data)}).status_code == 200


def test_symlink_members_are_never_unpacked(lib, tmp_path):
    from radfinder.serve.uploads import _unzip

    link = _symlink_member("00000-link.dcm")
    data = _series_zip(tmp_path, extra=[(link, b"/etc/passwd")])
    (tmp_path / "up.zip").write_bytes(data)
    (tmp_path / "dest").mkdir()
    out = _unzip(tmp_path / "up.zip", tmp_path / "dest", UploadLimits())
    files = sorted(out.iterdir())
    assert len(files) == 40  # the link member is skipped: 40 slices, no 41st file
    assert all(f.is_file() and not f.is_symlink() and f.read_bytes() != b"/etc/passwd" for f in files)
    r = TestClient(create_app(lib)).post("/api/upload", files={"file": ("series.zip", data)})
    assert r.status_code == 200 and r.json()["n_slices"] == 40


def test_serve_cli_passes_its_upload_limit_and_warns_beyond_loopback(tiny, monkeypatch, tmp_path, capsys):
    import radfinder.serve as serve_mod

    started = {}
    monkeypatch.setattr(serve_mod.uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    assert main(["serve", str(tiny["library"]), "--max-upload-mb", "1", "--port", "8123", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and started["host"] == "127.0.0.1" and started["port"] == 8123
    client = TestClient(started["app"])
    r = client.post("/api/upload", files={"file": ("scan.nii.gz", b"\x1f\x8b" + b"\0" * (2**20 + 70_000))})
    assert r.status_code == 413 and "limit 1 MB" in r.json()["error"]
    path = write_nifti(tmp_path / "scan.nii.gz", 3)
    assert path.stat().st_size < 2**20  # under the limit: accepted
    assert client.post("/api/upload", files={"file": ("scan.nii.gz", path.read_bytes())}).status_code == 200
    assert UploadLimits().max_bytes == 512 * 2**20  # the app's default is the CLI's documented --max-upload-mb
    for host in ("0.0.0.0", "192.168.1.4"):
        assert main(["serve", str(tiny["library"]), "--host", host, "--device", "cpu"]) == 0
        err = capsys.readouterr().err
        assert f"warning: binding {host}" in err and "no login" in err and started["host"] == host


@pytest.fixture(scope="module")
def live_server(lib):
    """The app behind a real uvicorn server on a port the OS picked (bound here and read back: no race)."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(lib), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)  # polling the started flag, bounded by the deadline
    yield port
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


@pytest.mark.parametrize(
    "raw",
    [
        "/static/../../../etc/passwd",
        "/static/../serve/app.py",
        "/static/..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%5Cserve%5Capp.py",
        "/api/study/..%2F..%2Fetc%2Fpasswd/slice/0",
        "/api/upload/..%2F..%2Fetc%2Fpasswd/slice/0",
        "/../../etc/passwd",
    ],
)
def test_raw_traversal_paths_reach_the_server_unnormalised_and_are_refused(live_server, raw):
    """http.client sends the request line exactly as written (no dot-segment removal, unlike httpx's client)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", live_server, timeout=60)
    try:
        conn.putrequest("GET", raw, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
    finally:
        conn.close()
    assert resp.status in (400, 404, 405), (raw, resp.status)
    assert "root:" not in body and "import " not in body


def test_raw_request_line_really_keeps_its_dot_segments(live_server):
    """The check above would be empty if the path were normalised on the way: a handler sees what was sent."""
    import socket

    with socket.create_connection(("127.0.0.1", live_server), timeout=60) as s:
        s.sendall(b"GET /static/../static/app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    # normalised, this would be /static/app.js (200); raw, the {name} segment is ".." and the route does not match
    assert data.split(b"\r\n", 1)[0].split()[1] == b"404", data[:200]


def test_a_reader_crash_on_an_upload_is_a_clear_400_not_a_server_error(client, tiny, tmp_path, monkeypatch):
    import radfinder.serve.uploads as uploads

    def crash(path, *a, **kw):  # a reader bug or an exotic file the readers do not wrap in their own error
        raise IndexError("list index out of range")

    monkeypatch.setattr(uploads, "load_volume", crash)
    before = _tree_digest(tiny["library"])
    path = write_nifti(tmp_path / "scan.nii.gz", 1)
    r = client.post("/api/upload", files={"file": ("scan.nii.gz", path.read_bytes())})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "scan.nii.gz: cannot read the scan (IndexError: list index out of range)"
    assert _tree_digest(tiny["library"]) == before
