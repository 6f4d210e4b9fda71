"""Label vocabularies: a named, ordered list of findings that fixes what each position of a label vector means.

The 18 CT-RATE findings are one vocabulary (`ctrate18`, the default everywhere, content `CTRATE_FINDINGS`). A run
saves its vocabulary in its resolved config (`data.vocabulary`) and every checkpoint (`labels.json` beside
`config.json`); a checkpoint without one (written before vocabularies existed) is `ctrate18`. The prompt bank, the
training label vector and zero-shot evaluation take their finding names from it.

A vocabulary is given by name (`ctrate18`, or one added with `register_vocabulary`), as a YAML/JSON file
`{name: ..., findings: [...]}`, or inline as that mapping.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import ConfigError
from .findings import CTRATE_FINDINGS

FILENAME = "labels.json"


class LabelVocabulary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    findings: tuple[str, ...]

    @field_validator("findings")
    @classmethod
    def _check(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(str(f).strip() for f in v)
        if not names or any(not n for n in names):
            raise ValueError("a vocabulary needs at least one non-empty finding name")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"finding(s) listed twice: {dupes}")
        return names

    def __len__(self) -> int:
        return len(self.findings)

    def index(self, finding: str) -> int:
        return self.findings.index(finding)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)


CTRATE18 = LabelVocabulary(name="ctrate18", findings=CTRATE_FINDINGS)
_VOCABULARIES: dict[str, LabelVocabulary] = {"ctrate18": CTRATE18}
DEFAULT_VOCABULARY = "ctrate18"


def register_vocabulary(vocab: LabelVocabulary, *, replace: bool = False) -> LabelVocabulary:
    if vocab.name in _VOCABULARIES and not replace and _VOCABULARIES[vocab.name] != vocab:
        raise ValueError(f"a different vocabulary {vocab.name!r} is already registered")
    _VOCABULARIES[vocab.name] = vocab
    return vocab


def vocabulary_names() -> list[str]:
    return list(_VOCABULARIES)


def resolve_vocabulary(spec: str | Path | Mapping[str, Any] | LabelVocabulary | None) -> LabelVocabulary:
    """A vocabulary from its name, a YAML/JSON file, a mapping, or itself; None is `ctrate18`."""
    if spec is None:
        return CTRATE18
    if isinstance(spec, LabelVocabulary):
        return spec
    if isinstance(spec, Mapping):
        try:
            return LabelVocabulary.model_validate(dict(spec))
        except ValidationError as exc:
            raise ConfigError(f"invalid label vocabulary:\n{exc}") from exc
    s = str(spec)
    if s in _VOCABULARIES:
        return _VOCABULARIES[s]
    p = Path(s)
    if not p.is_file():
        raise ConfigError(f"unknown label vocabulary {s!r}: neither a registered name "
                          f"({', '.join(_VOCABULARIES)}) nor a file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML/JSON ({exc})") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{p}: a vocabulary file is a mapping {{name: ..., findings: [...]}}")
    try:
        return LabelVocabulary.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"{p}: invalid label vocabulary:\n{exc}") from exc


def read_vocabulary(directory: str | Path) -> LabelVocabulary:
    """The vocabulary saved in a checkpoint directory; `ctrate18` when it has none (older checkpoints)."""
    path = Path(directory) / FILENAME
    if not path.is_file():
        return CTRATE18
    try:
        return LabelVocabulary.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid label vocabulary:\n{exc}") from exc
