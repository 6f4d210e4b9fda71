"""The CLI's common surface: `--out` on every command that writes, one bootstrap default, and errors that say whose
fault they are (a user error: `error: ...`, exit 2; a bug: `internal error: ...`, exit 1, traceback with --debug)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import typer

import radfinder
from radfinder.cli import main
from radfinder.cli.app import app
from radfinder.errors import ConfigError

# Commands that only read and print. Every other command writes files and must take --out/-o.
READ_ONLY = {"version", "model-info", "verify-compat", "check-data", "classify", "mine-text", "prompts", "anatomy",
             "anatomy-text", "anatomy-text-accuracy", "search", "serve", "library info"}
# Commands that update an existing folder named by their first argument (a library), in place.
IN_PLACE = {"library add", "library index"}


def commands() -> dict[str, object]:
    """Every command by its full name ("library build" for a group's subcommand)."""
    import radfinder.cli.main  # noqa: F401 - registers every command on `app`

    out: dict[str, object] = {}
    for name, cmd in typer.main.get_command(app).commands.items():
        subs = getattr(cmd, "commands", None)
        if subs:
            out.update({f"{name} {sub}": c for sub, c in subs.items()})
        else:
            out[name] = cmd
    return out


def test_every_command_that_writes_takes_out():
    cmds = commands()
    assert READ_ONLY <= cmds.keys(), "a read-only command was renamed or removed: update READ_ONLY"
    missing = []
    for name, cmd in sorted(cmds.items()):
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        if name not in READ_ONLY | IN_PLACE and not {"--out", "-o"} <= opts:
            missing.append(name)
    assert not missing, f"commands that write but take no --out/-o: {missing}"
    for name in READ_ONLY:  # and the read-only ones are not secretly writers
        assert "--out" not in {o for p in cmds[name].params for o in getattr(p, "opts", [])}, name


@pytest.fixture
def fake_cohort(monkeypatch):
    """`synth` wired to a recorder instead of the renderer: only the CLI's handling of OUT is under test."""
    import radfinder.data.synth as synth

    seen = []

    def make_cohort(out, studies, seed, **kw):
        seen.append(out)
        return {"n_studies": studies, "n_patients": 1, "n_volumes": 1, "n_references": 0, "bytes": 0, "out": str(out)}

    monkeypatch.setattr(synth, "make_cohort", make_cohort)
    return seen


def test_synth_takes_out_and_keeps_the_positional_form(fake_cohort, tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "a"), "-n", "2", "--json"]) == 0
    assert main(["synth", "-o", str(tmp_path / "b"), "--json"]) == 0
    assert main(["synth", str(tmp_path / "c"), "--json"]) == 0
    assert main(["synth", str(tmp_path / "d"), "--out", str(tmp_path / "d"), "--json"]) == 0
    assert fake_cohort == [tmp_path / "a", tmp_path / "b", tmp_path / "c", tmp_path / "d"]
    capsys.readouterr()
    assert main(["synth", str(tmp_path / "e"), "--out", str(tmp_path / "f")]) == 2
    assert "two output folders" in capsys.readouterr().err
    assert main(["synth"]) == 2
    assert "error: no output folder: give --out DIR" in capsys.readouterr().err
    assert len(fake_cohort) == 4


def test_one_bootstrap_default_everywhere():
    """CLI options, the demo's settings and every library function that bootstraps share DEFAULT_N_BOOT."""
    from radfinder.demo.config import DemoSettings
    from radfinder.eval.bootstrap import DEFAULT_N_BOOT

    found = {"DemoSettings.n_boot": DemoSettings.n_boot}
    for name, cmd in commands().items():
        for p in cmd.params:
            if p.name == "n_boot":
                found[f"radfinder {name} --n-boot"] = p.default
    for info in pkgutil.walk_packages(radfinder.__path__, "radfinder."):
        if not info.name.startswith(("radfinder.eval", "radfinder.api", "radfinder.demo", "radfinder.train")):
            continue
        mod = importlib.import_module(info.name)
        for fname, fn in inspect.getmembers(mod, inspect.isfunction):
            if fn.__module__ != info.name:
                continue
            p = inspect.signature(fn).parameters.get("n_boot")
            if p is not None and p.default is not inspect.Parameter.empty:
                found[f"{info.name}.{fname}(n_boot=)"] = p.default
    assert {"radfinder evaluate --n-boot", "radfinder demo --n-boot"} <= found.keys()
    assert len(found) > 8
    # 0 (no intervals) is a deliberate choice at a call site, never a default
    assert {k: v for k, v in found.items() if v != DEFAULT_N_BOOT} == {}


def test_internal_error_is_not_shown_as_a_user_error(monkeypatch, capsys):
    import radfinder.device

    def broken(_device="auto"):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(radfinder.device, "resolve_device", broken)
    assert main(["version"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("internal error: ZeroDivisionError: float division by zero\n")
    assert "radfinder --debug" in err and "Traceback" not in err and "error: float" not in err.replace("internal ", "")

    assert main(["--debug", "version"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert "internal error: ZeroDivisionError" in err

    monkeypatch.setenv("RADFINDER_DEBUG", "1")
    assert main(["version"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_user_and_usage_errors_exit_2(monkeypatch, capsys, tmp_path):
    import radfinder.device

    def refuse(_device="auto"):
        raise ConfigError("device 'cuda:7' requested but CUDA is not available on this machine")

    monkeypatch.setattr(radfinder.device, "resolve_device", refuse)
    assert main(["version"]) == 2
    err = capsys.readouterr().err
    assert err == "error: device 'cuda:7' requested but CUDA is not available on this machine\n"
    assert main(["version", "--no-such-option"]) == 2
    assert "No such option" in capsys.readouterr().err
    # a bad demo setting is the user's, not a bug, and nothing is written for it
    assert main(["demo", "--encoder", "spectre", "--out", str(tmp_path / "d")]) == 2
    assert "error: encoder must be one of" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
