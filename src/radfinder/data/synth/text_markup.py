"""A tiny markup for generated report text so that character spans of references and distractors are known.

Phrase functions write ``⟦R⟧`` where a slice reference may go and ``⟦D:kind|text⟧`` around look-alike numbers
(measurements, times, dates, ratios, scores). ``realise`` removes the markup and returns the clean text plus
the exact spans, so ground truth never has to search the text afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r"⟦R⟧|⟦D:([a-z_]+)\|(.*?)⟧")


@dataclass
class Ref:
    """A slice reference: the clean-text pieces around and of the reference, and what it points to."""

    prefix: str
    core: str
    suffix: str
    series: int
    images: list[int]
    z_mm: list[float]
    lesion_ids: list[int]
    implicit_series: bool = False


@dataclass
class Realised:
    text: str
    refs: list[tuple[int, int, Ref]] = field(default_factory=list)
    distractors: list[tuple[int, int, str]] = field(default_factory=list)


def realise(parts: list[tuple[str, Ref | None]]) -> Realised:
    """Join sentences (each with at most one reference) into one text, recording spans."""
    out = Realised("")
    buf: list[str] = []
    pos = 0
    for sentence, ref in parts:
        last = 0
        for m in _TOKEN.finditer(sentence):
            chunk = sentence[last : m.start()]
            buf.append(chunk)
            pos += len(chunk)
            if m.group(0) == "⟦R⟧":
                if ref is not None:
                    buf.append(ref.prefix)
                    pos += len(ref.prefix)
                    out.refs.append((pos, pos + len(ref.core), ref))
                    buf.append(ref.core + ref.suffix)
                    pos += len(ref.core) + len(ref.suffix)
            else:
                kind, text = m.group(1), m.group(2)
                out.distractors.append((pos, pos + len(text), kind))
                buf.append(text)
                pos += len(text)
            last = m.end()
        chunk = sentence[last:]
        buf.append(chunk)
        pos += len(chunk)
    out.text = "".join(buf)
    return out


def d(kind: str, text: str) -> str:
    """Mark ``text`` as a distractor of ``kind``."""
    return f"⟦D:{kind}|{text}⟧"
