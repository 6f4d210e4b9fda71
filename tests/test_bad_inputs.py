"""Every case of the bad-input corpus (tests/bad_inputs.py) through the CLI: exit code 2, one line `error: <file>:
...` on stderr (no traceback), and nothing written to the output folder. docs/bad-inputs.md lists every case."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bad_inputs import CASES, write_corpus
from radfinder.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("bad_inputs"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_error_line_exit_2_and_writes_nothing(case, corpus, tmp_path, capsys):
    path = corpus[case.name]
    out = tmp_path / "out"
    out.mkdir()
    rc = main(case.args(path, out))
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, captured.err
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    line = lines[0]
    assert line.startswith(f"error: {path}"), line  # the file itself, or the DICOM file inside the folder
    problem = line.split(": ", 2)[-1] if line.startswith(f"error: {path}: ") else line
    assert re.search(case.message, problem), (case.message, line)
    assert not [p for p in out.rglob("*")], "something was written for a bad input"


def test_the_installed_command_exits_2_without_a_traceback(corpus, tmp_path):
    """The same through a real process (`python -m radfinder`), where an exception would print a traceback."""
    path = corpus["preprocess:zero-byte"]
    cmd = [sys.executable, "-m", "radfinder", "preprocess", str(path), "--out", str(tmp_path / "x.npz")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {path}: empty file (0 bytes)\n"
    assert not (tmp_path / "x.npz").exists()


def test_the_documentation_lists_every_case():
    doc = DOC.read_text()
    missing = [c.name for c in CASES if f"`{c.name}`" not in doc]
    assert not missing, f"docs/bad-inputs.md does not list {missing}"


def test_the_corpus_script_writes_every_input(tmp_path):
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("bad_inputs.py")), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    listed = dict(line.split(maxsplit=1) for line in proc.stdout.splitlines())
    assert listed.keys() == {c.name for c in CASES}
    assert all(Path(p).exists() for p in listed.values())
