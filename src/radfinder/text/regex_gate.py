"""Literal gates for regular expressions: substrings that every match must contain.

A rule pattern such as ``coronar\\w*\\W+(?:\\w+\\W+){0,8}calcif|...`` costs microseconds per clause even when the
clause cannot match; ``"coronar" in clause.lower()`` costs tens of nanoseconds. `literal_gate` reads the parsed
pattern and returns such a set of lower-case substrings (one requirement of the pattern, the most selective), or
None when it cannot promise one (an optional pattern, character classes only). Only literal characters the pattern
must consume count; lookarounds, anchors and classes never add a requirement, so a gate is a necessary condition
for a match.

`Gate.may_match(lower)` applies it to `gate_lower(text)`. Case-insensitive matching in `re` also pairs four
non-ASCII characters with ASCII letters ("ı" and "İ" with "i", "ſ" with "s", "K" (Kelvin) with "k") where
`str.lower` does not, so text holding one of them is never gated: it always goes to the pattern.
"""

from __future__ import annotations

import re

try:  # the parser behind `re.compile`; private, so every use falls back to "no gate" if it changes
    import re._parser as _sre  # Python >= 3.11
except ImportError:  # pragma: no cover
    import sre_parse as _sre  # type: ignore[no-redef]

_REPEATS = tuple(
    getattr(_sre, name) for name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") if hasattr(_sre, name)
)


def _required(items) -> frozenset[str] | None:
    """A set of strings one of which every match of the sequence `items` contains, or None."""
    options: list[frozenset[str]] = []
    run: list[str] = []

    def flush():
        if run:
            options.append(frozenset(["".join(run).lower()]))
            run.clear()

    for op, av in items:
        if op is _sre.LITERAL:
            run.append(chr(av))
            continue
        flush()
        if op is _sre.SUBPATTERN:
            req = _required(av[-1])
        elif getattr(_sre, "ATOMIC_GROUP", None) is not None and op is _sre.ATOMIC_GROUP:
            req = _required(av)
        elif op is _sre.BRANCH:
            branches = [_required(b) for b in av[1]]
            req = None if any(b is None for b in branches) else frozenset().union(*branches)
        elif op in _REPEATS:
            lo, _hi, sub = av
            req = _required(sub) if lo >= 1 else None
        else:  # classes, anchors, lookarounds, back references: no literal requirement
            req = None
        if req:
            options.append(req)
    flush()
    if not options:
        return None
    # The most selective requirement: the longest shortest member, then the fewest members.
    return max(options, key=lambda s: (min(map(len, s)), -len(s)))


def literal_gate(pattern: re.Pattern) -> tuple[str, ...] | None:
    """Lower-case substrings one of which every match of `pattern` contains, or None when there is no such set."""
    try:
        req = _required(_sre.parse(pattern.pattern, pattern.flags))
    except Exception:  # pragma: no cover - a parser change must cost speed, never correctness
        return None
    if not req or any(not x for x in req):
        return None
    # A member holding another member adds nothing ("pericardial " holds "pericard").
    return tuple(sorted(x for x in req if not any(y != x and y in x for y in req)))


# The only characters that `re.IGNORECASE` pairs with an ASCII letter although `str.lower` does not map them onto
# it (found by matching [a-z] case-insensitively against every code point; checked in the tests). Text without them
# can be gated on `text.lower()`, which then also keeps every offset ("İ" is the one character whose lower case is
# two characters long).
UNSAFE = "\u0130\u0131\u017f\u212a"  # İ ı ſ K (Kelvin)


def gate_lower(text: str) -> str | None:
    """`text.lower()` when literal gates are exact on `text`, else None."""
    if text.isascii() or not any(c in text for c in UNSAFE):
        return text.lower()
    return None


class Gate:
    """`Gate(pattern).may_match(lower)`: False only when `pattern` cannot match the text `lower` came from."""

    __slots__ = ("literals",)

    def __init__(self, pattern: re.Pattern | None):
        self.literals = literal_gate(pattern) if pattern is not None else None

    def may_match(self, lower: str | None) -> bool:
        """`lower` is `gate_lower(text)` (None: unknown, always True)."""
        if self.literals is None or lower is None:
            return True
        return any(map(lower.__contains__, self.literals))
