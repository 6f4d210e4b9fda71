"""Prompt bank: disease prompts (3 positive / 3 negative per finding) and the zero-shot mean7 template pairs.

The built-in bank ships as package data (resources/prompts/ctrate18.yaml). A user YAML with the same layout is
merged over it: findings it names replace the built-in prompts of that finding (or add a new finding), and
`zero_shot_templates`, if given, replaces the seven pairs. The merged bank is validated: every CT-RATE finding
present, exactly three positive and three negative non-empty prompts each, seven template pairs with `{a}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .findings import CTRATE_FINDINGS

N_PROMPTS = 3
N_TEMPLATES = 7


@dataclass(frozen=True)
class PromptBank:
    prompts: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
    templates: tuple[tuple[str, str], ...]
    source: str = "built-in"

    @property
    def findings(self) -> tuple[str, ...]:
        return tuple(self.prompts)

    def disease_prompts(self, finding: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(positive[3], negative[3]) for `finding`, short to detailed."""
        try:
            return self.prompts[finding]
        except KeyError:
            raise ConfigError(f"no prompts for finding {finding!r} in {self.source}") from None

    def zero_shot_pairs(self, finding: str) -> list[tuple[str, str]]:
        """The seven (positive, negative) template sentences with {a} filled in with the finding name."""
        return [(p.format(a=finding), n.format(a=finding)) for p, n in self.templates]


def _builtin() -> dict[str, Any]:
    text = resources.files("radfinder").joinpath("resources/prompts/ctrate18.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"prompt bank not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def _validate(data: dict[str, Any], where: str) -> PromptBank:
    dp = data.get("disease_prompts")
    if not isinstance(dp, dict):
        raise ConfigError(f"{where}: 'disease_prompts' must be a mapping of finding -> {{positive, negative}}")
    missing = [f for f in CTRATE_FINDINGS if f not in dp]
    if missing:
        raise ConfigError(f"{where}: missing prompts for CT-RATE finding(s) {missing}")
    prompts: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for finding, entry in dp.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: {finding!r} must map to {{positive: [...], negative: [...]}}")
        sides = []
        for side in ("positive", "negative"):
            items = entry.get(side)
            if not isinstance(items, list) or len(items) != N_PROMPTS:
                raise ConfigError(f"{where}: {finding!r}.{side} must be a list of exactly {N_PROMPTS} prompts")
            if any(not isinstance(s, str) or not s.strip() for s in items):
                raise ConfigError(f"{where}: {finding!r}.{side} has an empty or non-text prompt")
            sides.append(tuple(s.strip() for s in items))
        prompts[str(finding)] = (sides[0], sides[1])
    tpl = data.get("zero_shot_templates")
    if not isinstance(tpl, list) or len(tpl) != N_TEMPLATES:
        raise ConfigError(f"{where}: 'zero_shot_templates' must list exactly {N_TEMPLATES} [positive, negative] pairs")
    pairs = []
    for pair in tpl:
        if not (
            isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(s, str) and "{a}" in s for s in pair)
        ):
            raise ConfigError(f"{where}: template pair {pair!r} must be two strings that both contain {{a}}")
        pairs.append((pair[0], pair[1]))
    return PromptBank(prompts, tuple(pairs), where)


def load_prompt_bank(path: str | Path | None = None) -> PromptBank:
    """The built-in bank, with the YAML at `path` (if any) merged over it (see module doc)."""
    data = _builtin()
    where = "built-in prompt bank"
    if path is not None:
        user = _load(Path(path))
        unknown = set(user) - {"version", "disease_prompts", "zero_shot_templates"}
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}")
        if user.get("disease_prompts") is not None:
            if not isinstance(user["disease_prompts"], dict):
                raise ConfigError(f"{path}: 'disease_prompts' must be a mapping")
            data["disease_prompts"] = {**data["disease_prompts"], **user["disease_prompts"]}
        if user.get("zero_shot_templates") is not None:
            data["zero_shot_templates"] = user["zero_shot_templates"]
        where = f"{path} (merged over the built-in bank)"
    return _validate(data, where)
