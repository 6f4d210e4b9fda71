"""Split a free-text report into findings and impression, in English or German.

Headers are recognised at the start of a line or after a sentence end ("FINDINGS:", "Impression(s):",
"CONCLUSION", "Befund:", "Beurteilung:" ...). Reports with no impression header but a trailing numbered list
("1. ... 2. ...") after prose are split at the list, which is how conclusions are written in e.g. Merlin.
Text before any header counts as findings, because most reports without headers are findings-only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEADER_WORDS = {
    "findings": r"findings?|befunde?|befundbeschreibung|description",
    "impressions": r"impressions?|conclusions?|summary|assessment|opinion|beurteilung|zusammenfassung|fazit"
    r"|epikrise|diagnose",
    "history": r"clinical\s+(?:information|history|indication)|history|indications?|clinical\s+question"
    r"|klinische\s+angaben|anamnese|fragestellung|indikation|rechtfertigende\s+indikation",
    "technique": r"technique|technik|untersuchungstechnik|protocol|protokoll",
    "comparison": r"comparisons?|vergleich|voraufnahmen?|voruntersuchungen?",
}
_HEADER = re.compile(
    r"(?:^|(?<=\n)|(?<=[.!?]\s)|(?<=[.!?]))[ \t>*#]*(?P<word>"
    + "|".join(f"(?P<{k}>{v})" for k, v in _HEADER_WORDS.items())
    + r")[ \t]*(?::|\n|-\s|$)",
    re.IGNORECASE,
)
# A numbered list of at least two items at line starts: "1. ...\n2. ..." or "1) ... 2) ...".
_NUMBERED = re.compile(r"(?:^|\n)[ \t]*1[.)][ \t]+\S[^\n]*(?:\n(?:(?![ \t]*2[.)]).*\n)*?)[ \t]*2[.)][ \t]+\S")

_DE_WORDS = re.compile(r"\b(?:der|die|das|und|nicht|kein(?:e|en)?|mit|ist|im|links|rechts|beidseits|unauffällig)\b")
_EN_WORDS = re.compile(r"\b(?:the|and|of|is|are|no|with|was|were|right|left|bilateral|normal)\b")


@dataclass(frozen=True)
class Sections:
    """Findings and impression text of one report; `other` holds history/technique/comparison text if present."""

    findings: str
    impressions: str
    other: dict[str, str] = field(default_factory=dict)


def detect_language(text: str) -> str:
    """'de' or 'en' by counting frequent function words (reports are long enough for this to be reliable)."""
    low = text.lower()
    de = len(_DE_WORDS.findall(low))
    en = len(_EN_WORDS.findall(low))
    return "de" if de > en else "en"


def split_sections(text: str) -> Sections:
    """Split `text` at its section headers (see module doc)."""
    parts: dict[str, list[str]] = {}
    heads = list(_HEADER.finditer(text))
    if heads:
        pre = text[: heads[0].start()].strip()
        if pre:
            parts.setdefault("findings", []).append(pre)
        for i, m in enumerate(heads):
            kind = next(k for k in _HEADER_WORDS if m.group(k))
            stop = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            body = text[m.end() : stop].strip()
            if body:
                parts.setdefault(kind, []).append(body)
    else:
        parts["findings"] = [text.strip()] if text.strip() else []
    findings = "\n".join(parts.pop("findings", []))
    impressions = "\n".join(parts.pop("impressions", []))
    if not impressions and findings:
        findings, impressions = _split_numbered_conclusion(findings)
    return Sections(findings, impressions, {k: "\n".join(v) for k, v in parts.items()})


def _split_numbered_conclusion(text: str) -> tuple[str, str]:
    """Findings prose followed by a numbered list -> (prose, list). A report that is only a list stays findings."""
    last = None
    for m in _NUMBERED.finditer(text):
        last = m
    if last is None:
        return text, ""
    cut = last.start() + (1 if text[last.start()] == "\n" else 0)
    head = text[:cut].strip()
    if not head:
        return text, ""
    return head, text[cut:].strip()
