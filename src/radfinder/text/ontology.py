"""The finding ontology (`resources/ontology.yaml`) and knowledge similarity between studies.

The ontology is a DAG of concepts: root -> regions/anatomies -> categories -> findings (a finding may have several
parents, e.g. "Pleural effusion" is a "fluid collection" and lies in the "pleura"). A study's concept set is the
ancestor closure of its positive findings (the root excluded), so two studies with different but related findings
share their common ancestors.

Knowledge similarity of two studies (weighted Jaccard of their ancestor-closed concept sets):

    K(A, B) = sum_{c in A & B} w(c) / sum_{c in A | B} w(c),     w(c) = depth(c)

where depth is the longest path from the root (anatomies 1, categories 2, findings 3 for the built-in file), so a
shared specific concept counts more than a shared general one. K = 1 for identical sets, 0 for sets that share no
concept; two studies without any positive finding get `empty` (default 1: both describe no abnormality), and a
study without findings against one with findings gets 0. The labels must come from the reports (e.g. the rule
labeler), never from ground truth.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..config import read_resource_or_file
from ..errors import ConfigError

KINDS = ("root", "region", "anatomy", "category", "finding")
FVLM_ANATOMIES = ("lung", "heart", "esophagus", "aorta")


@dataclass(frozen=True)
class Concept:
    name: str
    kind: str
    parents: tuple[str, ...]
    en: str = ""
    de: str = ""
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    radlex: str | None = None
    snomed: str | None = None


class Ontology:
    """Concepts by name, with ancestor closure, depth weights and synonym lookup."""

    def __init__(self, concepts: dict[str, Concept], source: str = "built-in"):
        self.concepts = concepts
        self.source = source
        self._check()

    def _check(self) -> None:
        for c in self.concepts.values():
            if c.kind not in KINDS:
                raise ConfigError(f"{self.source}: concept {c.name!r} has unknown kind {c.kind!r} ({', '.join(KINDS)})")
            for p in c.parents:
                if p not in self.concepts:
                    raise ConfigError(f"{self.source}: concept {c.name!r} has unknown parent {p!r}")
            if c.kind == "root" and c.parents:
                raise ConfigError(f"{self.source}: root {c.name!r} cannot have parents")
            if c.kind != "root" and not c.parents:
                raise ConfigError(f"{self.source}: concept {c.name!r} needs a parent")
        state: dict[str, int] = {}

        def visit(n: str, path: list[str]) -> None:
            if state.get(n) == 2:
                return
            if state.get(n) == 1:
                raise ConfigError(f"{self.source}: cycle in the ontology: {' -> '.join([*path, n])}")
            state[n] = 1
            for p in self.concepts[n].parents:
                visit(p, [*path, n])
            state[n] = 2

        for n in self.concepts:
            visit(n, [])

    @property
    def findings(self) -> list[str]:
        return [n for n, c in self.concepts.items() if c.kind == "finding"]

    @cached_property
    def _depth(self) -> dict[str, int]:
        memo: dict[str, int] = {}

        def depth(n: str) -> int:
            if n not in memo:
                ps = self.concepts[n].parents
                memo[n] = 0 if not ps else 1 + max(depth(p) for p in ps)
            return memo[n]

        for n in self.concepts:
            depth(n)
        return memo

    def depth(self, name: str) -> int:
        return self._depth[name]

    def weight(self, name: str) -> float:
        """w(c) = depth(c): the root weighs 0, anatomies 1, categories 2, findings 3 (built-in file)."""
        return float(self._depth[name])

    def ancestors(self, name: str, include_self: bool = True) -> frozenset[str]:
        """Every concept above `name` (and `name` itself), the root excluded."""
        if name not in self.concepts:
            raise ConfigError(f"{self.source}: unknown concept {name!r}")
        out: set[str] = set()
        stack = [name] if include_self else list(self.concepts[name].parents)
        while stack:
            n = stack.pop()
            if n in out:
                continue
            out.add(n)
            stack.extend(self.concepts[n].parents)
        return frozenset(n for n in out if self.concepts[n].kind != "root")

    def closure(self, findings: Iterable[str]) -> frozenset[str]:
        """The ancestor-closed concept set of several findings."""
        out: set[str] = set()
        for f in findings:
            out |= self.ancestors(f)
        return frozenset(out)

    def anatomies_of(self, finding: str) -> list[str]:
        """The anatomy concepts among a finding's ancestors, most specific first."""
        anat = [n for n in self.ancestors(finding) if self.concepts[n].kind == "anatomy"]
        return sorted(anat, key=lambda n: (-self._depth[n], n))

    def fvlm_anatomy(self, finding: str, choices: Sequence[str] = FVLM_ANATOMIES) -> str | None:
        """The finding's ancestor among fVLM's anatomies (None if it has none)."""
        hits = [a for a in self.anatomies_of(finding) if a in choices]
        return hits[0] if hits else None

    def synonyms(self, finding: str, lang: str = "en") -> tuple[str, ...]:
        return self.concepts[finding].synonyms.get(lang, ())

    def hierarchy(self, finding: str) -> dict[str, list[str]]:
        """A finding's categories and anatomies (the concepts above it, by kind)."""
        anc = self.ancestors(finding, include_self=False)
        cats = sorted((n for n in anc if self.concepts[n].kind == "category"), key=lambda n: (-self._depth[n], n))
        return {"categories": cats, "anatomies": self.anatomies_of(finding)}


def _as_tuple(v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    return tuple(str(x) for x in v)


def load_ontology(path: str | Path | None = None) -> Ontology:
    """The built-in ontology (None) or a user YAML with the same layout."""
    import yaml

    text, where = read_resource_or_file(path, "resources/ontology.yaml", "ontology")
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("concepts"), dict):
        raise ConfigError(f"{where}: an ontology needs a 'concepts' mapping")
    concepts = {}
    for name, spec in data["concepts"].items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: concept {name!r} must be a mapping")
        syn = spec.get("synonyms") or {}
        if not isinstance(syn, dict):
            raise ConfigError(f"{where}: synonyms of {name!r} must map a language to a list")
        for key in ("radlex", "snomed"):
            if spec.get(key) is not None and not isinstance(spec.get(key), str):
                raise ConfigError(f"{where}: {key} of {name!r} must be empty or a code string")
        concepts[str(name)] = Concept(
            name=str(name),
            kind=str(spec.get("kind", "")),
            parents=_as_tuple(spec.get("parents")),
            en=str(spec.get("en") or ""),
            de=str(spec.get("de") or ""),
            synonyms={str(k): _as_tuple(v) for k, v in syn.items()},
            radlex=spec.get("radlex"),
            snomed=spec.get("snomed"),
        )
    return Ontology(concepts, where)


def weighted_jaccard(a: frozenset[str], b: frozenset[str], ontology: Ontology, empty: float = 1.0) -> float:
    """sum of w over a & b divided by the sum over a | b (see module doc); `empty` when both sets are empty."""
    if not a and not b:
        return float(empty)
    union = sum(ontology.weight(c) for c in a | b)
    if union <= 0:
        return 0.0
    return sum(ontology.weight(c) for c in a & b) / union


def knowledge_similarity(
    labels: Any, names: Sequence[str], ontology: Ontology | None = None, empty: float = 1.0
) -> np.ndarray:
    """(N, N) weighted-Jaccard similarity of the studies' ancestor-closed concept sets from (N, F) report labels
    (1 = positive; 0 and -1 = not positive) for the findings `names`."""
    onto = ontology or load_ontology()
    y = np.asarray(labels)
    if y.ndim != 2 or y.shape[1] != len(names):
        raise ConfigError(f"labels must be (N, {len(names)}), got {y.shape}")
    unknown = [n for n in names if n not in onto.concepts]
    if unknown:
        raise ConfigError(f"findings not in the ontology ({onto.source}): {unknown}")
    sets = [onto.closure(n for n, v in zip(names, row, strict=True) if v == 1) for row in y]
    # Studies with the same label row share a set: compute each distinct pair once.
    keys = {s: i for i, s in enumerate(dict.fromkeys(sets))}
    uniq = list(keys)
    k = np.array([[weighted_jaccard(p, q, onto, empty) for q in uniq] for p in uniq], dtype=np.float64)
    idx = np.array([keys[s] for s in sets], dtype=np.int64)
    return k[np.ix_(idx, idx)]
