"""The library page in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by Selenium
against `radfinder serve`'s app on 127.0.0.1 over the tiny test library.

Selenium is pointed at /usr/bin/chromedriver, so it never downloads a driver. Without a browser the tests skip,
except under CI=true, where a missing browser fails them (`.ci/run` installs it). Screenshots are kept as test
artifacts in tests/artifacts/ (or $RADFINDER_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from helpers_library import tiny_library, write_nifti
from radfinder.library import Library
from radfinder.serve import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("RADFINDER_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))
WAIT_S = 60


def _browser_or_skip():
    missing = [p for p in (CHROMIUM, DRIVER) if not Path(p).is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("python package selenium")
    if missing:
        msg = f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; CI=true: a missing browser is a failure")
        pytest.skip(msg)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _browser_or_skip()
    tiny = tiny_library(tmp_path_factory)
    app = create_app(Library(tiny["library"], model=tiny["model"]))
    # the server gets the socket bound here (port 0, read back), not a port probed free and closed, which another
    # process could take before uvicorn binds it
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "server did not start"
    yield {"url": f"http://127.0.0.1:{port}/", **tiny}
    srv.should_exit = True
    thread.join(timeout=30)
    sock.close()


@pytest.fixture(scope="module")
def driver(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="radfinder-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,900", f"--user-data-dir={profile}"):  # fmt: skip
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.set_page_load_timeout(WAIT_S)
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait(drv, cond, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, WAIT_S, poll_frequency=0.1).until(lambda d: cond(d), message=what)


def _shot(drv, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    drv.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _image_loaded(drv) -> bool:
    return drv.execute_script("const i = document.getElementById('slice-img');"
                              "return i.complete && i.naturalWidth > 0;")  # fmt: skip


def test_search_study_view_heat_strip_and_references(server, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(server["url"])
    _wait(driver, lambda d: "studies" in d.find_element(By.ID, "lib-info").text, "library info shown")
    Select(driver.find_element(By.ID, "over")).select_by_value("report")
    driver.find_element(By.ID, "q").send_keys("large right pleural effusion")
    driver.find_element(By.ID, "search-btn").click()
    cards = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".result-card"), "result cards")
    assert len(cards) == 5 and cards[0].get_attribute("data-study") == "effusion"
    thumbs = driver.execute_script("return [...document.querySelectorAll('.result-card img')]"
                                   ".map(i => i.complete && i.naturalWidth > 0);")  # fmt: skip
    _wait(driver, lambda d: all(d.execute_script("return [...document.querySelectorAll('.result-card img')]"
                                                 ".map(i => i.complete && i.naturalWidth > 0);")), "thumbnails")
    assert len(thumbs) == 5

    cards[0].click()
    _wait(driver, lambda d: d.find_element(By.ID, "study-view").is_displayed(), "study view")
    cells = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#heat-strip .heat-cell"), "heat strip")
    n_cells = len(Library(server["library"], model=server["model"]).study(1).depth_z_mm)
    assert len(cells) == n_cells
    _wait(driver, _image_loaded, "first slice")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#findings .finding")) == 18

    # Click a valid heat cell other than the current slice: the viewer jumps to that cell's slice.
    current = driver.find_element(By.ID, "slice-img").get_attribute("data-slice")
    target = next(c for c in cells if "invalid" not in c.get_attribute("class")
                  and c.get_attribute("data-slice") != current)  # fmt: skip
    target.click()
    want = target.get_attribute("data-slice")
    _wait(driver, lambda d: d.find_element(By.ID, "slice-img").get_attribute("data-slice") == want, "slice moved")
    _wait(driver, _image_loaded, "clicked slice rendered")
    assert f"slice {want} /" in driver.find_element(By.ID, "slice-label").text

    # The mined reference "series 2, image 12" links to its slice.
    ref = driver.find_element(By.CSS_SELECTOR, "#report a.ref")
    assert ref.text == "series 2, image 12"
    ref.click()
    _wait(driver, lambda d: d.find_element(By.ID, "slice-img").get_attribute("data-slice") == "28", "reference jump")
    _wait(driver, _image_loaded, "referenced slice rendered")
    _shot(driver, "library-study-view")

    # Window presets re-render the same slice.
    driver.find_element(By.CSS_SELECTOR, ".windows button[data-window='bone']").click()
    _wait(driver, lambda d: "window=bone" in d.find_element(By.ID, "slice-img").get_attribute("src"), "bone window")


def test_upload_good_and_bad_files(server, driver, tmp_path):
    from selenium.webdriver.common.by import By

    driver.get(server["url"])
    good = write_nifti(tmp_path / "upload.nii.gz", 2)
    driver.find_element(By.ID, "q").send_keys("nodule")
    driver.find_element(By.ID, "upload-file").send_keys(str(good))
    driver.find_element(By.ID, "upload-btn").click()
    _wait(driver, lambda d: "classified upload.nii.gz" in d.find_element(By.ID, "upload-status").text, "upload done")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#findings .finding")) == 18
    assert driver.find_elements(By.CSS_SELECTOR, "#heat-strip .heat-cell")
    _wait(driver, _image_loaded, "uploaded scan's slice")
    assert not driver.find_element(By.ID, "error").is_displayed()
    _shot(driver, "library-upload")

    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a scan" * 50)
    driver.find_element(By.ID, "upload-file").clear()
    driver.find_element(By.ID, "upload-file").send_keys(str(bad))
    driver.find_element(By.ID, "upload-btn").click()
    err = _wait(driver, lambda d: d.find_element(By.ID, "error") if d.find_element(By.ID, "error").is_displayed()
                else None, "error shown")  # fmt: skip
    assert "upload failed" in err.text and "broken.nii.gz" in err.text and "not gzip" in err.text
    _shot(driver, "library-upload-error")


def test_missing_browser_skips_locally_and_fails_in_ci(monkeypatch):
    import test_library_browser as me

    monkeypatch.setattr(me, "DRIVER", "/nonexistent/chromedriver")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium-driver"):
        me._browser_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        me._browser_or_skip()


def test_a_search_is_a_url_that_loads_updates_and_reloads(server, driver):
    """/?q=...&k=... runs that search on load (finding sentence: ranked by the finding's zero-shot probability, as
    the API answers); a new search from the form is written into the address; reload and back give the same."""
    from urllib.parse import parse_qs, urlparse

    from selenium.webdriver.common.by import By

    def cards():
        return [c.get_attribute("data-study") for c in driver.find_elements(By.CSS_SELECTOR, ".result-card")]

    lib = Library(server["library"], model=server["model"])
    want = [r["study"] for r in lib.search("Pleural effusion.", k=3)["results"]]
    driver.get(server["url"] + "?q=Pleural%20effusion.&k=3")
    _wait(driver, lambda d: len(cards()) == 3, "search from the URL ran")
    assert cards() == want
    assert driver.find_element(By.ID, "q").get_attribute("value") == "Pleural effusion."
    assert driver.find_element(By.ID, "k").get_attribute("value") == "3"
    ranking = driver.find_element(By.ID, "ranking")
    assert ranking.get_attribute("data-ranking") == "finding" and "Pleural effusion" in ranking.text

    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys("normal chest CT")
    k = driver.find_element(By.ID, "k")
    k.clear()
    k.send_keys("4")
    driver.find_element(By.ID, "search-btn").click()
    _wait(driver, lambda d: len(cards()) == 4, "second search")
    query = parse_qs(urlparse(driver.current_url).query)
    assert query == {"q": ["normal chest CT"], "k": ["4"]}
    assert driver.find_element(By.ID, "ranking").get_attribute("data-ranking") == "similarity"
    second = cards()
    assert second == [r["study"] for r in lib.search("normal chest CT", k=4)["results"]]

    driver.refresh()
    _wait(driver, lambda d: len(cards()) == 4, "reloaded search")
    assert cards() == second
    driver.back()
    _wait(driver, lambda d: len(cards()) == 3, "back to the first search")
    assert cards() == want and parse_qs(urlparse(driver.current_url).query)["q"] == ["Pleural effusion."]
