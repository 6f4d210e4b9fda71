from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import BaseModel

from radfinder.config import apply_overrides, build_config
from radfinder.errors import ConfigError
from radfinder.preprocess.spec import PreprocessSpec, resolve_spec


class Inner(BaseModel):
    lr: float = 1e-3
    steps: int = 10


class Outer(BaseModel):
    name: str = "x"
    optim: Inner = Inner()


def test_overrides_keep_yaml_types_and_nesting():
    cfg = build_config(Outer, {"optim": {"lr": 0.1}}, ["optim.steps=7", "name=demo"])
    assert cfg.optim.steps == 7 and cfg.optim.lr == 0.1 and cfg.name == "demo"


def test_bad_override_and_bad_value_are_clear_errors():
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(ConfigError, match="invalid config"):
        build_config(Outer, {}, ["optim.steps=many"])


def test_spec_hash_is_stable_across_processes_and_sensitive_to_every_field():
    spec = PreprocessSpec()
    code = "from radfinder.preprocess.spec import PreprocessSpec; print(PreprocessSpec().hash())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert spec.hash() == other
    assert PreprocessSpec(spacing=(0.75, 0.75, 1.5)).hash() != spec.hash()
    assert PreprocessSpec(hu_window=(-1000, 400)).hash() != spec.hash()
    assert PreprocessSpec(intensity_order="after").hash() != spec.hash()
    assert spec.depth_cell_mm == 12.0


def test_spec_rejects_nonsense_and_resolves_presets(tmp_path):
    with pytest.raises(ValueError):
        PreprocessSpec(orientation="RRS")
    with pytest.raises(ValueError):
        PreprocessSpec(spacing=(0, 1, 1))
    assert resolve_spec("radfinder") == PreprocessSpec()
    path = tmp_path / "s.yaml"
    path.write_text("spacing: [1.0, 1.0, 2.0]\n")
    assert resolve_spec(path).spacing == (1.0, 1.0, 2.0)
    with pytest.raises(ConfigError, match="unknown preprocessing spec"):
        resolve_spec("nope")
