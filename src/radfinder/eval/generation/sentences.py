"""Report sentences as the generator sees them: slice references cut out, the findings each sentence affirms or
negates (the rule labeler's mentions), its anatomy (the rule assigner) and its relative position in the report.

Nothing here looks at images: it only reads report text (the training reports when a bank is fitted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...text.anatomy import RuleAssigner
from ...text.labeler import AFFIRMED, NEGATED, UNCERTAIN, find_mentions
from ...text.ref_snippets import cut_span, snippet
from ...text.references import mine_references
from ...text.sentences import split_sentences

_ITEM_NUMBER = re.compile(r"^\s*\d{1,2}\s*[.)]\s*")
_SPACE = re.compile(r"\s+")
_ITEM_START = re.compile(r"(?:^|(?<=[.;:!?])\s+)(\d{1,2})\s*[.)]\s")


@dataclass(frozen=True)
class TaggedSentence:
    """One sentence of a report, cleaned, with what the labeler and the anatomy rules say about it."""

    text: str  # references cut out, list number removed, ends with a period
    section: str  # "findings" or "impressions"
    affirmed: tuple[str, ...]  # findings stated as present (uncertain mentions count as present, as in the labels)
    negated: tuple[str, ...]  # findings stated as absent (and not affirmed in the same sentence)
    anatomy: str | None
    position: float  # index / (n - 1) within its section (0.5 for a single sentence)

    @property
    def key(self) -> str:
        """Normalised text: the identity of a sentence variant."""
        return _SPACE.sub(" ", self.text.lower()).strip(" .")


def clean_sentence(sentence: str) -> str:
    """The sentence with its slice references cut out (`text.ref_snippets.snippet`), any list number removed and a
    final period; "" when nothing is left."""
    s = _ITEM_NUMBER.sub("", sentence.strip())
    cuts = [cut_span(s, (r.start, r.end), 0) for r in mine_references(s)]
    s = snippet(s, 0, len(s), cuts) if cuts else s.strip()
    s = s.strip()
    if not s:
        return ""
    return s if s[-1] in ".!?" else s + "."


def _items(text: str, section: str) -> list[str]:
    """Sentences of a findings section; numbered items (kept whole) of an impressions section."""
    text = (text or "").strip()
    if section == "impressions":
        # numbered items 1., 2., 3. ... in sequence (a "series 2." inside an item is not item 2)
        starts, want = [], 1
        for m in _ITEM_START.finditer(text):
            if int(m.group(1)) == want:
                starts.append(m.start(1))
                want += 1
        if starts and starts[0] == 0 or len(starts) > 1:
            bounds = starts + [len(text)]
            head = [text[: starts[0]].strip()] if starts[0] > 0 else []
            return [p for p in head + [text[a:b].strip() for a, b in zip(bounds, bounds[1:], strict=False)] if p]
    return split_sentences(text)


def tag_section(
    text: str, section: str, assigner: RuleAssigner | None = None, lang: str = "en"
) -> list[TaggedSentence]:
    """Every non-empty sentence (item) of one report section, tagged."""
    assigner = assigner or RuleAssigner()
    raw = [clean_sentence(s) for s in _items(text, section)]
    raw = [s for s in raw if s]
    n = len(raw)
    out = []
    for i, s in enumerate(raw):
        mentions = find_mentions(s, section)
        aff = tuple(dict.fromkeys(m.finding for m in mentions if m.status in (AFFIRMED, UNCERTAIN)))
        neg = tuple(dict.fromkeys(m.finding for m in mentions if m.status == NEGATED and m.finding not in aff))
        anatomy, _ = assigner.classify_one(s, lang)
        out.append(TaggedSentence(s, section, aff, neg, anatomy, i / (n - 1) if n > 1 else 0.5))
    return out
