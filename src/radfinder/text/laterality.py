"""Left <-> right in report text, for augmentations that mirror a volume left-right.

A mirrored volume paired with its original text teaches the model that a lesion on the image's left is described
as "right": `swap_laterality` rewrites the side words instead, in English and German, keeping the case of each
word. Swapped: EN "left"/"right" (also "leftward(s)", "left-sided", "rightsided"); DE "links"/"rechts" at the start
of a word ("linksseitig", "Rechtsherz...") and the adjective forms "link-/recht-" + e, en, er, es, em. Not
swapped: abbreviations ("li.", "re.", "L", "R"), which are too ambiguous to rewrite safely; a text that relies on
them should not be trained with left-right flips.
"""

from __future__ import annotations

import re

__all__ = ["swap_laterality"]

_EN = re.compile(r"\b(left|right)(?=(?:wards?|-?sided)?\b)", re.IGNORECASE)
_DE_PREFIX = re.compile(r"\b(links|rechts)", re.IGNORECASE)
_DE_ADJ = re.compile(r"\b(link|recht)(?=(?:e|en|er|es|em)\b)", re.IGNORECASE)
_PAIRS = {"left": "right", "right": "left", "links": "rechts", "rechts": "links", "link": "recht", "recht": "link"}


def _same_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[0].isupper():
        return word[0].upper() + word[1:]
    return word


def _swap(m: re.Match) -> str:
    w = m.group(1)
    return _same_case(_PAIRS[w.lower()], w)


def swap_laterality(text: str) -> str:
    """`text` with left and right exchanged (EN and DE; see the module doc)."""
    text = _EN.sub(_swap, text)
    text = _DE_PREFIX.sub(_swap, text)
    return _DE_ADJ.sub(_swap, text)
