"""Which finding a search query names, if any: `match_finding("Cardiomegaly.")` -> ("Cardiomegaly", True).

A query that is, as a whole, one of the vocabulary's finding sentences is answered with the zero-shot scoring of
that finding (positive against negative prompts, calibrated: `Library.search`), not with its raw similarity to the
volumes, which for a one-line sentence mostly measures wording. Recognised (case, spacing and end punctuation
ignored): the finding's name and English synonyms (ontology), its zero-shot template sentences and disease prompts
(prompt bank); their negative forms ("No pleural effusion.", "Pleural effusion is not present.", "no <synonym>")
match with `present` False. Anything else (a location, two findings, free description) is free text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from ..text.ontology import load_ontology
from ..text.prompts import load_prompt_bank

_PUNCT = re.compile(r"[\s.,;:!?]+$")


def normalize_query(text: str) -> str:
    t = " ".join(str(text).replace("_", " ").split()).lower()
    return _PUNCT.sub("", t).strip()


@dataclass(frozen=True)
class FindingQuery:
    finding: str
    present: bool  # False: the query asks for studies WITHOUT the finding ("No pleural effusion.")


@lru_cache(maxsize=8)
def _table(findings: tuple[str, ...]) -> dict[str, FindingQuery]:
    bank = load_prompt_bank()
    onto = load_ontology()
    table: dict[str, FindingQuery] = {}

    def put(text: str, q: FindingQuery) -> None:
        key = normalize_query(text)
        if key and key not in table:  # first writer wins: a phrase two findings share stays with the first
            table[key] = q

    for f in findings:
        pos, neg = FindingQuery(f, True), FindingQuery(f, False)
        names = [f]
        if f in onto.concepts:
            names += list(onto.synonyms(f, "en"))
        for name in names:
            put(name, pos)
            put(f"no {name}", neg)
        if f in bank.findings:
            for p, n in bank.zero_shot_pairs(f):
                put(p, pos)
                put(n, neg)
            dp, dn = bank.disease_prompts(f)
            for p in dp:
                put(p, pos)
            for n in dn:
                put(n, neg)
    return table


def match_finding(text: str, findings: Sequence[str]) -> FindingQuery | None:
    """The finding (and polarity) that `text` names as a whole, or None for free text."""
    return _table(tuple(findings)).get(normalize_query(text))
